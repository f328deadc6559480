"""`tuner.trials`: a study's trials as a pandas DataFrame, one row a trial."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner import attrs
from tuner.api.study import StudyLike, stored_study_name
from tuner.errors import TunerError

if TYPE_CHECKING:
    import pandas
    from optuna.trial import FrozenTrial

# Left out of the table: the full configuration is what `tuner.best` gives (the sampled values
# are the params_ columns already).
LEFT_OUT = (attrs.CONFIG,)
# Columns after number, state, the value(s) and duration; the rest follow in storage order.
FIRST = (attrs.EPOCHS_RUN, attrs.BEST_EPOCH, attrs.PRECISION, attrs.PARAM_COUNT)
MEASURE_PREFIX = "measure_"  # a trial's measures ({"params": ...}) become measure_params, ...


def trials(
    study: StudyLike, storage: str | None = None, *, studies_dir: Path | str | None = None
) -> pandas.DataFrame:
    """The trials of a stored study, one row each: Optuna's `trials_dataframe` columns
    (number, state, value_METRIC or values_METRIC for several objectives, datetimes, duration,
    params_*) and tuner's attributes
    flattened: epochs_run, best_epoch, precision, param_count, measure_* (params, flops,
    latency_ms, memory_mb, where measured), stop_reason, history (a list of epochs), the rest
    as stored.

    `study` is a study file, a study name or a dict (its `name` is looked up in `storage`).
    Needs pandas (`pip install 'tuner[pandas]'`); raises TunerError without it.
    """
    try:
        import pandas
    except ImportError:
        raise TunerError(
            "pandas is not installed; tuner.trials needs it: pip install 'tuner[pandas]'"
        ) from None
    from tuner.storage import load_stored_study, resolve_storage_url

    stored = load_stored_study(stored_study_name(study, studies_dir), resolve_storage_url(storage))
    frame = stored.trials_dataframe(
        attrs=(
            "number",
            "value",
            "datetime_start",
            "datetime_complete",
            "duration",
            "params",
            "state",
        ),
        multi_index=False,
    )
    if frame.empty:
        return frame
    ours = pandas.DataFrame([_tuner_columns(t) for t in stored.get_trials(deepcopy=False)])
    frame = frame.merge(ours, on="number", how="left")
    return frame[_ordered(list(frame.columns))]


def _tuner_columns(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's user attributes as flat columns (dicts spread out, prefixed by their name)."""
    row: dict[str, Any] = {"number": trial.number}
    for name, value in trial.user_attrs.items():
        if name in LEFT_OUT:
            continue
        if isinstance(value, dict):
            prefix = MEASURE_PREFIX if name == attrs.MEASURES else f"{name}_"
            row.update({f"{prefix}{key}": inner for key, inner in value.items()})
        else:
            row[name] = value
    return row


def _ordered(columns: list[str]) -> list[str]:
    """number, state, value(s), duration, params_*, FIRST, measure_*, then the rest."""
    values = [c for c in columns if c == "value" or c.startswith(("value_", "values_"))]
    params = [c for c in columns if c.startswith("params_")]
    measures = [c for c in columns if c.startswith(MEASURE_PREFIX)]
    head = [*("number", "state"), *values, "duration", *params, *FIRST, *measures]
    head = [c for c in head if c in columns]
    return head + [c for c in columns if c not in head]
