"""How the report draws trial states and objective values: colours, dashes, colour scales."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import TrialState


@dataclass(frozen=True)
class StateStyle:
    label: str
    color: str
    dash: str


STATE_STYLES: dict[TrialState, StateStyle] = {
    TrialState.COMPLETE: StateStyle("complete", "#4c78a8", "solid"),
    TrialState.PRUNED: StateStyle("pruned", "#e45756", "dash"),
    TrialState.FAIL: StateStyle("failed", "#9d9d9d", "dot"),
    TrialState.RUNNING: StateStyle("running", "#54a24b", "solid"),
}
BEST_STYLE = StateStyle("best", "#1b1b1b", "solid")

# Objective values: darker = better (reversed when lower is better), as in Optuna's plots.
OBJECTIVE_SCALE = "Blues"
TRIAL_NUMBER_SCALE = "Blues"  # slice dots: darker = later trial


def objective_scale_reversed(direction: str) -> bool:
    """Whether the objective colour scale runs backwards, so that better is always darker."""
    return direction == "minimize"
