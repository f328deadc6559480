"""The search race's pure parts: anytime curves, resume keys, the summary table and figure.

Pure functions (and the seeded copy of the study file tuner runs) over the race's records: one
JSON object per contender run, one line each in the results file, so they can be tested on
small synthetic records. A run record holds `contender`, `seed`, `budget_s`, `machine` (CPU
name and vector extensions: runs on different machines are never compared), `points`
([seconds since the run started, validation accuracy] of every trial that finished with a
value), `epoch_points` (the same at the end of every epoch of every trial, pruned ones too;
absent in records from before session 5), `trials` (counts by state), `best` (value, params,
best_epoch), `error` (one line, or null) and `race` (what was raced: the study's dataset,
e.g. "digits" or "imagefolder:photos"; records from before it are Fashion-MNIST's). A retrain
record has `kind: "retrain"`, the same key and `test_accuracy`. A `baseline` run trained the
starting configurations of the tuner run with its seed and budget alone (bench/race_baseline.py):
the tuner run's search gain is its best minus the baseline's best.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

Record = dict[str, Any]
Point = tuple[float, float]
RunKey = tuple[str, int, int, str, str]

LEGACY_RACE = "fashion-mnist"  # records from before `race` was recorded all raced Fashion-MNIST
BASELINE = "baseline"


def baseline_label(tuner_label: str = "tuner") -> str:
    """The name the baseline of a tuner variant's runs is recorded under (--tuner-label)."""
    return BASELINE if tuner_label == "tuner" else f"{BASELINE}-{tuner_label}"


# The checkpoints (5, 10 and 30 minutes) and accuracy thresholds.
CHECKPOINTS_S = (300, 600, 1800)
THRESHOLDS = (0.89, 0.90, 0.91)
TRIAL_STATES = ("started", "pruned", "finished", "failed")


def vector_extensions(flags: set[str]) -> str:
    """The widest x86 vector extensions in /proc/cpuinfo's flags, as RESULTS.md names them."""
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "no AVX2"


def machine_kind(record: Record) -> str:
    """'AMD EPYC, AVX2': the CPU a run (or a retrain, which carries its run's) ran on."""
    machine = record.get("machine") or {}
    return f"{machine.get('cpu', 'unknown CPU')}, {machine.get('isa', 'unknown extensions')}"


def race_of(record: Record) -> str:
    """What a run raced on: its `race` (the study's dataset), Fashion-MNIST for old records."""
    return str(record.get("race") or LEGACY_RACE)


def run_key(record: Record) -> RunKey:
    """What identifies a run: a rerun of the same key is skipped. The machine and the race are
    part of it: the same contender, seed and budget on another kind of CPU, or on another
    dataset, is another run."""
    return (
        record["contender"],
        int(record["seed"]),
        int(record["budget_s"]),
        machine_kind(record),
        race_of(record),
    )


def read_records(path: Path) -> list[Record]:
    """Every record of a results file (none when it does not exist yet)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def append_record(path: Path, record: Record) -> None:
    """Append one record as one line, so an interrupted race keeps every finished run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record, sort_keys=True) + "\n")


def runs(records: Iterable[Record]) -> list[Record]:
    """One run record per key: the last one without an error, else the last one (a run that
    failed, e.g. before ray was installed, and was run again later)."""
    chosen: dict[RunKey, Record] = {}
    for record in records:
        if record.get("kind", "run") != "run":
            continue
        key = run_key(record)
        if key not in chosen or chosen[key].get("error") or not record.get("error"):
            chosen[key] = record
    return list(chosen.values())


def done_keys(records: Iterable[Record], kind: str = "run") -> set[RunKey]:
    """Keys the race skips on resume: runs that ended without an error, or retrains done."""
    return {run_key(r) for r in records if r.get("kind", "run") == kind and not r.get("error")}


def pending(
    order: Sequence[tuple[str, int, int]],
    records: Iterable[Record],
    kind: str,
    race: str = LEGACY_RACE,
) -> list[tuple[str, int, int]]:
    """The planned (contender, seed, budget) runs of `race` still to do on a machine of
    `kind`: resuming skips every one already done there."""
    done = done_keys(records)
    return [key for key in order if (*key, kind, race) not in done]


def best_so_far(points: Iterable[Sequence[float]]) -> list[Point]:
    """The anytime curve: (seconds, best accuracy so far) at each time the best improved."""
    curve: list[Point] = []
    for seconds, value in sorted((float(t), float(v)) for t, v in points):
        if not curve or value > curve[-1][1]:
            curve.append((seconds, value))
    return curve


def best_at(points: Iterable[Sequence[float]], seconds: float) -> float | None:
    """The best accuracy reached by `seconds` (None: no trial had finished by then)."""
    values = [float(v) for t, v in points if float(t) <= seconds]
    return max(values) if values else None


def time_to(points: Iterable[Sequence[float]], threshold: float, budget_s: float) -> float | None:
    """Seconds until the best accuracy first reached `threshold` within the budget, else None."""
    for seconds, value in best_so_far(points):
        if seconds > budget_s:
            return None
        if value >= threshold:
            return seconds
    return None


def _spread(values: Sequence[float], digits: int) -> str:
    """'median (min-max)' of the seeds, or the one value."""
    middle = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def summary_rows(records: Sequence[Record]) -> list[dict[str, str]]:
    """One row per (contender, budget) over its seeds, as strings ready for the table.

    Accuracies at a checkpoint count only trials finished by then, and only for budgets that
    reach the checkpoint. Times to a threshold are the median over seeds that reached it, with
    how many did. "ended" is the median time the run's process ended past its budget, and how
    many runs the race had to stop. Runs that failed (error set) show their error, no numbers.
    """
    retrained = {run_key(r): r for r in records if r.get("kind") == "retrain"}
    rows = []
    for (kind, race, contender, budget_s), group in _groups(records):
        ok = [r for r in group if not r.get("error")]
        row = _row_head(kind, race, contender, budget_s, group)
        for checkpoint in CHECKPOINTS_S:
            if checkpoint > budget_s:
                row[f"val@{checkpoint // 60}"] = ""
                continue
            values = [best_at(r["points"], checkpoint) for r in ok]
            reached = [v for v in values if v is not None]
            row[f"val@{checkpoint // 60}"] = _spread(reached, 4) if reached else "-"
        row["val@end"] = _best_cell(ok, "points", budget_s)
        row.update(_threshold_cells(ok, "points", budget_s))
        for state in TRIAL_STATES:
            counts = [r["trials"].get(state, 0) for r in ok]
            row[state] = f"{statistics.median(counts):g}" if counts else "-"
        overruns = [r["wall_s"] - budget_s for r in ok if "wall_s" in r]
        killed = sum(bool(r.get("killed")) for r in ok)
        row["ended"] = (
            f"{statistics.median(overruns):+.0f} s" + (f", {killed} stopped" if killed else "")
            if overruns
            else "-"
        )
        tests = [
            f"{retrained[run_key(r)]['test_accuracy']:.4f} (seed {r['seed']})"
            for r in group
            if run_key(r) in retrained
        ]
        row["test acc"] = ", ".join(tests) or "-"
        errors = sorted({r["error"] for r in group if r.get("error")})
        row["notes"] = "; ".join(errors)
        rows.append(row)
    return rows


def _row_head(
    kind: str, race: str, contender: str, budget_s: int, runs: Sequence[Record]
) -> dict[str, str]:
    """The cells that say which runs a row summarizes."""
    return {
        "machine": kind,
        "dataset": race,
        "contender": contender,
        "budget": f"{budget_s / 60:g} min",
        "seeds": ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"])),
    }


def _best_cell(runs: Sequence[Record], key: str, budget_s: int) -> str:
    """Median (spread) over the runs of the best of their `key` points within the budget."""
    bests = [v for r in runs if (v := best_at(r[key], budget_s)) is not None]
    return _spread(bests, 4) if bests else "-"


def _threshold_cells(runs: Sequence[Record], key: str, budget_s: int) -> dict[str, str]:
    """'to 89%' ... cells: the median time over the runs whose `key` points reached each
    threshold within the budget, and how many did."""
    cells = {}
    for threshold in THRESHOLDS:
        times = [t for r in runs if (t := time_to(r[key], threshold, budget_s)) is not None]
        cells[f"to {threshold:.0%}"] = (
            f"{_minutes(statistics.median(times))} ({len(times)}/{len(runs)})" if times else "-"
        )
    return cells


def _groups(records: Sequence[Record]) -> list[tuple[tuple[str, str, str, int], list[Record]]]:
    """Runs grouped by (machine, race, contender, budget), in that order."""
    groups: dict[tuple[str, str, str, int], list[Record]] = {}
    for record in runs(records):
        key = (machine_kind(record), race_of(record), record["contender"], int(record["budget_s"]))
        groups.setdefault(key, []).append(record)
    return sorted(groups.items())


def epoch_rows(records: Sequence[Record]) -> list[dict[str, str]]:
    """Time to each threshold counting every epoch-end evaluation (any trial, pruned ones too),
    as MLPerf times training to a target quality; one row per (machine, contender, budget).

    Stricter than nothing, looser than `summary_rows`: a model that reached the accuracy at an
    epoch's end existed then, but only a finished trial's is what the run hands the user.
    Records from before epoch points were kept are left out.
    """
    rows = []
    for (kind, race, contender, budget_s), group in _groups(records):
        ok = [r for r in group if not r.get("error") and "epoch_points" in r]
        if not ok:
            continue
        row = _row_head(kind, race, contender, budget_s, ok)
        firsts = [min(t for t, _ in r["epoch_points"]) for r in ok if r["epoch_points"]]
        row["first epoch"] = _minutes(statistics.median(firsts)) if firsts else "-"
        row.update(_threshold_cells(ok, "epoch_points", budget_s))
        row["best epoch value"] = _best_cell(ok, "epoch_points", budget_s)
        rows.append(row)
    return rows


# Issue 13's goals: tuner at 10 minutes against Optuna's recipe at 30, time to 90% at most a
# third of the recipe's, and ahead of Ray Tune ASHA at every budget.
GOAL_SPEED_UP = 3.0
GOAL_THRESHOLD = 0.90


def goal_lines(
    records: Sequence[Record], kind: str, tuner_label: str = "tuner", race: str = LEGACY_RACE
) -> list[str]:
    """Issue 13's verdicts for the runs of `race` on a `kind` machine, one line each, with the
    medians over seeds they compare (a seed that never reached 90% counts as never); tuner's
    runs are those recorded as `tuner_label` (a variant's, with --tuner-label)."""
    ok = [
        r
        for r in runs(records)
        if machine_kind(r) == kind and race_of(r) == race and not r.get("error")
    ]

    def of(contender: str, budget_s: int) -> list[Record]:
        return [r for r in ok if r["contender"] == contender and int(r["budget_s"]) == budget_s]

    def median_best(group: Sequence[Record], seconds: int) -> float | None:
        bests = [best_at(r["points"], seconds) or 0.0 for r in group]
        return statistics.median(bests) if group else None

    def median_time(group: Sequence[Record], key: str) -> float:
        times = [time_to(r.get(key, ()), GOAL_THRESHOLD, r["budget_s"]) for r in group]
        return statistics.median(float("inf") if t is None else t for t in times)

    tuner, recipe = of(tuner_label, 600), of("optuna-recipe", 1800) or of("optuna-recipe", 600)
    lines = []
    if not tuner or not of("optuna-recipe", 1800):
        lines.append("goal 1 (tuner at 10 min >= Optuna's recipe at 30 min): not measured")
    else:
        ours, theirs = median_best(tuner, 600), median_best(of("optuna-recipe", 1800), 1800)
        verdict = "met" if ours >= theirs else "NOT met"
        lines.append(
            f"goal 1 (tuner at 10 min >= Optuna's recipe at 30 min): {ours:.4f} against "
            f"{theirs:.4f}: {verdict}"
        )
    for key, what in (("points", "finished trials"), ("epoch_points", "every epoch's end")):
        if not tuner or not recipe or any(key not in r for r in tuner + recipe):
            lines.append(f"goal 2 (time to 90%, {what}): not measured")
            continue
        ours, theirs = median_time(tuner, key), median_time(recipe, key)
        ratio = theirs / ours if ours > 0 else float("inf")
        verdict = "met" if ratio >= GOAL_SPEED_UP else "NOT met"
        lines.append(
            f"goal 2 (time to 90%, {what}): tuner {_minutes_or_never(ours)}, Optuna's recipe "
            f"{_minutes_or_never(theirs)} ({recipe[0]['budget_s'] // 60} min runs): "
            f"{ratio:.1f}x, {verdict}"
        )
    for budget_s in (600, 1800):
        ray = of("ray-asha", 1800) or of("ray-asha", budget_s)
        ours_group = of(tuner_label, budget_s)
        if not ray or not ours_group:
            lines.append(f"ahead of Ray Tune ASHA at {budget_s // 60} min: not measured")
            continue
        ours, theirs = median_best(ours_group, budget_s), median_best(ray, budget_s)
        verdict = "met" if ours > theirs else "NOT met"
        shown = f"{theirs:.4f}" if theirs else "nothing finished"
        lines.append(
            f"ahead of Ray Tune ASHA at {budget_s // 60} min: {ours:.4f} against {shown}: {verdict}"
        )
    return lines


def _minutes_or_never(seconds: float) -> str:
    return "never" if seconds == float("inf") else _minutes(seconds)


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    """The rows as a Markdown table for RESULTS.md (columns with no value anywhere dropped)."""
    if not rows:
        return "(no runs yet)\n"
    columns = [c for c in rows[0] if any(row[c] for row in rows)]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def best_run(
    records: Sequence[Record], contender: str, budget_s: int, kind: str, race: str = LEGACY_RACE
) -> Record | None:
    """The seed whose run of `race` on a `kind` machine reached the highest validation
    accuracy: the one to retrain."""
    candidates = [
        r
        for r in runs(records)
        if r["contender"] == contender
        and int(r["budget_s"]) == budget_s
        and machine_kind(r) == kind
        and race_of(r) == race
        and not r.get("error")
        and r.get("best")
    ]
    return max(candidates, key=lambda r: r["best"]["value"], default=None)


def _held_curve(points: Iterable[Sequence[float]], budget_s: int) -> list[Point]:
    """The anytime curve within the budget, its best held to the budget's end."""
    curve = [p for p in best_so_far(points) if p[0] <= budget_s]
    if curve:
        curve.append((float(budget_s), curve[-1][1]))
    return curve


def curve_figure(records: Sequence[Record], machine: str = "") -> go.Figure:
    """Best validation accuracy so far against minutes, one step line per run (finished
    trials), and a thin line of the same colour for its epoch-level curve where recorded."""
    figure = go.Figure()
    colors: dict[str, str] = {}
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    for record in sorted(runs(records), key=run_key):
        contender, seed, budget_s, _, _ = run_key(record)
        color = colors.setdefault(contender, palette[len(colors) % len(palette)])
        dash = "solid" if seed == 0 else "dot"
        name = f"{contender} seed {seed}, {budget_s / 60:g} min"
        curves = [(name, record["points"], 2.5, 1.0)]
        if "epoch_points" in record:
            curves.append((f"{name}, any epoch", record["epoch_points"], 1.0, 0.5))
        for label, points, width, opacity in curves:
            curve = _held_curve(points, budget_s)
            figure.add_trace(
                go.Scatter(
                    x=[t / 60 for t, _ in curve],
                    y=[v for _, v in curve],
                    mode="lines+markers" if width > 1 else "lines",
                    line={"shape": "hv", "color": color, "dash": dash, "width": width},
                    opacity=opacity,
                    name=label,
                    legendgroup=contender,
                )
            )
    for threshold in THRESHOLDS:
        figure.add_hline(y=threshold, line={"width": 1, "color": "#999", "dash": "dash"})
    races = sorted({race_of(r) for r in runs(records)}) or [LEGACY_RACE]
    title = f"Search race on {', '.join(races)}: best validation accuracy so far"
    figure.update_layout(
        title=f"{title} ({machine})" if machine else title,
        xaxis_title="wall-clock minutes since the run started",
        yaxis_title="best validation accuracy (thick: finished trials; thin: any epoch's end)",
        template="plotly_white",
        width=1100,
        height=650,
    )
    return figure


def seeded_study_text(
    text: str, seed: int, train_limit: int = 0, dataset_name: str | None = None
) -> str:
    """The study file with `[sampler].seed` and `[training].seed` set to `seed` (and
    `[dataset].train_subset` to `train_limit`, `[dataset].name` to `dataset_name` when given:
    an image folder's absolute path, as the copy lives elsewhere); every other line as it was."""
    wanted: dict[str, dict[str, Any]] = {"sampler": {"seed": seed}, "training": {"seed": seed}}
    if train_limit:
        wanted.setdefault("dataset", {})["train_subset"] = train_limit
    if dataset_name is not None:
        wanted.setdefault("dataset", {})["name"] = json.dumps(dataset_name)
    out: list[str] = []
    section = ""
    missing: dict[str, int] = {}

    def close_section() -> None:
        # Keys the section lacked go after its last non-blank line.
        at = len(out)
        while at > 0 and not out[at - 1].strip():
            at -= 1
        for key, value in wanted.get(section, {}).items():
            if key in missing:
                out.insert(at, f"{key} = {value}")
                at += 1
        wanted.pop(section, None)

    for line in text.splitlines():
        header = re.match(r"\s*\[([^\]]+)\]\s*$", line)
        if header:
            close_section()
            section = header.group(1).strip()
            missing = dict.fromkeys(wanted.get(section, {}), 1)
        else:
            key = re.match(r"\s*([A-Za-z_]+)\s*=", line)
            if key and key.group(1) in missing:
                line = f"{key.group(1)} = {wanted[section][key.group(1)]}"
                del missing[key.group(1)]
        out.append(line)
    close_section()
    for name, values in wanted.items():  # sections the file did not have at all
        out += ["", f"[{name}]", *(f"{key} = {value}" for key, value in values.items())]
    return "\n".join(out) + "\n"


# Issue 24's per-dataset comparison: tuner at 10 minutes against Optuna's recipe at 30 and Ray
# Tune ASHA at 10 and 30, the first finished trial (goal 3), and the search gain (goal 2).
SHORT_S, LONG_S = 600, 1800


def search_gains(
    records: Sequence[Record], tuner_label: str = "tuner"
) -> dict[tuple[str, str, int], list[tuple[int, float]]]:
    """(machine, race, budget) -> [(seed, gain)]: each tuner run's best within its budget less
    the best of its starting configurations trained alone (the `baseline` run of the same
    seed, budget, machine and race). Runs without a baseline, or with an error, have none."""
    ok = [r for r in runs(records) if not r.get("error")]
    baselines = {
        (machine_kind(r), race_of(r), int(r["budget_s"]), int(r["seed"])): r
        for r in ok
        if r["contender"] == baseline_label(tuner_label) and r.get("best")
    }
    gains: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    for run in ok:
        if run["contender"] != tuner_label:
            continue
        key = (machine_kind(run), race_of(run), int(run["budget_s"]))
        baseline = baselines.get((*key, int(run["seed"])))
        best = best_at(run["points"], run["budget_s"])
        if baseline is None or best is None:
            continue
        gains.setdefault(key, []).append((int(run["seed"]), best - baseline["best"]["value"]))
    return {key: sorted(values) for key, values in gains.items()}


def first_finished(run: Record) -> Point | None:
    """(seconds, value) of the run's first finished trial within its budget."""
    inside = sorted((float(t), float(v)) for t, v in run["points"] if float(t) <= run["budget_s"])
    return inside[0] if inside else None


def _cohort(
    ok: Sequence[Record], kind: str, race: str, contender: str, budget_s: int
) -> list[Record]:
    """The runs of one contender and budget on one race and kind of machine."""
    return [
        r
        for r in ok
        if (machine_kind(r), race_of(r), r["contender"], int(r["budget_s"]))
        == (kind, race, contender, budget_s)
    ]


def _bests(runs: Sequence[Record], budget_s: int) -> list[float]:
    """Each run's best within `budget_s`, for runs that finished a trial by then."""
    return [v for r in runs if (v := best_at(r["points"], budget_s)) is not None]


def dataset_rows(records: Sequence[Record], tuner_label: str = "tuner") -> list[dict[str, str]]:
    """One row per (machine, race): medians over seeds (min-max) of tuner at 10 minutes,
    Optuna's recipe at 30 (and 10), Ray Tune ASHA at 10 and 30, tuner's first finished trial
    in a 10-minute run, and the search gain of tuner's runs of the longest budget that has a
    baseline (30 minutes in the issue's race) with the spread (max - min) of tuner's best over
    the seeds of that budget."""
    ok = [r for r in runs(records) if not r.get("error")]
    gains = search_gains(records, tuner_label)
    rows = []
    for kind, race in sorted({(machine_kind(r), race_of(r)) for r in ok}):
        row = {"machine": kind, "dataset": race}
        for column, contender, budget_s in (
            ("tuner@10", tuner_label, SHORT_S),
            ("recipe@30", "optuna-recipe", LONG_S),
            ("recipe@10", "optuna-recipe", SHORT_S),
            ("ray@10", "ray-asha", SHORT_S),
            ("ray@30", "ray-asha", LONG_S),
        ):
            bests = _bests(_cohort(ok, kind, race, contender, budget_s), budget_s)
            row[column] = _spread(bests, 4) if bests else "-"
        short = _cohort(ok, kind, race, tuner_label, SHORT_S)
        firsts = [f for r in short if (f := first_finished(r)) is not None]
        row["tuner first trial (time, value)"] = (
            f"{_minutes(statistics.median(t for t, _ in firsts))}, "
            f"{_spread([v for _, v in firsts], 4)}"
            if firsts
            else "-"
        )
        # Goal 3 asks for A finished trial within 3 minutes, not the first one: the best by then.
        at_three = [best_at(r["points"], FIRST_RESULT_S) or 0.0 for r in short]
        row["tuner best at 3 min"] = _spread(at_three, 4) if at_three else "-"
        row["search gain"], row["tuner spread"] = "-", "-"
        # The issue judges 30-minute runs; a race of other budgets shows its longest.
        gain_budget = max((b for k, r, b in gains if (k, r) == (kind, race)), default=None)
        gain = spread = None
        if gain_budget is not None:
            values = [g for _, g in gains[(kind, race, gain_budget)]]
            gain = statistics.median(values)
            row["search gain"] = (
                f"{_spread(values, 4)} @{gain_budget / 60:g} min, {len(values)} seeds"
            )
            bests = _bests(_cohort(ok, kind, race, tuner_label, gain_budget), gain_budget)
            if len(bests) > 1:
                spread = max(bests) - min(bests)
                row["tuner spread"] = f"{spread:.4f}"
        row["goals met"] = _goal_verdicts(ok, kind, race, tuner_label, at_three, gain, spread)
        rows.append(row)
    return rows


FIRST_RESULT_S = 180  # goal 3: a finished trial within 3 minutes of a 10-minute budget


def _goal_verdicts(
    ok: Sequence[Record],
    kind: str,
    race: str,
    tuner_label: str,
    at_three: Sequence[float],
    gain: float | None,
    spread: float | None,
) -> str:
    """Issue 24's goals on medians over seeds, as "1 yes, 2 no, 3 -" ("-": not measured).

    1: tuner at 10 min >= the recipe at 30 and above Ray ASHA at 10 and 30; 2: the search
    gain above the spread over seeds; 3: the best trial tuner finished within 3 minutes
    (`at_three`, one per 10-minute run; 0 where none had), at least what the recipe reached in
    10 (a recipe that finished nothing reached nothing).
    """

    def median_best(contender: str, budget_s: int) -> float | None:
        group = _cohort(ok, kind, race, contender, budget_s)
        if not group:
            return None
        return statistics.median(best_at(r["points"], budget_s) or 0.0 for r in group)

    def verdict(met: bool | None) -> str:
        return "-" if met is None else ("yes" if met else "no")

    ours = median_best(tuner_label, SHORT_S)
    recipe = median_best("optuna-recipe", LONG_S)
    ray = [median_best("ray-asha", SHORT_S), median_best("ray-asha", LONG_S)]
    goal1 = None
    if ours is not None and recipe is not None and None not in ray:
        goal1 = ours >= recipe and all(ours > r for r in ray if r is not None)
    goal2 = None if gain is None or spread is None else gain > spread
    recipe_short = median_best("optuna-recipe", SHORT_S)
    goal3 = None
    if at_three and recipe_short is not None:
        goal3 = statistics.median(at_three) >= recipe_short
    return f"1 {verdict(goal1)}, 2 {verdict(goal2)}, 3 {verdict(goal3)}"
