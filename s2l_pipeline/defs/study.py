"""The selection study as assets: a validation split of the pool, one cell per (method,
budget, seed), and the report over every finished cell (group ``study``)."""

import dataclasses
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from ..core.data.readers import FileReadError
from ..core.evaluation.sanity import reference_accuracy
from ..core.lm.numerics import Numerics
from ..core.selection import METHODS
from ..core.stages import study as stage
from ..core.stages.manifests import (
    ClustersManifest,
    ModelManifest,
    PoolManifest,
    StudyCellManifest,
    StudyReportManifest,
    StudySplitManifest,
)
from ..core.stages.models import EvalOptions
from ..core.stages.selection import selection_options
from ..core.study.cells import parse_cell_key
from ..core.study.report import FULL
from ..core.study.spec import parse_spec
from ..core.support.plots import markdown_image
from ..core.support.tables import read_table
from ..core.support.tracking import find_run
from .data import EvalFileInput
from .executors import cpu_step_tags, gpu_retry_policy, gpu_step_tags, on_gpu
from .metadata import md, sentences
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata
from .runtime import training_hooks
from .selection import SelectionConfig
from .target import EvaluationConfig, TargetConfig

# One key per cell, '<method>-<budget>-<seed>' (Dagster's multi-partitions hold two dimensions;
# a cell has three). `s2l study` adds the keys of its grid; the UI can add more.
STUDY_CELLS = dg.DynamicPartitionsDefinition(name="study_cells")
STUDY_TAG = "s2l.study_id"
JUDGES = ("auto", "validation", "test")


class StudySplitConfig(dg.Config):
    validation_share: float = Field(0.1, description="Share of each source held out.")
    max_validation_rows: int = Field(
        500, description="At most this many validation rows in all (split over the sources)."
    )
    seed: int = Field(0, description="Which rows are held out (a seeded hash of the ids).")
    validation_files: list[EvalFileInput] = Field(
        default_factory=list,
        description="Validation rows from files (one set per source) instead of carving them "
        "from the pool; pool rows with the same prompt are dropped.",
    )
    test_share: float = Field(
        0.0,
        description="> 0: also carve this share of each source as a held-out test split, read "
        "once per reported cell (choices stay on validation).",
    )
    max_test_rows: int = Field(1000, description="At most this many carved test rows in all.")
    test_files: list[EvalFileInput] = Field(
        default_factory=list,
        description="The held-out test split from your evaluation files (one set per source) "
        "instead of carving it; pool rows with the same prompt are dropped.",
    )

    def judges(self, endpoint_url: str | None) -> tuple[dict, object, object]:
        """(where each judge's rows come from, the test rule or table, the validation table)."""
        from ..core.study.split import HoldOut

        if self.test_files and self.test_share > 0:
            raise ValueError("split: give test_share or test_files, not both")
        where = {"validation": "files" if self.validation_files else "carved"}
        test = None
        if self.test_files:
            test, where["test"] = _read_judge(self.test_files, endpoint_url), "files"
        elif self.test_share > 0:
            test, where["test"] = HoldOut(self.test_share, self.max_test_rows), "carved"
        validation = (
            _read_judge(self.validation_files, endpoint_url) if self.validation_files else None
        )
        return where, test, validation


def _read_judge(files: list[EvalFileInput], endpoint_url: str | None):
    """Judge files as one table (the same reader and checks as evaluation files)."""
    from ..core.data.eval_sets import EvalFile, load_eval_file

    parts = []
    for f in files:
        spec = EvalFile(f.path, f.name, f.format, f.fields, f.task, f.answer_type,
                        f.answer_pattern)  # fmt: skip
        parts.append(load_eval_file(spec, endpoint_url)[0])
    return pl.concat(parts)


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="study",
    kinds={"polars", "parquet", "mlflow"},
    code_version="1",
    description="The study's validation split, carved per source from the training pool (never "
    "a test set), and the pool less those rows, which the cells select from.",
)
def study_split(
    context: dg.AssetExecutionContext,
    config: StudySplitConfig,
    training_pool: PoolManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[StudySplitManifest]:
    store = artifact_store.store()
    try:
        where, test, given = config.judges(artifact_store.endpoint_url)
        m, validation = stage.make_study_split(
            training_pool, config.validation_share, config.max_validation_rows, config.seed,
            store, test, given, where,
        )  # fmt: skip
    except (ValueError, FileReadError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    parent = _parent_run(context, mlflow, m, training_pool)
    m = dataclasses.replace(m, mlflow_parent_run_id=parent)
    sets = validation.group_by("eval_set", "task", "answer_type").len().sort("eval_set")
    judged = validation if m.test is None else pl.concat([validation, read_table(m.test, store)])
    shares, failing = reference_accuracy(judged)  # the scorer must accept the references
    for name in (n for n, share in shares.items() if share < 0.95):
        context.log.warning(f"{name}: references judged correct {shares[name]:.0%}: {failing}")
    _log_split(context, m)
    return dg.Output(
        m,
        data_version=dg.DataVersion(m.study_id),
        metadata={
            "study_id": m.study_id,
            "validation_rows": m.validation.rows,
            "test_rows": m.test.rows if m.test else 0,
            "judges": dg.MetadataValue.json(m.judges),
            "train_rows": m.train.rows,
            "validation_sets": md(sets),
            "reference_accuracy": dg.MetadataValue.json(shares),
            "mlflow_parent_run_id": parent,
            "lineage": dg.MetadataValue.json(m.lineage),
        },
    )


def _parent_run(context, mlflow: MlflowTracking, m: StudySplitManifest, pool: PoolManifest
                ) -> str | None:  # fmt: skip
    """The study's MLflow parent run (one per study; its cells nest under it)."""
    parent = find_run(mlflow.reachable_uri(context), mlflow.experiment, STUDY_TAG, m.study_id)
    if parent is not None:
        return parent
    with mlflow.run(context, "study", {"training_pool": pool.train.content_hash}) as mt:
        mt.set_tags({STUDY_TAG: m.study_id, "s2l.role": "study"})
        mt.log_params(
            {"validation_rows": m.validation.rows, "train_rows": m.train.rows,
             "validation_share": m.validation_share, "seed": m.seed,
             "test_rows": m.test.rows if m.test else 0,
             **{f"judge.{k}": v for k, v in m.judges.items()}}
        )  # fmt: skip
        return mt.run_id


def _log_split(context: dg.AssetExecutionContext, m: StudySplitManifest) -> None:
    tested = f", {m.test.rows} held-out test rows ({m.judges['test']})" if m.test else ""
    context.log.info(
        f"study {m.study_id}: {m.validation.rows} validation rows ({m.judges['validation']})"
        f"{tested}, {m.train.rows} to select from"
    )
    if m.judges.get("dropped_as_judged"):
        context.log.warning(
            f"{m.judges['dropped_as_judged']} pool rows share a prompt with a judge file: "
            "dropped from the pool, never trained on"
        )


class ArmConfig(dg.Config):
    """A named arm: the selector it runs and its own options (SelectionOptions' fields)."""

    method: str = Field(description="The selector, e.g. s2l.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Selector options, e.g. {min_cluster_size: 3}."
    )


class StudyCellConfig(TargetConfig):
    """The study target: the deployment's target recipe by default (the same fields); set a
    cheaper one here (fewer epochs, a smaller size) for a cheaper study. ``seed`` is the cell's."""

    nested: bool = Field(
        True, description="Subsets that nest across budgets (random, S2L): like with like."
    )
    max_new_tokens: int = EvaluationConfig.model_fields["max_new_tokens"].default
    eval_batch_size: int = EvaluationConfig.model_fields["batch_size"].default
    eval_max_length: int = EvaluationConfig.model_fields["max_length"].default
    lp_variant: str = SelectionConfig.model_fields["lp_variant"].default
    embedding_clusters: int = SelectionConfig.model_fields["embedding_clusters"].default
    min_cluster_size: int = SelectionConfig.model_fields["min_cluster_size"].default
    zip_k1: int = SelectionConfig.model_fields["zip_k1"].default
    zip_k2: int = SelectionConfig.model_fields["zip_k2"].default
    zip_k3: int = SelectionConfig.model_fields["zip_k3"].default
    arms: dict[str, ArmConfig] = Field(
        default_factory=dict,
        description="Named arms (a spec's): a cell key's first part names one of these, or a "
        "method run with the settings above.",
    )
    threads: int | None = Field(
        None,
        description="Torch threads for each cell (None: torch's default). With the two below: "
        "how the arithmetic is done, not what it computes; set them to reproduce cells trained "
        "under other settings byte for byte.",
    )
    micro_batch_tokens: int | None = Field(
        None,
        description="Padded tokens per micro-batch (0: whole batches; None: micro-batches of "
        "1,024 for pretrained models on CPU).",
    )
    loss_at_labels: bool | None = Field(
        None, description="Apply the LM head at response tokens only (None: pretrained only)."
    )
    judge: str = Field(
        "auto",
        description="What scores a cell: validation (choices), test (the numbers reported), or "
        "auto: test when the split holds one, else validation.",
    )

    def numerics(self) -> Numerics:
        return Numerics(self.threads, self.micro_batch_tokens, self.loss_at_labels)

    def judge_of(self, split: StudySplitManifest) -> str:
        if self.judge not in JUDGES:
            raise ValueError(f"judge: one of {', '.join(JUDGES)}, not {self.judge!r}")
        if self.judge == "auto":
            return "test" if split.test is not None else "validation"
        return self.judge

    def arm(self, name: str) -> tuple[str, dict]:
        """(selector, its own options) of the arm a cell key names."""
        if name in self.arms:
            return self.arms[name].method, dict(self.arms[name].options)
        if name in METHODS or name == FULL:
            return name, {}
        raise ValueError(
            f"arm {name!r} is neither a method ({', '.join(METHODS)}) nor one of the arms "
            f"configured ({', '.join(self.arms) or 'none'}): give it under study_cells' arms"
        )

    def eval_options(self) -> EvalOptions:
        return EvalOptions(self.max_new_tokens, self.eval_batch_size, self.eval_max_length)

    def selection_changes(self) -> dict:
        return {
            "nested": self.nested,
            "lp_variant": self.lp_variant,
            "embedding_clusters": self.embedding_clusters,
            "min_cluster_size": self.min_cluster_size,
            "zip_k1": self.zip_k1,
            "zip_k2": self.zip_k2,
            "zip_k3": self.zip_k3,
        }


StudyCellConfig = profiled(StudyCellConfig, "study_cells")  # the deployment's scale


@dg.asset(
    op_tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    group_name="study",
    kinds={"pytorch", "parquet"},
    code_version="1",
    pool="gpu",
    partitions_def=STUDY_CELLS,
    description="One cell of the study: its method chooses its budget of study_split's rows, "
    "the study target trains on them (with the cell's seed), and is judged on the validation "
    "split; a finished cell is reused, never run twice.",
)
@on_gpu
def study_cells(
    context: dg.AssetExecutionContext,
    config: StudyCellConfig,
    study_split: StudySplitManifest,
    proxy_checkpoints: ModelManifest,
    trajectory_clusters: ClustersManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[StudyCellManifest]:
    store, key = artifact_store.store(), context.partition_key
    try:
        spec = parse_cell_key(key)
        selector, arm_options = config.arm(spec.method)
        judge = config.judge_of(study_split)
        study_split.judge_table(judge)
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    traj = read_table(study_split.trajectories, store)
    opts = selection_options(
        trajectory_clusters, proxy_checkpoints, traj, **config.selection_changes()
    )
    run, eval_opts = config.to_run(), config.eval_options()
    recipe = stage.recipe_id(run, opts, eval_opts, judge, config.numerics())
    found = stage.cached_cell(study_split, recipe, key, store, arm_options)
    if found is not None:
        context.log.info(f"{key}: finished before (score {100 * found.score:.1f}); reused")
        return _cell_output(found, reused=True)
    upstream = {"study_split": study_split.study_id, "proxy": proxy_checkpoints.fingerprint}
    with mlflow.run(context, "study_cells", upstream, study_split.mlflow_parent_run_id) as mt:
        mt.set_tags({STUDY_TAG: study_split.study_id, "selection_method": selector,
                     "s2l.arm": spec.method, "s2l.judge": judge})  # fmt: skip
        mt.log_params(spec.params(selector, arm_options, opts.nested))
        try:
            cell = stage.run_study_cell(
                key, study_split, proxy_checkpoints, opts, run, eval_opts, store,
                artifact_store.work_path("study_cells"), training_hooks(context, mt),
                context.log.info, selector, arm_options, judge, config.numerics(),
            )  # fmt: skip
        except ValueError as exc:  # a budget too small for the method, say: this cell only
            raise dg.Failure(description=f"{key}: {exc}", allow_retries=False) from exc
        cell = dataclasses.replace(cell, mlflow_run_id=mt.run_id)
        mt.log_metrics(cell.tracked_metrics())
        mt.log_dict(cell.to_dict(), "study_cell.json")
        meta_ml = mlflow_metadata(mt)
    context.log.info(f"{key}: {cell.rows} rows, {cell.metric} {100 * cell.score:.1f}")
    out = _cell_output(cell, reused=False)
    return out.with_metadata({**out.metadata, **meta_ml})


def _cell_output(cell: StudyCellManifest, reused: bool) -> dg.Output[StudyCellManifest]:
    return dg.Output(
        cell,
        data_version=dg.DataVersion(f"{cell.study_id}-{cell.recipe}-{cell.rows_hash[:16]}"),
        metadata={
            "method": cell.selector or cell.method,
            "arm": cell.method,
            "arm_options": dg.MetadataValue.json(cell.arm_options),
            "budget": cell.budget,
            "seed": cell.seed,
            "judge": cell.judge,
            "study_id": cell.study_id,
            "recipe": cell.recipe,
            "dagster/row_count": cell.rows,
            "score": dg.MetadataValue.float(cell.score),
            "nll": dg.MetadataValue.float(cell.nll),
            "metric": cell.metric,
            "floor": dg.MetadataValue.float(cell.floor if cell.floor is not None else float("nan")),
            "per_set": dg.MetadataValue.json(cell.per_set),
            "collapsed_sets": dg.MetadataValue.json(cell.collapsed),
            "train_seconds": cell.train_seconds,
            "selection_cpu_seconds": cell.selection_cpu_seconds,
            "reused": reused,
            "predictions_path": dg.MetadataValue.path(cell.predictions_uri),
        },
    )


class StudyReportConfig(dg.Config):
    epsilon: float = Field(
        1.0, description="Points of score a budget may lose against full data and still count."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="The study's spec (s2l study --spec): its arms, endpoint and comparisons; "
        "empty: every method found, on score, against random and full data.",
    )


def finished_cells(store, study_id: str) -> list[StudyCellManifest]:
    """Every cell of this study with a record in the store: the records decide, not the
    instance, so a study resumes on an empty one and converted records count."""
    return stage.study_records(study_id, store)


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="study",
    kinds={"matplotlib", "mlflow"},
    code_version="1",
    deps=[study_cells],
    description="What the finished cells add up to: score and NLL against budget, seed-paired "
    "intervals against random and full data, the smallest budget within epsilon of full, the "
    "best method per budget, and a recommendation in words.",
)
def study_report(
    context: dg.AssetExecutionContext,
    config: StudyReportConfig,
    study_split: StudySplitManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[StudyReportManifest]:
    store = artifact_store.store()
    every = finished_cells(store, study_split.study_id)
    if not every:
        raise dg.Failure(
            description=f"study {study_split.study_id}: no finished cell yet; materialize "
            "study_cells partitions first (s2l study, or a backfill in the UI)",
            allow_retries=False,
        )
    try:
        spec = parse_spec(config.spec, "study_report's spec") if config.spec else None
        done = stage.make_study_report(
            every, spec.epsilon if spec else config.epsilon, study_split, proxy_checkpoints,
            store, spec,
        )  # fmt: skip
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    m, report = done.manifest, done.report
    if done.left_out:
        context.log.warning(f"cells of other settings left out (settings: count): {done.left_out}")
    meta_ml = {}
    if study_split.mlflow_parent_run_id:  # the study's parent run holds the report
        mt = mlflow.existing(context, study_split.mlflow_parent_run_id)
        for uri in (m.report_md, m.report_json, m.plot):
            mt.log_artifact(store.fetch(uri), "study_report")
        mt.set_tags({"recommendation": " ".join(report.recommendation)})
        mt.log_metrics({"cells": m.cells})
        meta_ml = mlflow_metadata(mt)
    for line in report.recommendation:
        context.log.info(line)
    return dg.Output(m, metadata={**report_metadata(done), **meta_ml})


def report_metadata(done: stage.Report) -> dict:
    report = done.report
    return {
        "plot": dg.MetadataValue.md(markdown_image(done.png, "score and NLL against budget")),
        "recommendation": sentences(report.recommendation),
        "report": dg.MetadataValue.md(done.text),
        "report_path": dg.MetadataValue.path(done.manifest.report_md),
        "cells": done.manifest.cells,
        "smallest_budget_within_epsilon": dg.MetadataValue.json(
            report.smallest_budget_within_epsilon
        ),
        "best_by_budget": sentences([f"{k}: {v}" for k, v in report.best_by_budget.items()]),
        "spec_id": done.manifest.spec_id,
        "endpoint": report.endpoint,
        "registered_comparisons": dg.MetadataValue.json(
            {c.name: {"difference": c.difference, "p_holm": c.p_holm} for c in report.registered}
        ),
    }
