"""`tuner run --enqueue-from S --top K` and `--from S`: seed the study before its first trial."""

from __future__ import annotations

from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.runner.settings import RunSettings


@dataclass(frozen=True)
class WarmStart:
    """Which stored study to start from, and how."""

    source: str  # the other study's name
    storage: str | None  # its storage URL; None: the run's own
    top: int | None = None  # queue its best `top` configurations (--enqueue-from)
    copy: bool = False  # copy its finished trials in (--from)


def apply_warm_start(settings: RunSettings, warm: WarmStart) -> str:
    """Create (or open) the run's study and seed it from `warm.source`; a line saying what."""
    from tuner.search.study import open_study
    from tuner.search.warmstart import copy_trials, enqueue_best
    from tuner.storage import load_stored_study, open_storage

    spec = settings.load_spec()
    source = load_stored_study(warm.source, warm.storage or settings.storage)
    if source.study_name == spec.name and warm.storage is None:
        raise TunerError(f"--from/--enqueue-from {warm.source!r} is the study being run")
    # The warm start's configurations come first, not the shipped portfolio's.
    study = open_study(spec, open_storage(settings.storage), force=settings.force, portfolio=False)
    if warm.copy:
        added = copy_trials(study, spec, source)
        return f"warm start: {added} finished trials of {warm.source} added"
    queued = enqueue_best(study, spec, source, warm.top or 1)
    return f"warm start: the {queued} best configurations of {warm.source} queued first"
