"""The selection study end to end at its smoke scale, and its committed page read back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from .conftest import PROJECT_ROOT
from .helpers import load_benchmark


@pytest.mark.slow
def test_selection_study_smoke_every_phase_resumes_and_reports(tmp_path: Path) -> None:
    study = load_benchmark("selection_study")
    out, report = tmp_path / "out", tmp_path / "docs" / "results.md"
    report.parent.mkdir()
    markers = f"{load_benchmark('study_report').START}\n{load_benchmark('study_report').END}"
    report.write_text(f"# Results\n\nsummary by hand\n\n{markers}\ntail\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--scale", "smoke", "--out", str(out), "--report", str(report), "--tracking-uri", uri]
    assert study.main(args) == 0

    scale = study.SCALES["smoke"]
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    meta = json.loads((out / "results.meta.json").read_text())
    choice = {p: (c["lr"], c["epochs"]) for p, c in meta["chosen"].items()}
    planned = [c for ph in ("main", "full", "extra") for c in study.phase_cells(scale, ph, choice)]
    tuning = [c for p, _ in scale.pools for c in study.tuning_cells(scale, p)]
    assert {r["key"] for r in results} == {c.key for c in planned + tuning}
    assert len(tuning) == 2 * len(scale.lr_grid) * len(scale.epoch_grid)
    # Chosen on validation: the lowest validation NLL of each pool's grid.
    for pool, (lr, epochs) in choice.items():
        grid = [
            r
            for r in results
            if r["cell"]["judge"] == "validation" and r["cell"]["mixture"] == pool
        ]
        best = min(grid, key=lambda r: r["metrics"]["in_domain_mean_nll"])["cell"]
        assert (best["lr"], best["epochs"]) == (lr, epochs)

    # The data: one draw, split at random; no pool row is a test or validation row, and the
    # imbalanced pool has its shares.
    test = pl.read_parquet(out / "data" / "test.parquet")
    for name, shares in scale.pools:
        pool = pl.read_parquet(out / "data" / f"pool_{name}.parquet")
        assert meta["data"]["pools"][name]["rows_shared_with_test_or_validation"] == 0
        assert not set(pool["example_id"]) & set(test["example_id"])
        counts = dict(pool.group_by("source").len().iter_rows())
        assert [counts[f] for f in scale.families] == study.allocate(scale.pool_size, list(shares))
    # The base poses no study problem, and no family whose problems are the study's.
    assert meta["base"]["problems_shared_with_study"] == 0
    assert not {"basic_arithmetic", "decimal_chain_sum", *scale.families} & set(
        meta["base"]["families"]
    )
    # Every target fine-tuned from the base, in a uniform shuffle, and kept its collapse check.
    for r in results:
        assert r["order"]["order"] == "shuffle" and set(r["top_prediction_by_set"]) == set(
            scale.families
        )
        assert (
            r["cell"]["target"] == "pretrained"
            and r["n_parameters"] == meta["base"]["n_parameters"]
        )
    # The primary endpoint recomputed from each item's 1/0 and the committed masks.
    report_mod = load_benchmark("study_report")
    for r in (r for r in results if r["cell"]["judge"] == "test"):
        masks = meta["data"]["masks"][r["cell"]["mixture"]]
        per_set = [
            np.asarray(list(r["correct"][f"in_domain/{s}"]), dtype=int)[
                np.asarray(list(m), dtype=int).astype(bool)
            ].mean()
            for s, m in masks.items()
        ]
        assert report_mod.primary(r) == pytest.approx(float(np.mean(per_set)))
        assert report_mod.item_scores(r, masks).mean() == pytest.approx(float(np.mean(per_set)))
    # The same-answer control is measured beside the same-source one.
    for pool in meta["premise"].values():
        assert pool["s2l"]["same_answer_cosine"] is not None

    text = report.read_text()
    assert text.startswith("# Results\n\nsummary by hand") and text.rstrip().endswith("tail")
    for pool, _ in scale.pools:
        assert f"#### {pool} pool, 20%" in text and "| embedding_cluster_random | 2 |" in text
    assert "### Collapsed cells" in text and "| one cluster, two answers |" in text
    assert (report.parent / "results_study_differences.png").stat().st_size > 10_000

    # A second sitting finds every cell done: nothing retrained.
    before = (out / "results.jsonl").read_text()
    assert study.main(args) == 0
    assert (out / "results.jsonl").read_text() == before
    meta = json.loads((out / "results.meta.json").read_text())
    assert [s["cells_run"] for s in meta["sittings"]] == [len(results), 0]
    # Results made from other data or another base are refused, not mixed in.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "results.jsonl").write_text(before)
    meta["made_from"]["base_sha256"] = "another base"
    (elsewhere / "results.meta.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="other data or another base"):
        study.main([*args, "--results", str(elsewhere / "results.jsonl")])


def test_committed_study_page_quotes_its_generated_numbers() -> None:
    """Every interval the hand-written summary of docs/results.md quotes is one the generated
    part computed from the committed results (which a rerun of the report rewrites)."""
    page = (PROJECT_ROOT / "docs" / "results.md").read_text()
    summary, generated = page.split("<!-- study:start", 1)
    quoted = re.findall(r"\[[+-]\d+\.\d, [+-]\d+\.\d\]", summary)
    assert quoted, "the summary quotes no interval"
    for interval in quoted:
        assert interval in generated, interval
    assert len(summary.split("## Summary", 1)[1].split("\n## ", 1)[0].strip().splitlines()) <= 12
