"""Core table checks, and the layering rule: core never imports dagster."""

import os
import subprocess
import sys
from pathlib import Path

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


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at any depth (function-level imports too)."""
    import ast

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name_of(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = parts[: len(parts) - (node.level - 1)]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
                found.update(subs or [target])
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[module] = {m for m in found if m in files and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


# Inside core, a module imports only from its own area or one of a lower layer.
CORE_LAYERS = {
    "support": 0,
    "export": 1,
    "data": 1,
    "checks": 2,
    "lm": 2,
    "trajectories": 3,
    "evaluation": 3,
    "selection": 4,
    "study": 5,
    "preflight": 5,
    "stages": 6,
}


def test_the_import_graph_has_no_circle_and_core_imports_only_downward() -> None:
    graph = _import_graph(PROJECT_ROOT / "s2l_pipeline")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    assert _cycles(graph) == []
    upward = []
    for module, imports in graph.items():
        parts = module.split(".")
        if parts[1:2] != ["core"] or len(parts) < 3:
            continue
        for target in imports:
            other = target.split(".")
            across = other[1:2] == ["core"] and len(other) > 2 and other[2] != parts[2]
            if across and CORE_LAYERS[other[2]] >= CORE_LAYERS[parts[2]]:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_test_module_imports_another() -> None:
    """Shared test helpers live in helpers.py, live.py, conftest.py; a test module importing
    another runs its module-level code and ties the two modules' fixtures together."""
    graph = _import_graph(PROJECT_ROOT / "s2l_pipeline_tests")
    crossing = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        for t in targets
        if t.rpartition(".")[2].startswith("test_")
    ]
    assert crossing == []


def test_contamination_reads_chat_turns_on_both_sides(tmp_path: Path) -> None:
    """Test prompts asked as user turns of a chat training file are found (they never equal the
    chat row's 'System: ... User: ...' prompt), and so is a chat evaluation item whose user
    turn was trained on as a plain prompt; short generic turns ('Are you sure?') are not."""
    import json

    from s2l_pipeline.core.data.ingest import DatasetSpec, FileSource, load_dataset

    from .conftest import FIXTURES

    tests = [json.loads(x) for x in (FIXTURES / "gsm8k_test_sample.jsonl").read_text().splitlines()]
    chats = tmp_path / "chats.jsonl"
    with chats.open("w") as f:
        for i, t in enumerate(tests):
            user = t["question"] if i % 2 == 0 else f"An unrelated question number {i}?"
            turns = [
                {"role": "system", "content": "Solve it."},
                {"role": "user", "content": user},
                {"role": "assistant", "content": t["answer"]},
                {"role": "user", "content": "Are you sure?"},
                {"role": "assistant", "content": "Yes."},
            ]
            f.write(json.dumps({"messages": turns}) + "\n")

    def rows(path: Path, name: str) -> pl.DataFrame:
        spec = DatasetSpec(embedded=None, files=(FileSource(str(path)),))
        return load_dataset(spec).train.with_columns(eval_set=pl.lit(name))

    chat_rows = rows(chats, "chats")
    plain = rows(FIXTURES / "gsm8k_test_sample.jsonl", "gsm8k_test")
    leaked = (len(tests) + 1) // 2
    found = check_contamination(chat_rows, plain)
    assert not found.passed and found.counts["gsm8k_test"] == leaked
    back = check_contamination(plain, chat_rows)
    assert not back.passed and back.counts["chats"] == leaked  # not every row: the generic turn
    other = [
        {"role": "user", "content": "A question asked nowhere in training?"},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": "Are you sure?"},  # in every training conversation
    ]
    fresh = chat_rows.with_columns(prompt=pl.lit("fresh"), messages=pl.lit(json.dumps(other)))
    assert check_contamination(chat_rows, fresh).passed
