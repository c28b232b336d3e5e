"""The data-efficiency benchmark end to end at its smoke scale: cells, MLflow, report, resume."""

import json
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT
from .helpers import load_benchmark

pytestmark = pytest.mark.slow


def test_data_efficiency_smoke_scale(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    bench = load_benchmark("data_efficiency")
    out, report = tmp_path / "out", tmp_path / "docs" / "results.md"
    report.parent.mkdir()
    report.write_text("# Results\n\nkept text\n\n" + bench_markers(bench) + "\nafter\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--scale", "smoke", "--out", str(out), "--report", str(report), "--tracking-uri", uri]
    assert bench.main(args) == 0

    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    meta = json.loads((out / "results.meta.json").read_text())
    assert [x["cells_run"] for x in meta["sittings"]] == [len(results)]
    scale = bench.SCALES["smoke"]
    planned = bench.plan(scale, scale.lr_grid[0])
    assert {r["key"] for r in results} == {c.key for c in planned} | {
        bench.tuning_cell(scale, lr).key for lr in scale.lr_grid
    }
    by = {(r["cell"]["method"], r["cell"]["variant"]): r for r in results}
    n_pool = by[("full", "main")]["n_train"]
    for method in bench.METHODS:  # every selector trained on exactly its budget
        assert by[(method, "main")]["n_train"] == int(0.2 * n_pool)
        # what it trained on, per family, and the CPU time it took
        assert sum(by[(method, "main")]["composition"].values()) == int(0.2 * n_pool)
        assert by[(method, "main")]["cpu_seconds"] > 0
    # The paper's form splits the budget evenly over sources (every family has enough rows).
    paper = by[("s2l_paper", "main")]["composition"]
    assert len(paper) == 12 and max(paper.values()) - min(paper.values()) <= 1, paper
    assert by[("full_same_steps", "main")]["train_steps"] < by[("full", "main")]["train_steps"]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(bench.EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == len(results)
    assert all("mean_nll" in r.data.metrics for r in runs)

    text = report.read_text()
    assert text.startswith("# Results\n\nkept text") and text.rstrip().endswith("after")
    assert "old generated text" not in text
    assert "### Main table: in-domain accuracy" in text and "| s2l |" in text
    # Every test cell keeps each item's result, so the report can bootstrap over items.
    test_cells = [r for r in results if r["cell"]["judge"] == "test"]
    for r in test_cells:
        assert any(k.startswith("in_domain/") for k in r["correct"]), r["correct"].keys()
        assert all(v and set(v) <= {"0", "1"} for v in r["correct"].values())
    assert "Paired bootstrap over test items and seeds" in text
    assert "h of CPU time** in total" in text and "1 sitting(s)" in text
    assert "| method at 20% |" in text and "| s2l_paper |" in text  # composition table
    assert "### In-domain exact match per family" in text
    assert "| s2l_paper | " in text.split("Does the premise hold?")[1]  # the diagnostic's row
    assert set(meta["premise"]) == {"s2l", "s2l_paper"}
    assert meta["premise"]["s2l"]["within_pairs"] > 0
    assert meta["premise"]["s2l"]["same_source_cosine"] is not None
    assert 0 <= meta["floor"]["in_domain"] <= 1 and meta["floor"]["answer"]
    assert f"Floor: answering `{meta['floor']['answer']}`" in text
    assert "Targets exactly on the floor: " in text
    assert (report.parent / "results_accuracy_vs_budget.png").stat().st_size > 10_000

    # A second invocation finds every cell done: nothing retrained, same report.
    before = (out / "results.jsonl").read_text()
    assert bench.main(args) == 0
    assert (out / "results.jsonl").read_text() == before
    meta = json.loads((out / "results.meta.json").read_text())
    assert [x["cells_run"] for x in meta["sittings"]] == [len(results), 0]
    assert "2 sitting(s)" in report.read_text()
    # --report-only rebuilds the report (and a missing diagnostic) without training anything.
    for cached in (out / "proxy").glob("*.premise.json"):
        cached.unlink()
    report.write_text(f"# Results\n\n{bench_markers(bench)}\n")
    assert bench.main([*args, "--report-only"]) == 0
    assert (out / "results.jsonl").read_text() == before
    assert "| s2l_paper | " in report.read_text().split("Does the premise hold?")[1]


def test_scale_picks_families_and_settings() -> None:
    from dataclasses import replace

    bench = load_benchmark("data_efficiency")
    scale = replace(
        bench.SCALES["smoke"],
        families=("gcd", "chain_sum"),
        family_settings=(("chain_sum", "max_terms", 2),),
    )
    fams = bench.scale_families(scale)
    assert [f.name for f in fams] == ["gcd", "chain_sum"] and {f.weight for f in fams} == {1.0}
    assert fams[1].kwargs["max_terms"] == 2 and fams[1].kwargs["min_digits"] == 1
    spec = bench.mixture_spec(scale, "embedded")
    assert spec.embedded.families == fams
    assert bench.scale_families(bench.SCALES["smoke"]) == bench.TRAIN_FAMILIES


def bench_markers(bench) -> str:
    report = load_benchmark("results_report")
    return f"{report.START}\nold generated text\n{report.END}"


def test_bootstrap_table_from_per_item_results() -> None:
    report = load_benchmark("results_report")

    def cell(method, seed, bits):
        return {
            "cell": {"mixture": "embedded", "variant": "main", "judge": "test",
                     "method": method, "budget": 0.1, "seed": seed},
            "correct": {"in_domain/a": bits, "out_of_domain/z": "0" * len(bits)},
        }  # fmt: skip

    results = [
        cell("s2l", 0, "1" * 60 + "0" * 40),
        cell("random", 0, "1" * 40 + "0" * 60),
        cell("s2l", 1, "1" * 55 + "0" * 45),
        cell("random", 1, "1" * 45 + "0" * 55),
    ]
    table = report.bootstrap_table(results, [0.1])
    row = table.strip().splitlines()[-1]
    assert row.startswith("| s2l | 10% | +15.00 | [") and row.endswith("| 100 x 2 |")
    low = float(row.split("[")[1].split(",")[0])
    assert 0 < low < 15  # the interval excludes zero
    # The paper's form gets its own row, paired with the same random cells.
    paper = [cell("s2l_paper", s, "1" * 45 + "0" * 55) for s in (0, 1)]
    rows = report.bootstrap_table(results + paper, [0.1]).strip().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| s2l", "| s2l_paper"]
    assert rows[1].startswith("| s2l_paper | 10% | +2.50 | [")
    # Against full data: the subset's cells paired with the full run of the same seed.
    full = [{**cell("full", s, "1" * 70 + "0" * 30), "cell": {**cell("full", s, "")["cell"],
             "budget": 1.0}} for s in (0, 1)]  # fmt: skip
    table = report.bootstrap_table(results + full, [0.1], methods=("random",), against="full")
    assert "| - full (points) |" in table
    assert table.strip().splitlines()[-1].startswith("| random | 10% | -27.50 | [")
    assert "no cell with per-item" in report.bootstrap_table(
        [{**r, "correct": {}} for r in results], [0.1]
    )


def test_benchmark_workers_die_with_the_benchmark(tmp_path: Path) -> None:
    """SIGKILL the benchmark's process: its pool workers stop too (no orphan keeps training)."""
    import os
    import signal
    import subprocess

    import psutil

    script = tmp_path / "pool.py"
    script.write_text(
        "import concurrent.futures as cf, multiprocessing as mp, os, sys, time\n"
        f"sys.path.insert(0, {str(PROJECT_ROOT / 'benchmarks')!r})\n"
        "from data_efficiency import _init_worker\n"
        "if __name__ == '__main__':\n"
        "    pool = cf.ProcessPoolExecutor(1, mp.get_context('spawn'), _init_worker, (1,))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = psutil.Process(int(parent.stdout.readline()))
        assert worker.is_running()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        gone, _ = psutil.wait_procs([worker], timeout=30)
        assert gone, "the pool worker outlived the benchmark process"
    finally:
        parent.kill()
        if worker is not None and worker.is_running():
            worker.kill()  # only when the test failed: leave no orphan behind


def test_seed_reading_of_the_committed_study_matches_the_page() -> None:
    """The per-seed numbers docs/results_learns.md quotes come from the committed results as
    seed_stats.py reads them (paired by seed, t over seeds, sign-flip, Holm)."""
    stats = load_benchmark("seed_stats")
    rows = stats.comparisons(stats.main_cells(stats.DEFAULT), "in_domain")
    got = {(r["budget"], r["method"]): r for r in rows}
    lp10, lp20 = got[(0.1, "learning_percentage")], got[(0.2, "learning_percentage")]
    assert lp10["seeds"] == lp20["seeds"] == 5
    assert lp10["low"] < 0 < lp10["high"] and lp20["low"] < 0 < lp20["high"]
    assert lp20["p_sign_flip"] == 2 / 32  # as low as five seeds go
    page = (PROJECT_ROOT / "docs" / "results_learns.md").read_text()
    for r in (lp10, lp20):
        quoted = f"[{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]".replace("+-", "-")
        assert quoted in page, quoted
    assert all(r["holm_p"] >= r["p_sign_flip"] for r in rows)


def test_gpu_check_runs_end_to_end_at_the_smoke_scale(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh, as a lent GPU machine would run it, at the tiny scale on CPU:
    the throughput figures, the main job, the random target beside it, the summary page."""
    import os
    import subprocess

    out = tmp_path / "gpu_check"
    env = {**os.environ, "S2L_GPU_CHECK_SMOKE": "1", "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", str(PROJECT_ROOT / "benchmarks" / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "official tok/s" in summary and "| in_domain_accuracy |" in summary
    sel, rnd = (json.loads((out / f"{n}.json").read_text()) for n in ("selected", "random"))
    assert sel["success"] and rnd["success"] and rnd["training_set"] == "random"
    assert sel["subset"] == rnd["subset"]  # the same subset; only the target's rows differ
