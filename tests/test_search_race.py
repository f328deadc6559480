"""bench/race_summary.py: the search race's anytime curves, resume and summary table."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

from tuner.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "race_summary.py"


@pytest.fixture(scope="module")
def race():
    spec = importlib.util.spec_from_file_location("race_summary", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ZEN4 = {"cpu": "AMD EPYC", "isa": "AVX-512 BF16"}
MACHINE = "AMD EPYC, AVX-512 BF16"


def run(contender, seed, budget_s, points, error=None, machine=ZEN4, **trials):
    counts = {"started": 0, "pruned": 0, "finished": len(points), "failed": 0, **trials}
    best = max(points, key=lambda p: p[1]) if points else None
    return {
        "kind": "run",
        "contender": contender,
        "seed": seed,
        "budget_s": budget_s,
        "machine": machine,
        "points": points,
        "trials": counts,
        "best": {"value": best[1], "params": {"lr": seed}} if best else None,
        "error": error,
        "wall_s": budget_s + 30.0 * (seed + 1),
        "killed": seed == 1,
    }


def test_best_so_far_keeps_only_improvements_in_time_order(race):
    points = [[300.0, 0.88], [100.0, 0.85], [200.0, 0.84], [400.0, 0.88], [500.0, 0.9]]
    assert race.best_so_far(points) == [(100.0, 0.85), (300.0, 0.88), (500.0, 0.9)]


def test_best_at_counts_trials_finished_by_then(race):
    points = [[100.0, 0.85], [300.0, 0.88], [700.0, 0.91]]
    assert race.best_at(points, 50) is None  # nothing had finished yet
    assert race.best_at(points, 300) == 0.88  # a trial finishing at the checkpoint counts
    assert race.best_at(points, 600) == 0.88
    assert race.best_at(points, 1800) == 0.91


def test_time_to_threshold_within_the_budget(race):
    points = [[100.0, 0.885], [250.0, 0.902], [700.0, 0.912]]
    assert race.time_to(points, 0.89, 600) == 250.0
    assert race.time_to(points, 0.90, 600) == 250.0
    assert race.time_to(points, 0.91, 600) is None  # reached only after the budget
    assert race.time_to(points, 0.91, 1800) == 700.0
    assert race.time_to([], 0.89, 600) is None


def test_resume_skips_runs_done_and_reruns_failed_ones(race, tmp_path: Path):
    results = tmp_path / "race.jsonl"
    race.append_record(results, run("tuner", 0, 600, [[50.0, 0.8]]))
    race.append_record(results, run("ray-asha", 0, 600, [], error="ray-asha: no ray"))
    race.append_record(results, {"kind": "retrain", "contender": "tuner", "seed": 0,
                                 "budget_s": 600, "machine": ZEN4,
                                 "test_accuracy": 0.9})  # fmt: skip
    order = [("tuner", 0, 600), ("ray-asha", 0, 600), ("tuner", 1, 600)]
    records = race.read_records(results)
    assert race.pending(order, records, MACHINE) == [("ray-asha", 0, 600), ("tuner", 1, 600)]
    assert race.done_keys(records, kind="retrain") == {("tuner", 0, 600, MACHINE)}
    # On another kind of CPU nothing is done yet: its runs are a race of their own.
    assert race.pending(order, records, "AMD EPYC, AVX2") == order

    # The failed run, run again successfully, is the one the summary uses.
    race.append_record(results, run("ray-asha", 0, 600, [[80.0, 0.7]]))
    records = race.read_records(results)
    assert race.pending(order, records, MACHINE) == [("tuner", 1, 600)]
    assert [r["error"] for r in race.runs(records)] == [None, None]
    assert race.read_records(tmp_path / "missing.jsonl") == []


def test_summary_table_medians_spread_thresholds_and_test_accuracy(race):
    records = [
        run("tuner", 0, 600, [[200.0, 0.89], [500.0, 0.905]], started=9, pruned=4),
        run("tuner", 1, 600, [[250.0, 0.88], [560.0, 0.895]], started=7, pruned=2),
        run("tuner", 0, 1800, [[200.0, 0.89], [1500.0, 0.915]], started=20, pruned=10),
        run("optuna-recipe", 0, 600, [[700.0, 0.91]], started=1),  # after the budget
        run("ray-asha", 0, 600, [], error="ray-asha: error: ray-asha needs ray[tune]"),
        {"kind": "retrain", "contender": "tuner", "seed": 0, "budget_s": 600,
         "machine": ZEN4, "test_accuracy": 0.9123},
    ]  # fmt: skip
    rows = {(row["contender"], row["budget"]): row for row in race.summary_rows(records)}

    short = rows[("tuner", "10 min")]
    assert short["seeds"] == "0, 1"
    assert short["val@5"] == "0.8850 (0.8800-0.8900)"
    assert short["val@10"] == "0.9000 (0.8950-0.9050)"
    assert short["val@30"] == ""  # a 10-minute budget says nothing about 30 minutes
    assert short["val@end"] == short["val@10"]
    assert short["to 89%"] == "6.3 min (2/2)"  # median of 200 s and 560 s
    assert short["to 90%"] == "8.3 min (1/2)"
    assert short["to 91%"] == "-"
    assert (short["started"], short["pruned"]) == ("8", "3")
    assert short["ended"] == "+45 s, 1 stopped"  # seed 0 ended 30 s late, seed 1 was stopped
    assert short["test acc"] == "0.9123 (seed 0)"

    assert rows[("tuner", "30 min")]["val@30"] == "0.9150"
    assert rows[("tuner", "30 min")]["to 91%"] == "25.0 min (1/1)"
    assert rows[("optuna-recipe", "10 min")]["val@10"] == "-"  # none finished in time
    assert rows[("ray-asha", "10 min")]["notes"] == "ray-asha: error: ray-asha needs ray[tune]"

    table = race.markdown_table(list(rows.values()))
    lines = table.splitlines()
    assert lines[0].startswith(
        "| machine | contender | budget | seeds | val@5 | val@10 | val@30 | val@end |"
    )
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_best_run_is_the_seed_with_the_highest_validation_accuracy(race):
    records = [
        run("tuner", 0, 600, [[100.0, 0.89]]),
        run("tuner", 1, 600, [[100.0, 0.91]]),
        run("tuner", 2, 600, [], error="boom"),
    ]
    assert race.best_run(records, "tuner", 600, MACHINE)["seed"] == 1
    assert race.best_run(records, "tuner", 1800, MACHINE) is None
    assert race.best_run(records, "tuner", 600, "AMD EPYC, AVX2") is None


def test_runs_on_different_cpus_are_separate_rows(race):
    avx2 = {"cpu": "AMD EPYC", "isa": "AVX2"}
    records = [
        run("tuner", 0, 600, [[100.0, 0.93]]),
        run("tuner", 0, 600, [[150.0, 0.91]], machine=avx2),  # same key, other machine
        run("tuner", 1, 600, [[160.0, 0.92]], machine=avx2),
    ]
    rows = {row["machine"]: row for row in race.summary_rows(records)}
    assert rows[MACHINE]["seeds"] == "0" and rows[MACHINE]["val@10"] == "0.9300"
    assert rows["AMD EPYC, AVX2"]["seeds"] == "0, 1"
    assert rows["AMD EPYC, AVX2"]["val@10"] == "0.9150 (0.9100-0.9200)"
    assert race.machine_kind({"contender": "x"}) == "unknown CPU, unknown extensions"


def test_vector_extensions_name_the_widest(race):
    assert race.vector_extensions({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512 BF16"
    assert race.vector_extensions({"avx2", "avx512f"}) == "AVX-512"
    assert race.vector_extensions({"avx", "avx2"}) == "AVX2"
    assert race.vector_extensions({"sse4_2"}) == "no AVX2"


def test_epoch_rows_count_every_epoch_end_within_the_budget(race):
    with_epochs = run("tuner", 0, 600, [[300.0, 0.93]])
    with_epochs["epoch_points"] = [[40.0, 0.87], [60.0, 0.905], [80.0, 0.899], [290.0, 0.93]]
    other_seed = run("tuner", 1, 600, [[310.0, 0.92]])
    other_seed["epoch_points"] = [[50.0, 0.88], [120.0, 0.895], [700.0, 0.95]]
    old = run("optuna-recipe", 0, 600, [[300.0, 0.92]])  # from before epoch points were kept
    rows = race.epoch_rows([with_epochs, other_seed, old])
    assert len(rows) == 1
    row = rows[0]
    assert row["seeds"] == "0, 1"
    assert row["first epoch"] == "0.8 min"  # median of 40 s and 50 s
    assert row["to 89%"] == "1.5 min (2/2)"  # 60 s and 120 s
    assert row["to 90%"] == "1.0 min (1/2)"  # seed 1's 0.95 came after its budget
    assert row["to 91%"] == "4.8 min (1/2)"
    assert row["best epoch value"] == "0.9125 (0.8950-0.9300)"


def test_goal_verdicts_compare_the_medians_the_issue_names(race):
    records = [
        run("tuner", 0, 600, [[150.0, 0.905], [400.0, 0.928]]),
        run("tuner", 1, 600, [[170.0, 0.902], [420.0, 0.925]]),
        run("optuna-recipe", 0, 1800, [[600.0, 0.915], [1500.0, 0.921]]),
        run("optuna-recipe", 1, 1800, [[700.0, 0.91]]),
        run("ray-asha", 0, 1800, [[1200.0, 0.93]]),
        run("tuner", 0, 600, [[60.0, 0.95]], machine={"cpu": "AMD EPYC", "isa": "AVX2"}),
    ]
    for record in records:
        record["epoch_points"] = [[t / 4, v] for t, v in record["points"]]
    lines = race.goal_lines(records, MACHINE)
    assert lines[0].endswith("0.9265 against 0.9155: met")
    # Finished trials: 160 s against 650 s is 4.1x; epoch ends the same, a quarter of each.
    assert lines[1] == (
        "goal 2 (time to 90%, finished trials): tuner 2.7 min, Optuna's recipe 10.8 min "
        "(30 min runs): 4.1x, met"
    )
    assert lines[2].endswith("4.1x, met")
    assert lines[3] == "ahead of Ray Tune ASHA at 10 min: 0.9265 against nothing finished: met"
    assert lines[4] == "ahead of Ray Tune ASHA at 30 min: not measured"  # no 30-minute tuner
    slow_recipe = [dict(r, points=[[t * 0.5, v] for t, v in r["points"]]) for r in records[2:4]]
    lines = race.goal_lines(records[:2] + slow_recipe, MACHINE)
    assert lines[1].endswith("2.0x, NOT met")
    # Another machine's runs are never compared with these.
    assert race.goal_lines(records, "AMD EPYC, AVX2")[0].endswith("not measured")
    # A tuner variant (--tuner-label) is judged on its own runs, not on plain tuner's.
    variant = dict(records[0], contender="tuner-first-result", points=[[100.0, 0.93]])
    variant["epoch_points"] = [[100.0, 0.93]]
    lines = race.goal_lines([*records, variant], MACHINE, "tuner-first-result")
    assert lines[0].endswith("0.9300 against 0.9155: met")
    assert lines[1].startswith("goal 2 (time to 90%, finished trials): tuner 1.7 min,")


def test_curve_figure_has_one_line_per_run_held_to_the_budget(race):
    records = [run("tuner", 0, 600, [[100.0, 0.85], [300.0, 0.88]]), run("random", 0, 600, [])]
    records[0]["epoch_points"] = [[40.0, 0.8], [90.0, 0.86], [300.0, 0.88]]
    figure = race.curve_figure(records, MACHINE)
    lines = {trace.name: trace for trace in figure.data}
    tuner = lines["tuner seed 0, 10 min"]
    assert list(tuner.x) == pytest.approx([100 / 60, 300 / 60, 10.0])
    assert list(tuner.y) == [0.85, 0.88, 0.88]
    epochs = lines["tuner seed 0, 10 min, any epoch"]
    assert list(epochs.y) == [0.8, 0.86, 0.88, 0.88]
    assert list(lines["random seed 0, 10 min"].x) == []
    assert "random seed 0, 10 min, any epoch" not in lines  # none recorded
    assert MACHINE in figure.layout.title.text


def test_seeded_study_copy_is_the_study_with_the_run_seed(race, tmp_path: Path):
    original = (ROOT / "studies" / "fashion-mnist.toml").read_text(encoding="utf-8")
    copy = tmp_path / "study.toml"
    copy.write_text(race.seeded_study_text(original, 3, train_limit=6000), encoding="utf-8")
    before, after = tomllib.loads(original), tomllib.loads(copy.read_text(encoding="utf-8"))
    assert after["sampler"]["seed"] == after["training"]["seed"] == 3
    assert after["dataset"]["train_subset"] == 6000
    for table in ("sampler", "training", "dataset"):
        for key in ("seed", "train_subset"):
            before[table].pop(key, None)
            after[table].pop(key, None)
    assert after == before
    spec = load_spec(copy)  # tuner reads it as a valid study file
    assert (spec.sampler.seed, spec.training.seed, spec.dataset.train_subset) == (3, 3, 6000)


def test_seeded_study_copy_adds_missing_seed_keys_and_tables(race):
    text = 'name = "x"\n[sampler]\nname = "tpe"\n\n[space]\nlr = 0.1\n'
    parsed = tomllib.loads(race.seeded_study_text(text, 5))
    assert parsed["sampler"] == {"name": "tpe", "seed": 5}
    assert parsed["training"] == {"seed": 5}
    assert parsed["space"] == {"lr": 0.1}
    assert "dataset" not in parsed  # no train limit asked
