"""Core table checks, and the layering rule: core never imports dagster."""

import os
import subprocess
import sys

import polars as pl
import pytest

from s2l_pipeline.core.checks import check_contamination, check_training_table

from .conftest import PROJECT_ROOT


def test_training_table_check_counts_each_problem() -> None:
    df = pl.DataFrame(
        {
            "example_id": ["a", "a", None, "d"],
            "prompt": ["p", "p", "q", " "],
            "response": ["r", "r", "", "s"],
        }
    )
    f = check_training_table(df)
    assert not f.passed
    assert f.counts == {"null_ids": 1, "duplicate_ids": 1, "empty_prompts": 1, "empty_responses": 1}
    assert check_training_table(df.slice(0, 1)).passed


def test_contamination_counts_per_set() -> None:
    train = pl.DataFrame({"prompt": ["a", "b"]})
    evals = pl.DataFrame({"prompt": ["a", "x", "b"], "eval_set": ["s1", "s1", "s2"]})
    f = check_contamination(train, evals)
    assert not f.passed
    assert f.counts == {
        "leaked_rows": 2,
        "leaked_rows_normalized": 2,
        "s1": 1,
        "s2": 1,
        "s1_normalized": 1,
        "s2_normalized": 1,
    }


def test_contamination_also_counts_case_and_whitespace_variants() -> None:
    train = pl.DataFrame({"prompt": ["What is  2 + 2?", "Name a colour"]})
    evals = pl.DataFrame(
        {"prompt": ["what is 2 + 2?", "Name a colour", "new"], "eval_set": ["s", "s", "s"]}
    )
    f = check_contamination(train, evals)
    assert not f.passed
    assert f.counts["leaked_rows"] == 1 and f.counts["leaked_rows_normalized"] == 2
    assert "1 verbatim, 2 normalized" in f.summary


def test_core_never_imports_dagster() -> None:
    offenders = [
        p.relative_to(PROJECT_ROOT)
        for p in (PROJECT_ROOT / "s2l_pipeline" / "core").rglob("*.py")
        if "import dagster" in p.read_text() or "from dagster" in p.read_text()
    ]
    assert offenders == []
    code = (
        "import sys, importlib, pkgutil, s2l_pipeline.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module(f'{c.__name__}.{m.name}')\n"
        "print(any(k == 'dagster' or k.startswith('dagster.') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_home_for_each_default() -> None:
    """Dagster config takes its defaults from the core dataclasses; nothing is dropped on the way;
    the CLI exposes every selection option with the same defaults; 'default' is the code."""
    from dataclasses import fields

    from s2l_pipeline.cli import parser
    from s2l_pipeline.core.lm.train_config import TrainConfig
    from s2l_pipeline.core.selection import SelectionOptions
    from s2l_pipeline.defs.lm_config import LMTrainingConfig
    from s2l_pipeline.defs.profiles import PROFILES
    from s2l_pipeline.defs.selection import ClusterConfig, SelectionConfig

    assert PROFILES["default"] == {}
    assert LMTrainingConfig().train_config() == TrainConfig()
    from s2l_pipeline.core.stages.data import EvalSetsOptions
    from s2l_pipeline.core.stages.models import EvalOptions
    from s2l_pipeline.core.stages.trajectories import ScoringOptions
    from s2l_pipeline.defs.data import EvalSetsConfig
    from s2l_pipeline.defs.target import EvaluationConfig
    from s2l_pipeline.defs.trajectories import ScoringConfig

    assert EvaluationConfig().options() == EvalOptions()
    assert ScoringConfig().options() == ScoringOptions()
    assert EvalSetsConfig().options() == EvalSetsOptions()
    for name in PROFILES:  # the CLI's profiles are the deployment's, every one of them
        assert parser().parse_args(["run", "--profile", name]).profile == name
    assert not LMTrainingConfig(group_by_length=False).train_config().group_by_length
    opts, cluster, select = SelectionOptions(), ClusterConfig(), SelectionConfig()
    assert (cluster.clusters, cluster.iterations) == (opts.clusters, opts.kmeans_iterations)
    assert (select.lp_variant, select.embedding_clusters, select.knn) == (
        opts.lp_variant,
        opts.embedding_clusters,
        opts.knn,
    )
    assert select.min_cluster_size == opts.min_cluster_size == 1  # ours: tiny clusters whole
    cli = parser().parse_args(
        ["select", "--trajectories", "t", "--method", "s2l", "--budget", "1", "--out", "o"]
    )
    as_cli = {"kmeans_iterations": "iterations"}
    for f in fields(SelectionOptions):
        assert hasattr(cli, as_cli.get(f.name, f.name)), f"s2l select lacks --{f.name}"
        default = getattr(cli, as_cli.get(f.name, f.name))
        assert default in (getattr(opts, f.name), None), f.name


@pytest.mark.slow
def test_paper_profile_is_the_official_settings() -> None:
    """S2L_PROFILE=paper: K=100 per source, 20 iterations, clusters of <= 2 skipped."""
    code = (
        "from s2l_pipeline.defs.selection import ClusterConfig, SelectionConfig\n"
        "c, s = ClusterConfig(), SelectionConfig()\n"
        "print(c.clusters, c.iterations, c.stratify_by, s.method, s.min_cluster_size)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "S2L_PROFILE": "paper"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-5:] == ["100", "20", "source", "s2l", "3"]


def _core_imports() -> dict[str, set[str]]:
    """Each core module (dotted, under s2l_pipeline.core) -> the s2l_pipeline modules it imports,
    at any depth of the file (function-level imports count too)."""
    import ast

    core = PROJECT_ROOT / "s2l_pipeline" / "core"
    found: dict[str, set[str]] = {}
    for path in core.rglob("*.py"):
        parts = [
            "s2l_pipeline",
            *path.relative_to(PROJECT_ROOT / "s2l_pipeline").with_suffix("").parts,
        ]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        package = parts if path.name == "__init__.py" else parts[:-1]
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                else:
                    target = node.module or ""
                names.add(target)
                names.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[".".join(parts)] = {n for n in names if n.startswith("s2l_pipeline")}
    return found


def test_floors_of_core() -> None:
    """support is the ground floor (imports nothing else of core); stages is the top floor
    (nothing else in core imports it); nothing in core reaches the Dagster layer or the CLI."""
    imports = _core_imports()
    assert "s2l_pipeline.core.stages.manifests" in imports  # the walk found the package

    def under(name: str, floor: str) -> bool:
        return name == floor or name.startswith(floor + ".")

    support, stages = "s2l_pipeline.core.support", "s2l_pipeline.core.stages"
    up_from_support = {
        (m, n)
        for m, names in imports.items()
        if under(m, support)
        for n in names
        if under(n, "s2l_pipeline.core") and not under(n, support)
    }
    assert up_from_support == set()
    into_stages = {
        (m, n)
        for m, names in imports.items()
        if not under(m, stages)
        for n in names
        if under(n, stages)
    }
    assert into_stages == set()
    outward = {
        (m, n) for m, names in imports.items() for n in names if not under(n, "s2l_pipeline.core")
    }
    assert outward == set()


def test_assets_are_thin() -> None:
    """Every asset, check and op body is config -> stage function -> metadata and MLflow: at
    most about 40 lines (the algorithm lives in core/stages)."""
    import ast

    kinds = {"asset", "asset_check", "op", "graph_asset", "observable_source_asset"}
    long = {}
    for path in (PROJECT_ROOT / "s2l_pipeline" / "defs").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
            if not any(isinstance(d, ast.Attribute) and d.attr in kinds for d in decorators):
                continue
            body = node.end_lineno - node.body[0].lineno + 1
            if body > 40:
                long[f"{path.name}:{node.name}"] = body
    assert long == {}
