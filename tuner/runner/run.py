"""`tuner run`: trials in this process, or in several worker processes sharing the study."""

from __future__ import annotations

import dataclasses
import time

from rich.console import Console

from tuner.runner.settings import RunSettings
from tuner.runner.summary import RunSummary


def run_study(settings: RunSettings, console: Console) -> RunSummary:
    """Run the study as `settings` say, showing progress on `console`; say how it ended.

    Raises TunerError for what stops a run before its first trial (a bad study file, no
    dataset, an unusable storage) and KeyboardInterrupt for a stop signal that early.
    """
    if settings.started_at is None:
        settings = dataclasses.replace(settings, started_at=time.time())
    if settings.parallel:
        from tuner.runner.parallel import run_parallel

        return run_parallel(settings, console)
    from tuner.runner.host import registered, registry_folder
    from tuner.runner.worker import run_worker

    with registered(registry_folder(settings.cache_dir)):  # other runs here count this one
        return run_worker(settings, console)
