"""What several test modules share (a test module never imports another): resources rooted in a
test folder, new shards, the README's commands, sample records, a benchmark script as a module."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.defs.automation import RetrainPolicy
from s2l_pipeline.defs.resources import (
    ArtifactStoreResource,
    ManifestIOManager,
    MlflowTracking,
    ShardSourceResource,
)

from .conftest import FIXTURES, PROJECT_ROOT


def make_resources(
    root: str, endpoint_url: str | None = None, mlflow_uri: str | None = None
) -> dict:
    """Resources rooted in a test folder; MLflow in a SQLite file beside the artifacts."""
    store = ArtifactStoreResource(
        root=root, endpoint_url=endpoint_url, work_dir=str(Path(root).parent / "work")
    )
    mlflow_uri = mlflow_uri or f"sqlite:///{Path(root).parent / 'mlflow.db'}"
    return {
        "artifact_store": store,
        "io_manager": ManifestIOManager(artifact_store=store),
        "mlflow": MlflowTracking(tracking_uri=mlflow_uri),
        "shard_source": ShardSourceResource(root=str(Path(root).parent / "shards")),
        "retrain_policy": RetrainPolicy(),
    }


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [mat] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


def write_shard(path: Path, rows: pl.DataFrame) -> Path:
    """An Alpaca-format JSONL shard holding ``rows`` (prompt -> instruction, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows.iter_rows(named=True):
            rec = {"instruction": r["prompt"], "output": r["response"], "source": r["source"]}
            f.write(json.dumps(rec) + "\n")
    return path


def new_rows(n: int, seed: int) -> pl.DataFrame:
    """Rows the tiny pipeline has not seen: reasoning-gym item i of seed s is item i + s of
    seed 0, so seeds far from 0."""
    return generate_mixture(n, seed=1_000_000 + 1_000 * seed, heldout_per_family=0)[0]


def readme_commands(prefix: str) -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return [line for b in blocks for line in b.splitlines() if prefix in line]


def load_benchmark(name: str, under: str = ""):
    """A benchmark script as a module (``under``: its folder below benchmarks/)."""
    folder = PROJECT_ROOT / "benchmarks" / under
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


AQUA = [
    {
        "question": "Two trains 100 km apart close at 50 km/h each. Hours to meet?",
        "options": ["A)1", "B)2", "C)3"],
        "rationale": "They close at 100 km/h, so 100/100 = 1 hour.",
        "correct": "A",
    },
    {
        "question": "What is 3 * 4?",
        "options": ["A)7", "B)12"],
        "rationale": "3 * 4 = 12.",
        "correct": "B",
    },
    {"question": "No rationale here", "options": ["A)1"], "correct": "A"},
]
AQUA_FIELDS = {
    "prompt": "{question}\nOptions: {options}",
    "response": "{rationale}",
    "answer": "{correct}",
}

MC = FIXTURES / "multiple_choice_sample.jsonl"
MC_FIELDS = {
    "prompt": "{question}\nOptions: {options}",
    "response": "{rationale}",
    "answer": "{correct}",
}


def readme_spec(name: str = "study.yaml") -> dict:
    """The README's spec that opens with the comment '# <name>'."""
    import re

    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    [spec] = [yaml.safe_load(b) for b in blocks if b.startswith(f"# {name}\n")]
    return spec


def run_study(tmp_path: Path, spec: dict, *extra: str, machine: str | None = None):
    """`s2l study --spec` as a user runs it; ``machine``: a new Dagster instance and data
    folder under that name, the same artifact store (where the cells' records are)."""
    import subprocess

    from .conftest import s2l_cmd, s2l_env

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [*s2l_cmd(), "study", "--profile", "tiny", "--spec", str(path), *extra]
    home = tmp_path / machine if machine else tmp_path
    home.mkdir(exist_ok=True)
    env = {**s2l_env(home, profile=None), "S2L_ARTIFACT_ROOT": str(tmp_path / "art")}
    done = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=600)
    out = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    return done, out
