"""The published study (docs/results.md) as the product holds it: its data rebuilt as
committed, its records converted into the product's cell records, its page's numbers the
product's."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from s2l_pipeline.core.evaluation.endpoints import primary_endpoint
from s2l_pipeline.core.stages.manifests import StudyCellManifest
from s2l_pipeline.core.study.spec import load_spec
from s2l_pipeline.core.support.hashing import table_hash

from .conftest import PROJECT_ROOT
from .helpers import load_benchmark

STUDY = "studies/selection_study"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """prepare.py's data (not the base: minutes), in a folder of its own."""
    prepare = load_benchmark("prepare", STUDY)
    folder = tmp_path_factory.mktemp("published")
    paths = prepare.prepare_data(folder / "data")
    prepare.in_domain_test(paths)
    return folder


def test_the_data_is_rebuilt_as_the_records_were_made_from(prepared: Path) -> None:
    import polars as pl

    meta = json.loads((PROJECT_ROOT / "benchmarks/results/selection_study.meta.json").read_text())
    for name, committed in meta["made_from"]["data"].items():
        assert table_hash(pl.read_parquet(prepared / "data" / f"{name}.parquet")) == committed


def test_committed_records_convert_into_the_products_cell_records(prepared: Path) -> None:
    """Every kind of committed record (tuning, each arm, full data) becomes a cell record whose
    endpoint is the committed one, item by item, and which reads back as the product's."""
    convert = load_benchmark("convert", STUDY)
    spec = load_spec(PROJECT_ROOT / "benchmarks" / STUDY / "imbalanced.yaml")
    records = [json.loads(line) for line in convert.RECORDS.open()]
    picked = {}
    for r in records:
        c = r["cell"]
        if c["mixture"] == "imbalanced":
            picked.setdefault((c["method"], c["budget"], c["judge"]), r)
    assert len(picked) >= 9  # tuning, six arms at 10%, three at 20%, full data
    for (method, budget, judge), r in picked.items():
        arm = spec.arm(method) if method != "full" else None
        cell = convert.convert(r, "study", "recipe", arm, {"threads": 1}, prepared)
        assert cell.judge == judge and cell.key == f"{method}-{budget:g}-{r['cell']['seed']}"
        assert cell.endpoint_score("off_mode") == pytest.approx(primary_endpoint(r["off_mode"]))
        assert len(cell.correct) == sum(
            len(v) for k, v in r["correct"].items() if k.startswith("in_domain/")
        )
        assert set(cell.per_set) == {f"{judge}:{f}" for f in ("gcd", "simple_equations",
                                                               "chain_sum")}  # fmt: skip
        assert cell.converted_from.endswith(r["key"]) and cell.floor is None
        back = StudyCellManifest.from_dict(json.loads(json.dumps(cell.__dict__)))
        assert back.endpoint_score("off_mode") == cell.endpoint_score("off_mode")
        if arm is not None:
            assert cell.selector == arm.method and cell.arm_options == arm.options


def test_the_pages_summary_quotes_the_products_reports() -> None:
    """Every interval the summary of docs/results.md quotes is in the part the product's
    reports wrote (publish.py), and that part is the product's: its judge and spec named."""
    page = (PROJECT_ROOT / "docs" / "results.md").read_text()
    summary = page.split("## How it was run")[0]
    start = page.index("<!-- study:start (benchmarks/studies/selection_study/publish.py")
    generated = page[start : page.index("<!-- study:end -->")]
    quoted = re.findall(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", summary)
    assert len(quoted) >= 10
    missing = [q for q in quoted if q not in generated and _flipped(q) not in generated]
    assert not missing, missing
    assert generated.count("held-out test split of 900 rows") == 4
    assert generated.count("chosen on the validation split") == 4
    for spec_id in {load_spec(p).spec_id for p in (PROJECT_ROOT / "benchmarks" / STUDY).glob(
            "*.yaml")}:  # fmt: skip
        assert f"The spec ({spec_id})" in generated


def _flipped(q: str) -> str:
    """'+12.9 [+7.2, +18.7]' as the report writes it the other way round (random vs full)."""
    nums = [float(x) for x in re.findall(r"[+-]\d+\.\d", q)]
    d, lo, hi = (-x for x in nums)
    return f"{d:+.1f} [{hi:+.1f}, {lo:+.1f}]"
