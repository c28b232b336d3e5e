"""Does an S2L subset train the target as well as the full set, and better than other selectors?

    python benchmarks/data_efficiency.py [--scale cpu|gpu|smoke] [--out data/benchmarks/...]
        [--workers N] [--tracking-uri URI] [--report-only]

The protocol of the S2L paper at our scale, on the embedded reasoning-gym mixture:
  1. carve a validation split out of the training data (per source, by example_id rank);
  2. train the proxy once on the rest, score its loss trajectories;
  3. tune the target's learning rate on the validation split (random 20% subset, seed 0);
     nothing is ever tuned on the test sets;
  4. train the target on the full set and on the subsets of every method x budget x seed
     (seed varies selection and target initialisation), same epochs and hyperparameters for
     all, so smaller subsets cost less; also the full set for the steps of each budget
     ("full, same steps"), so less data is not confused with less compute;
  5. ablations of S2L at 20%: K, trajectory length T, proxy size;
  6. a second mixture adding GSM8K train (../shared/data), judged on held-out response NLL.
Every target is evaluated on the in-domain held-out problems and the out-of-domain families.

Selection, training, scoring and evaluation are the stage functions of core/stages that the
Dagster assets and `s2l select` call; this file only plans cells and records results.
Cells run in ``--workers`` processes of one thread each (small models scale poorly over
threads). Results go to ``<out>/results.jsonl`` as each cell finishes, so a crash resumes
where it stopped; every cell is an MLflow run in the experiment ``s2l-data-efficiency``.
The report (docs/results_learns.md, docs/results_learns.png) is rewritten from the
results between the generated markers; text outside them is kept.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from s2l_pipeline.core.data.eval_sets import EvalFile, build_eval_sets, first_rows_per_set
from s2l_pipeline.core.data.generator import TRAIN_FAMILIES, Family, families_with_settings
from s2l_pipeline.core.data.ingest import (
    DatasetSpec,
    EmbeddedSource,
    FileSource,
    load_dataset,
    split_heldout,
)
from s2l_pipeline.core.data.schema import EVAL_SCHEMA
from s2l_pipeline.core.evaluation.endpoints import (
    off_mode_scores,
    top_prediction,
    top_predictions,
)
from s2l_pipeline.core.evaluation.model_eval import headline
from s2l_pipeline.core.evaluation.stats import pack_correct
from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig, TrainHooks
from s2l_pipeline.core.selection import (
    EMBEDDING_METHODS,
    SelectionOptions,
    cluster_table,
    usable_rows,
)
from s2l_pipeline.core.selection.common import PAPER_S2L
from s2l_pipeline.core.selection.diagnostics import premise_on_pool
from s2l_pipeline.core.selection.learning_percentage import embed_rows, epoch1_from_schedule
from s2l_pipeline.core.stages.models import (
    EvalOptions,
    TrainingRows,
    evaluate_model,
    fit_target,
    per_set_metrics,
    train_proxy,
)
from s2l_pipeline.core.stages.selection import choose_subset
from s2l_pipeline.core.stages.trajectories import score_table
from s2l_pipeline.core.support.hashing import table_hash
from s2l_pipeline.core.support.processes import die_with_parent
from s2l_pipeline.core.support.storage import ArtifactStore
from s2l_pipeline.core.support.tracking import local_tracking_uri, mlflow_run
from s2l_pipeline.core.trajectories import steps_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
# One direction only: this benchmark imports its report (and the method order it reports in).
from results_report import METHODS, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXPERIMENT = "s2l-data-efficiency"


@dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark profile; the cpu one is sized to finish within 2 h on 2 cores."""

    size: int = 20_000
    heldout_per_family: int = 300
    ood_per_family: int = 300
    test_rows_per_set: int | None = 150  # evaluated rows of each test set (first ones)
    val_per_source: int = 50
    proxy: str = "proxy-micro"
    proxy_epochs: float = 3.0
    checkpoints: int = 10
    target: str = "proxy-tiny"
    target_epochs: float = 6.0
    lr_grid: tuple[float, ...] = (4e-3, 8e-3)
    batch_size: int = 64  # the proxy's
    target_batch_size: int = 64
    eval_batch_size: int = 256
    max_length: int = 128
    clusters: int = 100
    embedding_clusters: int = 1000
    max_new_tokens: int = 16
    methods: tuple[str, ...] = METHODS
    budgets: tuple[float, ...] = (0.1, 0.2, 0.3)
    seeds: tuple[int, ...] = (0, 1, 2)
    same_steps_seeds: tuple[int, ...] = ()
    ablation_seeds: tuple[int, ...] = (0,)
    ablation_budget: float = 0.2
    ablation_clusters: tuple[int, ...] = (10, 50)
    ablation_lengths: tuple[int, ...] = (4, 8)
    ablation_proxy: str | None = "proxy-tiny"
    gsm8k: str | None = str(SHARED / "gsm8k")
    gsm8k_proxy: str = "proxy"
    gsm8k_seeds: tuple[int, ...] = (0, 1)
    gsm8k_budget: float = 0.1
    gsm8k_max_length: int = 256
    gsm8k_eval_rows: int = 300
    gsm8k_methods: tuple[str, ...] = ("s2l", "random")
    gsm8k_full_seeds: tuple[int, ...] = ()
    workers: int = 2
    # The task families (None: the embedded mixture's 12) and changes to their settings.
    families: tuple[str, ...] | None = None
    family_settings: tuple[tuple[str, str, object], ...] = ()  # (family, key, value)
    # A committed results file (relative to the project), else <out>/results.jsonl.
    results_file: str | None = None


SCALES: dict[str, Scale] = {
    "cpu": Scale(),
    # A GPU: more data, the 0.86M/3.4M targets, one worker holding the device.
    "gpu": Scale(
        size=100_000,
        test_rows_per_set=None,
        proxy="proxy-large",
        ablation_proxy="proxy",
        target="target-large",
        target_epochs=10.0,
        lr_grid=(1e-3, 2e-3),
        batch_size=128,
        target_batch_size=128,
        same_steps_seeds=(0,),
        ablation_seeds=(0, 1, 2),
        gsm8k_seeds=(0, 1, 2),
        workers=1,
    ),
    # Issue 15's regime, where the 0.84M target learns (docs/results_learns.md, "Finding a regime"):
    # three families at the mixture's settings (two-term sums), 2,000 rows each, 30 epochs; the
    # proxy 6.7x smaller than the target; every in-domain test problem (300 per family) judged.
    # Results are committed and the run resumes from them, sitting after sitting.
    "learns": Scale(
        size=6_000,
        test_rows_per_set=None,
        ood_per_family=100,
        proxy="proxy",
        proxy_epochs=5.0,
        target="target",
        target_epochs=30.0,
        lr_grid=(2e-3,),
        max_length=96,
        max_new_tokens=12,
        budgets=(0.1, 0.2),
        # Seeds 0-2 in the first sitting; more seeds narrow the intervals (resumes add them).
        seeds=(0, 1, 2, 3, 4),
        same_steps_seeds=(0, 1, 2),
        ablation_seeds=(),
        ablation_proxy=None,
        gsm8k=None,
        families=("gcd", "simple_equations", "chain_sum"),
        family_settings=(("chain_sum", "max_terms", 2),),
        results_file="benchmarks/results/data_efficiency_learns.jsonl",
    ),
    # Seconds: every code path once, for the test suite.
    "smoke": Scale(
        size=600,
        heldout_per_family=8,
        ood_per_family=8,
        val_per_source=4,
        proxy="proxy-tiny",
        proxy_epochs=2.0,
        checkpoints=4,
        target="proxy-tiny",
        target_epochs=1.0,
        lr_grid=(2e-3,),
        batch_size=32,
        target_batch_size=32,
        max_length=96,
        clusters=8,
        embedding_clusters=10,
        max_new_tokens=6,
        budgets=(0.2,),
        seeds=(0,),
        same_steps_seeds=(0,),
        ablation_clusters=(4,),
        ablation_lengths=(2,),
        ablation_proxy=None,
        gsm8k=None,
        workers=1,
    ),
}


@dataclass(frozen=True)
class Cell:
    """One target training: which data, which selection, which seed."""

    mixture: str  # 'embedded' or 'embedded+gsm8k'
    method: str  # a selector, 'full', or 'full_same_steps'
    budget: float  # share of the pool; 1.0 for full
    seed: int
    variant: str = "main"  # 'main', 'K=10', 'T=4', 'proxy=proxy-tiny', 'lr=0.002'
    clusters: int = 100
    length: int | None = None  # checkpoints used (None: all trained ones)
    proxy: str = "proxy"
    lr: float = 2e-3
    epochs: float = 10.0
    judge: str = "test"  # 'test' or 'validation' (tuning)
    target: str = "proxy"
    batch: int = 64

    @property
    def key(self) -> str:
        return (
            f"{self.mixture}/{self.variant}/{self.method}/b{self.budget:g}/s{self.seed}/"
            f"{self.proxy}->{self.target}/lr{self.lr:g}/e{self.epochs:g}/bs{self.batch}/"
            f"{self.judge}"
        )


# ---------------------------------------------------------------------------- preparation


def scale_families(scale: Scale) -> tuple[Family, ...]:
    """The scale's task families with its setting changes, equal weights when chosen."""
    if scale.families is None:
        return TRAIN_FAMILIES
    return families_with_settings(scale.families, scale.family_settings)


def mixture_spec(scale: Scale, mixture: str) -> DatasetSpec:
    files = ()
    if mixture == "embedded+gsm8k":
        files = (FileSource(str(Path(scale.gsm8k) / "train.jsonl"), "gsm8k", "gsm8k"),)
    embedded = EmbeddedSource(scale.size, 0, scale.heldout_per_family, scale_families(scale))
    return DatasetSpec(embedded=embedded, files=files)


def prepare_data(scale: Scale, mixture: str, out: Path) -> dict[str, Path]:
    """Training pool, validation split and test sets of a mixture, as Parquet files."""
    folder = out / "data" / mixture.replace("+", "_")
    paths = {k: folder / f"{k}.parquet" for k in ("train", "validation", "test")}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    loaded = load_dataset(mixture_spec(scale, mixture))
    train, validation = split_heldout(loaded.train, scale.val_per_source)
    files = ()
    if mixture == "embedded+gsm8k":
        files = (EvalFile(str(Path(scale.gsm8k) / "test.jsonl"), "gsm8k_test", "gsm8k"),)
    test, _ = build_eval_sets(loaded.heldout, scale.ood_per_family, 1, files)
    if mixture == "embedded+gsm8k":
        test = test.filter(
            (pl.col("eval_set") != "gsm8k_test")
            | (pl.int_range(pl.len()) < scale.gsm8k_eval_rows).over("eval_set")
        )
    train.write_parquet(paths["train"])
    validation.cast(EVAL_SCHEMA).write_parquet(paths["validation"])
    test.write_parquet(paths["test"])
    return paths


@dataclass(frozen=True)
class ProxyRecord:
    """A trained and scored proxy, cached as JSON beside its trajectories."""

    mixture: str
    size: str
    trajectories: str
    tokenizer_dir: str
    epoch1_step: int
    n_parameters: int
    train_seconds: float
    score_seconds: float
    cpu_seconds: float
    max_length: int


def proxy_trajectories(scale: Scale, mixture: str, size: str, out: Path) -> ProxyRecord:
    """Train the proxy on the pool and score every example at every checkpoint (cached)."""
    max_length = scale.gsm8k_max_length if "gsm8k" in mixture else scale.max_length
    settings = ProxySettings(size, scale.proxy_epochs, scale.batch_size, scale.checkpoints)
    train = prepare_data(scale, mixture, out)["train"]
    return scored_proxy(train, mixture, settings, max_length, out)


@dataclass(frozen=True)
class ProxySettings:
    """How a benchmark trains its proxy."""

    size: str
    epochs: float
    batch_size: int
    checkpoints: int


def scored_proxy(
    train_path: Path, mixture: str, proxy: ProxySettings, max_length: int, out: Path
) -> ProxyRecord:
    """The proxy trained on the pool at ``train_path`` and its trajectories (cached by name)."""
    tag = f"{mixture.replace('+', '_')}_{proxy.size}"
    manifest_path = out / "proxy" / f"{tag}.json"
    if manifest_path.exists():
        return ProxyRecord(**json.loads(manifest_path.read_text()))
    store = ArtifactStore(str(out / "artifacts"))
    train = pl.read_parquet(train_path)
    run = TrainRun(
        model=ModelSpec("embedded", proxy.size, 512, 0),
        train=TrainConfig(epochs=proxy.epochs, batch_size=proxy.batch_size, max_length=max_length),
        schedule=CheckpointSchedule(count=proxy.checkpoints),
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = TrainingRows(train, table_hash(train))
    trained = train_proxy(rows, run, store, out / "work" / "proxy")
    t_train = time.perf_counter() - t0
    traj = score_table(train, trained, store, max_length)
    t_score = time.perf_counter() - t0 - t_train
    traj_path = out / "proxy" / f"{tag}_trajectories.parquet"
    traj_path.parent.mkdir(parents=True, exist_ok=True)
    traj.write_parquet(traj_path)
    record = ProxyRecord(
        mixture=mixture,
        size=proxy.size,
        trajectories=str(traj_path),
        tokenizer_dir=str(store.fetch_dir(trained.checkpoints[0].uri)),
        epoch1_step=epoch1_from_schedule(trained.final.step, proxy.epochs, steps_of(traj)),
        n_parameters=trained.n_parameters,
        train_seconds=round(t_train, 1),
        score_seconds=round(t_score, 1),
        cpu_seconds=round(time.process_time() - cpu0, 1),
        max_length=max_length,
    )
    manifest_path.write_text(json.dumps(asdict(record), indent=1))
    return record


def premise_diagnostics(scale: Scale, out: Path, proxy: ProxyRecord) -> dict:
    """The premise diagnostic on the scale's training pool (see :func:`pool_premise`)."""
    return pool_premise(prepare_data(scale, proxy.mixture, out)["train"], proxy, scale.clusters)


def pool_premise(pool_path: Path, proxy: ProxyRecord, clusters: int) -> dict:
    """Does S2L's premise hold on this pool? Gradient similarity within trajectory clusters
    against random pairs, with the same-source and same-answer controls, for our clustering
    and the paper's (cached beside the trajectories)."""
    path = Path(proxy.trajectories).with_suffix(".premise.json")
    if path.exists():
        return json.loads(path.read_text())
    traj = _read(proxy.trajectories)
    data = _read(str(pool_path))
    last = Path(proxy.tokenizer_dir).parent / f"step_{max(steps_of(traj))}"
    found = {}
    for name, opts in (
        ("s2l", SelectionOptions(clusters=clusters)),
        ("s2l_paper", SelectionOptions(**PAPER_S2L)),
    ):
        table, summary = cluster_table(traj, data, 0, opts)
        report = premise_on_pool(traj, data, table, last, proxy.max_length)
        found[name] = {**report.to_dict(), "clusters": summary.clusters}
    path.write_text(json.dumps(found, indent=1))
    return found


def answer_floor(paths: dict[str, Path]) -> dict:
    """Exact match of a model that answers every problem with the pool's most common answer:
    the floor a collapsed target sits on (the same string for every problem)."""
    train, test = pl.read_parquet(paths["train"]), pl.read_parquet(paths["test"])
    answer = train["answer"].mode().sort()[0]
    hits = test.group_by("eval_set", "domain").agg((pl.col("answer") == answer).mean().alias("hit"))
    by_domain = hits.group_by("domain").agg(pl.col("hit").mean())
    return {**dict(sorted(by_domain.iter_rows())), "answer": answer}  # same bytes every run


def refresh_diagnostics(scale: Scale, out: Path, meta: dict, meta_path: Path) -> None:
    """--report-only: the diagnostic and the answer floor for a pool whose sittings predate
    them (or their fields)."""
    manifest = out / "proxy" / f"embedded_{scale.proxy}.json"
    if meta and manifest.exists():
        record = ProxyRecord(**json.loads(manifest.read_text()))
        meta["premise"] = premise_diagnostics(scale, out, record)
        meta["floor"] = answer_floor(prepare_data(scale, "embedded", out))
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")


def embeddings_for(proxy: ProxyRecord, train_path: Path, out: Path) -> Path:
    """MiniLM embeddings of the usable rows, computed once per pool (learning_percentage)."""
    path = Path(proxy.trajectories).with_suffix(".minilm.npy")
    if not path.exists():
        traj = usable_rows(pl.read_parquet(proxy.trajectories))
        np.save(path, embed_rows(traj, pl.read_parquet(train_path)))
    return path


# ---------------------------------------------------------------------------- one cell


@functools.lru_cache(maxsize=8)
def _read(path: str) -> pl.DataFrame:
    return pl.read_parquet(path)


@functools.lru_cache(maxsize=4)
def _first_rows(path: str, per_set: int | None) -> pl.DataFrame:
    """The first ``per_set`` rows of every evaluation set (all with None)."""
    return first_rows_per_set(_read(path), per_set)


@dataclass(frozen=True)
class CellContext:
    """What every cell of one (mixture, proxy) shares: its tables, proxy and settings."""

    train: str
    validation: str
    test: str
    trajectories: str
    tokenizer_dir: str
    epoch1_step: int
    embeddings: str | None
    embedding_clusters: int
    test_rows_per_set: int | None
    max_length: int
    eval: EvalOptions
    artifacts: str
    work: str
    # A pretrained base's folder: targets fine-tune from it (None: from scratch, ``cell.target``).
    base_model: str | None = None
    # Each in-domain set's collapse answers in the pool: the primary endpoint leaves them out.
    modes: dict[str, list[str]] | None = None


def training_rows(cell: Cell, ctx: CellContext) -> tuple[pl.DataFrame, dict]:
    """The rows the target trains on, and what the selector reported."""
    data = _read(ctx.train)
    if cell.method in ("full", "full_same_steps"):
        return data, {"budget": data.height}
    traj = _read(ctx.trajectories)
    steps = [s for s in steps_of(traj) if s > 0]
    if cell.length:  # T evenly spaced trained checkpoints, always ending with the last
        steps = sorted(
            {steps[round((len(steps) - 1) * (i + 1) / cell.length)] for i in range(cell.length)}
        )
    opts = SelectionOptions(
        clusters=cell.clusters,
        steps=tuple(steps) if cell.length else None,
        epoch1_step=ctx.epoch1_step,
        embedding_clusters=ctx.embedding_clusters,
    )
    method = cell.method
    if method == "s2l_paper":
        method, opts = "s2l", replace(opts, **PAPER_S2L)
    emb = np.load(ctx.embeddings) if method in EMBEDDING_METHODS else None
    chosen = choose_subset(method, traj, data, cell.budget, cell.seed, opts, embeddings=emb)
    rows = chosen.rows.drop("cluster", strict=False)  # as the target asset trains on it
    return rows, {k: v for k, v in chosen.info.items() if isinstance(v, int | float | str)}


def run_cell(cell: Cell, ctx: CellContext) -> dict:
    """Select, train the target, evaluate; returns everything the report and MLflow need."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows, info = training_rows(cell, ctx)
    t_select = time.perf_counter() - t0
    epochs = cell.epochs * (cell.budget if cell.method == "full_same_steps" else 1.0)
    spec = ModelSpec(ctx.base_model) if ctx.base_model else ModelSpec("embedded", cell.target)
    run = TrainRun(
        model=replace(spec, seed=cell.seed),
        train=TrainConfig(
            epochs=epochs,
            learning_rate=cell.lr,
            batch_size=cell.batch,
            max_length=ctx.max_length,
            seed=cell.seed,
        ),
        schedule=CheckpointSchedule(count=1),
    )
    store = ArtifactStore(ctx.artifacts)
    losses: list[tuple[int, float]] = []
    trained = fit_target(
        TrainingRows(rows, table_hash(rows)),
        run,
        store,
        Path(ctx.work),
        hooks=TrainHooks(
            on_log=lambda logs, step: "loss" in logs and losses.append((step, float(logs["loss"])))
        ),
        tokenizer_dir=Path(ctx.tokenizer_dir),
    )
    t_train = time.perf_counter() - t0 - t_select
    if cell.judge == "validation":
        table = _read(ctx.validation)
    else:
        table = _first_rows(ctx.test, ctx.test_rows_per_set)
    preds, metrics = evaluate_model(trained.final.uri, table, ctx.eval, store)
    t_eval = time.perf_counter() - t0 - t_select - t_train
    per_set = per_set_metrics(metrics, ("accuracy", "mean_nll"))
    in_domain = preds.filter(pl.col("domain") == "in_domain")
    off_mode = off_mode_scores(in_domain, ctx.modes) if ctx.modes else {}
    return {
        "key": cell.key,
        "cell": asdict(cell),
        "n_train": rows.height,
        "train_steps": trained.final.step,
        "train_tokens": trained.train_tokens,
        "n_parameters": trained.n_parameters,
        "selection": info,
        "metrics": headline(metrics),
        "per_set": per_set,
        # Every test item's 1/0, in table order per set: paired bootstrap over items and seeds.
        "correct": {
            f"{domain}/{name}": pack_correct(group["correct"].to_list())
            for (name, domain), group in preds.group_by("eval_set", "domain", maintain_order=True)
        },
        "losses": losses,
        "seconds": {
            "select": round(t_select, 1),
            "train": round(t_train, 1),
            "eval": round(t_eval, 1),
        },
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        # Rows per source: what the selector over- and under-samples against the pool.
        "composition": dict(sorted(rows.group_by("source").len().iter_rows())),
        "checkpoint_sha256": trained.final.sha256,
        # The commonest in-domain generation and its share: a share near 1 is a collapse.
        "top_prediction": top_prediction(in_domain).to_dict(),
        "top_prediction_by_set": {k: v.to_dict() for k, v in top_predictions(in_domain).items()},
        "off_mode": {name: score.to_dict() for name, score in off_mode.items()},
        "order": asdict(trained.order) if trained.order else None,
    }


def cost(cell: Cell) -> float:
    """Rough relative training cost: rows x epochs (GSM8K rows are ~3x longer)."""
    share = 1.0 if cell.method.startswith("full") else cell.budget
    epochs = cell.epochs * (cell.budget if cell.method == "full_same_steps" else 1.0)
    return share * epochs * (3.0 if "gsm8k" in cell.mixture else 1.0)


def _init_worker(threads: int) -> None:
    import torch

    # A stopped benchmark must stop its workers too: an orphan would keep training cells
    # nobody records, on the cores the next sitting (or CI) needs.
    die_with_parent()
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- orchestration


def write_meta(
    meta_path: Path, fields: dict, before: list, t0: float, cells_run: int, workers: int
) -> None:
    """The results' meta file with this sitting appended, replaced atomically: written after
    every cell, so a sitting cut short is still counted."""
    sitting = {
        "ended": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "cells_run": cells_run,
        "workers": workers,
        "cpus": os.cpu_count(),
    }
    new = {
        **fields,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "sittings": [*before, sitting],
    }
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(new, indent=1) + "\n")
    tmp.replace(meta_path)


def load_results(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["key"]] = r
    return out


def log_to_mlflow(result: dict, tracking_uri: str, scale_name: str) -> str:
    cell = result["cell"]
    tags = {"benchmark": "data_efficiency", "scale": scale_name, "cell": result["key"]}
    with mlflow_run(tracking_uri, EXPERIMENT, result["key"].replace("/", " "), tags) as mt:
        mt.log_params(
            {
                **cell,
                "n_train": result["n_train"],
                "n_parameters": result["n_parameters"],
                "checkpoint_sha256": result["checkpoint_sha256"],
                **{f"selection.{k}": v for k, v in result["selection"].items()},
            }
        )
        for step, loss in result["losses"]:
            mt.log_metrics({"train_loss": loss}, step=step)
        mt.log_metrics({**result["metrics"], **result["per_set"]})
        mt.log_metrics({f"seconds.{k}": v for k, v in result["seconds"].items()})
        return mt.run_id


def run_cells(
    cells: list[Cell],
    ctxs: dict,
    args,
    results: dict,
    results_path: Path,
    on_record=lambda: None,
) -> None:
    """Run the cells not yet in ``results``, appending each result as it finishes."""
    todo = [c for c in cells if c.key not in results]
    if not todo:
        return
    print(f"{len(todo)} cells to run ({len(cells) - len(todo)} already done)", flush=True)

    def record(res: dict) -> None:
        res["mlflow_run_id"] = log_to_mlflow(res, args.tracking_uri, args.scale)
        results[res["key"]] = res
        with results_path.open("a") as f:
            f.write(json.dumps(res) + "\n")
        on_record()
        m = res["metrics"]
        print(
            f"[{len(results)}] {res['key']}: n={res['n_train']} "
            f"in={m.get('in_domain_accuracy', float('nan')):.4f} "
            f"ood={m.get('out_of_domain_accuracy', float('nan')):.4f} "
            f"nll={m['mean_nll']:.4f} ({res['seconds']})",
            flush=True,
        )

    ctx_of = lambda c: ctxs[(c.mixture, c.proxy)]  # noqa: E731
    if args.workers <= 1:
        for c in todo:
            record(run_cell(c, ctx_of(c)))
        return
    threads = max(1, (os.cpu_count() or 2) // args.workers)
    with cf.ProcessPoolExecutor(
        args.workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    ) as pool:
        # Seed by seed, so a run cut short still holds whole seeds; longest first within one.
        order = sorted(todo, key=lambda c: (c.seed, -cost(c)))
        futures = {pool.submit(run_cell, c, ctx_of(c)): c for c in order}
        for fut in cf.as_completed(futures):
            record(fut.result())


def result_paths(scale: Scale, out: Path, results: Path | None) -> tuple[Path, Path]:
    """The results file (appended cell by cell) and its meta file beside it."""
    if results is None:
        results = ROOT / scale.results_file if scale.results_file else out / "results.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    return results, results.with_name(results.stem + ".meta.json")


def context(
    scale: Scale, proxy: ProxyRecord, paths: dict, out: Path, emb: Path | None
) -> CellContext:
    return CellContext(
        train=str(paths["train"]),
        validation=str(paths["validation"]),
        test=str(paths["test"]),
        trajectories=proxy.trajectories,
        tokenizer_dir=proxy.tokenizer_dir,
        epoch1_step=proxy.epoch1_step,
        embeddings=str(emb) if emb else None,
        embedding_clusters=scale.embedding_clusters,
        test_rows_per_set=scale.test_rows_per_set,
        max_length=proxy.max_length,
        eval=EvalOptions(
            max_new_tokens=scale.max_new_tokens,
            batch_size=scale.eval_batch_size,
            max_length=proxy.max_length,
        ),
        artifacts=str(out / "artifacts"),
        work=str(out / "work" / "target"),
    )


def tuned_lr(scale: Scale, results: dict) -> float:
    """The learning rate with the lowest validation NLL on a random 20%: with 50 rows per family
    accuracy moves by a point from noise alone, NLL far less (docs/results_learns.md)."""
    scores = []
    for lr in scale.lr_grid:
        m = results[tuning_cell(scale, lr).key]["metrics"]
        scores.append((m["mean_nll"], lr))
    return min(scores)[1]


def tuning_cell(scale: Scale, lr: float) -> Cell:
    return Cell(
        "embedded",
        "random",
        0.2,
        0,
        f"lr={lr:g}",
        scale.clusters,
        None,
        scale.proxy,
        lr,
        scale.target_epochs,
        "validation",
        scale.target,
        scale.target_batch_size,
    )


def plan(scale: Scale, lr: float) -> list[Cell]:
    """Every test cell of the benchmark (tuning cells excluded)."""
    base = Cell(
        "embedded",
        "s2l",
        0.0,
        0,
        "main",
        scale.clusters,
        None,
        scale.proxy,
        lr,
        scale.target_epochs,
        target=scale.target,
        batch=scale.target_batch_size,
    )
    cells = []
    for seed in scale.seeds:
        cells.append(replace(base, method="full", budget=1.0, seed=seed))
        for budget in scale.budgets:
            if seed in scale.same_steps_seeds:
                cells.append(replace(base, method="full_same_steps", budget=budget, seed=seed))
            cells += [replace(base, method=m, budget=budget, seed=seed) for m in scale.methods]
        b = replace(base, budget=scale.ablation_budget, seed=seed)
        if seed in scale.ablation_seeds:
            cells += [replace(b, variant=f"K={k}", clusters=k) for k in scale.ablation_clusters]
            cells += [replace(b, variant=f"T={t}", length=t) for t in scale.ablation_lengths]
        if scale.ablation_proxy and seed in scale.ablation_seeds:
            cells.append(
                replace(b, variant=f"proxy={scale.ablation_proxy}", proxy=scale.ablation_proxy)
            )
        if scale.gsm8k and seed in scale.gsm8k_seeds:
            g = replace(
                base,
                mixture="embedded+gsm8k",
                proxy=scale.gsm8k_proxy,
                budget=scale.gsm8k_budget,
                seed=seed,
            )
            cells += [replace(g, method=m) for m in scale.gsm8k_methods]
            if seed in scale.gsm8k_full_seeds:
                cells.append(replace(g, method="full", budget=1.0))
    return cells


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--scale", choices=sorted(SCALES), default=None, help="default: gpu with CUDA, else cpu"
    )
    p.add_argument("--out", type=Path, default=None, help="default: data/benchmarks/<scale>")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--tracking-uri", default=None, help="default: the project's local MLflow")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "results_learns.md")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--results", type=Path, default=None, help="results file (default: the scale's own)"
    )
    args = p.parse_args(argv)
    if args.scale is None:
        import torch

        args.scale = "gpu" if torch.cuda.is_available() else "cpu"
    scale = SCALES[args.scale]
    if args.workers is None:
        args.workers = scale.workers
    out = args.out or ROOT / "data" / "benchmarks" / f"data_efficiency_{args.scale}"
    out.mkdir(parents=True, exist_ok=True)
    args.tracking_uri = args.tracking_uri or local_tracking_uri(ROOT / "data")
    results_path, meta_path = result_paths(scale, out, args.results)
    results = load_results(results_path)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if scale.gsm8k and not (Path(scale.gsm8k) / "train.jsonl").exists():
        print(f"GSM8K not found at {scale.gsm8k}: the second mixture is skipped", flush=True)
        scale = replace(scale, gsm8k=None)

    if not args.report_only:
        t0, done_before = time.perf_counter(), len(results)
        ctxs = {}
        proxies = {}
        mixtures = ["embedded"] + (["embedded+gsm8k"] if scale.gsm8k else [])
        for mixture in mixtures:
            paths = prepare_data(scale, mixture, out)
            sizes = [scale.proxy] if mixture == "embedded" else [scale.gsm8k_proxy]
            if scale.ablation_proxy and mixture == "embedded":
                sizes.append(scale.ablation_proxy)
            for size in sizes:
                proxy = proxy_trajectories(scale, mixture, size, out)
                proxies[(mixture, size)] = proxy
                emb = None
                if (
                    mixture == "embedded"
                    and size == scale.proxy
                    and "learning_percentage" in scale.methods
                ):
                    emb = embeddings_for(proxy, paths["train"], out)
                ctxs[(mixture, size)] = context(scale, proxy, paths, out, emb)
                print(f"proxy {mixture}/{size}: {proxy}", flush=True)
        premise = premise_diagnostics(scale, out, proxies[("embedded", scale.proxy)])
        floor = answer_floor(prepare_data(scale, "embedded", out))
        before = meta.get("sittings", [])
        lr = None

        def save_meta() -> None:
            """Written after every cell, so a sitting cut short is still counted."""
            fields = {
                "scale": asdict(scale),
                "lr": lr,
                "proxies": {f"{k[0]}/{k[1]}": asdict(v) for k, v in proxies.items()},
                "premise": premise,
                "floor": floor,
            }
            write_meta(meta_path, fields, before, t0, len(results) - done_before, args.workers)

        tuning = [tuning_cell(scale, x) for x in scale.lr_grid]
        run_cells(tuning, ctxs, args, results, results_path, save_meta)
        lr = tuned_lr(scale, results)
        print(f"learning rate chosen on validation: {lr:g}", flush=True)
        run_cells(plan(scale, lr), ctxs, args, results, results_path, save_meta)
        save_meta()

    else:
        refresh_diagnostics(scale, out, meta, meta_path)
    write_report(results_path, meta_path, args.report, args.scale)
    print(f"report: {args.report}", flush=True)
    return 0


sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    sys.exit(main())
