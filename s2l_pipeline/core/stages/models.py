"""Model stages: the proxy trained on everything, a target trained on one training set, and the
target's evaluation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..data.eval_sets import first_rows_per_set
from ..data.shards import training_rows as union_training_rows
from ..evaluation.model_eval import evaluate_checkpoint, headline, metric_by_set
from ..evaluation.sanity import answer_floor, modal_answers
from ..lm.fit import EMBEDDED, TrainedModel, TrainRun, train_model
from ..lm.train_config import TrainHooks
from ..selection import usable_rows
from ..selection.random_sample import random_rows
from ..support.hashing import table_hash
from ..support.storage import ArtifactStore
from ..support.tables import read_table, write_table
from .lineage import evaluation_lineage, target_lineage
from .manifests import (
    EvalSetsManifest,
    EvaluationManifest,
    ModelManifest,
    PoolManifest,
    RawDatasetManifest,
    ShardManifest,
    SubsetManifest,
    TargetManifest,
    TrainedOn,
)

TRAINING_SETS = ("selected", "random", "full")


@dataclass(frozen=True)
class TrainingRows:
    """The rows a model trains on, their content hash, and (proxy) what they came from."""

    rows: pl.DataFrame
    data_hash: str
    trained_on: TrainedOn | None = None


def proxy_training_rows(
    raw: RawDatasetManifest, shards: Mapping[str, ShardManifest], store: ArtifactStore
) -> TrainingRows:
    """raw_dataset plus every given shard (first seen wins)."""
    parts = {k: (read_table(m.train, store), m.train.content_hash) for k, m in shards.items()}
    rows, data_hash, trained_on = union_training_rows(
        read_table(raw.train, store), raw.train.content_hash, parts
    )
    return TrainingRows(rows, data_hash, TrainedOn(**trained_on))


def train_proxy(
    rows: TrainingRows,
    run: TrainRun,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
) -> ModelManifest:
    """Train (or resume) the proxy, keeping its checkpoints in the store."""
    trained = train_model(
        "proxy_checkpoints", rows.rows, rows.data_hash, run, store, work_root, hooks
    )
    return ModelManifest.of(trained, trained_on=rows.trained_on)


def training_set_rows(
    training_set: str,
    data: pl.DataFrame,
    subset: pl.DataFrame,
    budget: int,
    seed: int,
    usable_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """Rows a target trains on: 'selected' (the subset), 'random' (a uniform sample of the same
    budget and seed, the fair comparison) or 'full' (everything).

    With ``usable_ids`` (rows with a loss trajectory), 'random' and 'full' draw from the same
    usable rows the selectors chose from, so the comparison is like for like.
    """
    if training_set not in TRAINING_SETS:
        raise ValueError(f"unknown training set {training_set!r} ({', '.join(TRAINING_SETS)})")
    if usable_ids is not None and training_set != "selected":
        data = data.filter(pl.col("example_id").is_in(usable_ids.implode()))
    if training_set == "full":
        return data
    if training_set == "random":
        return data[random_rows(data.height, budget, seed)]
    return subset.drop("cluster", strict=False)


def target_training_rows(
    training_set: str, pool: PoolManifest, subset: SubsetManifest, store: ArtifactStore
) -> TrainingRows:
    """The rows of one training set of ``subset``, drawn from the pool's usable rows."""
    usable = usable_rows(read_table(pool.trajectories, store))["example_id"]
    rows = training_set_rows(
        training_set,
        read_table(pool.train, store),
        read_table(subset.subset, store),
        subset.budget,
        subset.seed,
        usable,
    )
    return TrainingRows(rows, table_hash(rows))


def fit_target(
    rows: TrainingRows,
    run: TrainRun,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
    tokenizer_dir: Path | None = None,
) -> TrainedModel:
    """Train (or resume) a target; an embedded one takes the tokenizer in ``tokenizer_dir``."""
    tokenizer = tokenizer_dir if run.model.name == EMBEDDED else None
    return train_model(
        "target_model", rows.rows, rows.data_hash, run, store, work_root, hooks, tokenizer
    )


def train_target(
    rows: TrainingRows,
    training_set: str,
    subset: SubsetManifest,
    proxy: ModelManifest,
    run: TrainRun,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
) -> TargetManifest:
    """A target trained on ``rows`` (one training set of ``subset``), with its lineage."""
    ids_uri = write_table(
        rows.rows.select("example_id"),
        store,
        f"target_model/training_ids/{rows.data_hash[:16]}.parquet",
    ).uri
    tokenizer_dir = store.fetch_dir(proxy.checkpoints[0].uri)
    trained = fit_target(rows, run, store, work_root, hooks, tokenizer_dir)
    name = run.model.name if run.model.name != EMBEDDED else run.model.size
    n, digest = rows.rows.height, rows.data_hash
    return TargetManifest.of(
        trained,
        lineage=target_lineage(subset, training_set, n, digest, name, trained),
        training_set=training_set,
        training_rows_hash=digest,
        training_ids=ids_uri,
        selection_method=subset.method,
        modal_answers=modal_answers(rows.rows),
    )


@dataclass(frozen=True)
class EvalOptions:
    max_new_tokens: int = 16  # generation bound (GSM8K/MATH want 256-512)
    batch_size: int = 64
    max_length: int = 256  # tokens per row when scoring the reference NLL
    max_rows_per_set: int | None = None  # evaluate the first rows of each set only


def evaluate_model(
    uri: str,
    table: pl.DataFrame,
    opts: EvalOptions,
    store: ArtifactStore,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(predictions, metrics per set) of the checkpoint at ``uri`` on every row of ``table``."""
    return evaluate_checkpoint(
        uri,
        store,
        table,
        opts.max_new_tokens,
        opts.max_length,
        opts.batch_size,
        progress=progress,
    )


PER_SET_METRICS = ("accuracy", "mean_nll", "rougeL", "bleu", "embedding_similarity")


def per_set_metrics(
    metrics: pl.DataFrame, names: tuple[str, ...] = PER_SET_METRICS
) -> dict[str, float]:
    """'<set>.<metric>' -> value, for every metric of ``names`` a set has (MLflow's flat names)."""
    return {
        f"{r['eval_set']}.{k}": float(r[k])
        for r in metrics.iter_rows(named=True)
        for k in names
        if r.get(k) is not None
    }


@dataclass(frozen=True)
class Evaluation:
    manifest: EvaluationManifest
    predictions: pl.DataFrame
    metrics: pl.DataFrame  # per set, with the answer floor

    def per_set_metrics(self) -> dict[str, float]:
        return per_set_metrics(self.metrics)


def evaluate_target(
    target: TargetManifest,
    eval_sets: EvalSetsManifest,
    opts: EvalOptions,
    store: ArtifactStore,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """The target's final checkpoint on every evaluation set, read against each set's floor."""
    table = first_rows_per_set(read_table(eval_sets.eval, store), opts.max_rows_per_set)
    preds, metrics = evaluate_model(target.final.uri, table, opts, store, progress)
    metrics = metrics.join(answer_floor(table, target.modal_answers), on="eval_set", how="left")
    version = table_hash(preds)
    prefix = f"target_evaluation/{version[:16]}"
    manifest = EvaluationManifest(
        predictions=write_table(preds, store, f"{prefix}/predictions.parquet", version),
        metrics=write_table(metrics, store, f"{prefix}/metrics.parquet"),
        lineage=evaluation_lineage(target, eval_sets.eval.content_hash, version),
        headline=headline(metrics),
        metric_by_set=metric_by_set(metrics),
    )
    return Evaluation(manifest, preds, metrics)
