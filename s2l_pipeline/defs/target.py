"""The target model fine-tuned on a training set, and its evaluation."""

import dataclasses

import dagster as dg
import polars as pl
from pydantic import Field

from ..core.evaluation.model_eval import headline_in_words
from ..core.evaluation.sanity import prediction_modes
from ..core.lm.fit import ModelSpec, TrainRun
from ..core.lm.train_config import CheckpointSchedule
from ..core.stages import models as stage
from ..core.stages.manifests import (
    EvalSetsManifest,
    EvaluationManifest,
    ModelManifest,
    PoolManifest,
    SubsetManifest,
    TargetManifest,
)
from ..core.support.tables import read_table
from .automation import REFRESH
from .executors import cpu_step_tags, gpu_retry_policy, gpu_step_tags, on_gpu
from .lm_config import LMTrainingConfig
from .metadata import md, model_metadata, preview, run_params, training_loss_plot
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, log_lineage, mlflow_metadata
from .runtime import training_hooks

TRAINING_SETS = dg.StaticPartitionsDefinition(list(stage.TRAINING_SETS))


class TargetConfig(LMTrainingConfig):
    """The target's recipe; any HF model by name works, e.g. EleutherAI/pythia-410m."""

    size: str = Field("target", description="Embedded size: target, target-large.")
    epochs: float = 10.0
    num_checkpoints: int = Field(2, description="Checkpoints kept (the last is evaluated).")
    lora_r: int = Field(0, description="> 0: LoRA of this rank (peft) instead of full tuning.")
    lora_alpha: int = 16

    def to_run(self) -> TrainRun:
        return TrainRun(
            model=ModelSpec(self.model, self.size, seed=self.seed),
            train=self.train_config(),
            schedule=CheckpointSchedule(count=self.num_checkpoints),
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
        )


TargetConfig = profiled(TargetConfig, "target_model")  # the deployment's scale


@dg.asset(
    op_tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    group_name="target",
    kinds={"pytorch", "safetensors"},
    code_version="2",
    pool="gpu",
    partitions_def=TRAINING_SETS,
    automation_condition=REFRESH,
    description="The target LM fine-tuned (loss on response tokens) on the partition's training "
    "set; safetensors checkpoints in the artifact store; resumes after an interruption.",
)
@on_gpu
def target_model(
    context: dg.AssetExecutionContext,
    config: TargetConfig,
    training_pool: PoolManifest,
    selected_subset: SubsetManifest,
    proxy_checkpoints: ModelManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[TargetManifest]:
    store, partition, run = artifact_store.store(), context.partition_key, config.to_run()
    rows = stage.target_training_rows(partition, training_pool, selected_subset, store)
    upstream = {
        "training_pool": training_pool.train.content_hash,
        "selected_subset": selected_subset.subset.content_hash,
        "proxy_checkpoints": proxy_checkpoints.fingerprint,
        "training_rows": rows.data_hash,
    }
    with mlflow.run(context, "target_model", upstream) as mt:
        mt.set_tags({"training_set": partition, "selection_method": selected_subset.method})
        params = {"training_set": partition, "selection_method": selected_subset.method}
        mt.log_params({**run_params(run, rows.rows.height), **params})
        trained = stage.train_target(
            rows,
            partition,
            selected_subset,
            proxy_checkpoints,
            run,
            store,
            artifact_store.work_path("target"),
            training_hooks(context, mt),
        )
        manifest = dataclasses.replace(trained, mlflow_run_id=mt.run_id)
        mt.log_dict(manifest.to_dict(), "target_manifest.json")
        log_lineage(mt, manifest.lineage)
        meta_ml = mlflow_metadata(mt)
    context.log.info(f"{partition}: trained on {rows.rows.height} rows; final {manifest.final.uri}")
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(manifest.final.sha256[:32]),
        metadata={
            "training_set": partition,
            "training_rows": rows.rows.height,
            **training_loss_plot(manifest.loss_history, f"Target training loss ({partition})"),
            **model_metadata(manifest),
            "lineage": dg.MetadataValue.json(manifest.lineage),
            **meta_ml,
        },
    )


class EvaluationConfig(dg.Config):
    max_new_tokens: int = Field(
        stage.EvalOptions.max_new_tokens,
        description="Generation bound (GSM8K/MATH want 256-512).",
    )
    batch_size: int = stage.EvalOptions.batch_size
    max_length: int = Field(
        stage.EvalOptions.max_length, description="Tokens per row when scoring reference NLL."
    )
    max_rows_per_set: int | None = Field(
        None, description="Evaluate at most this many rows of each set (first ones); empty: all."
    )

    def options(self) -> stage.EvalOptions:
        return stage.EvalOptions(
            self.max_new_tokens, self.batch_size, self.max_length, self.max_rows_per_set
        )


EvaluationConfig = profiled(EvaluationConfig, "target_evaluation")  # the deployment's scale


@dg.asset(
    op_tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    group_name="target",
    kinds={"pytorch", "parquet"},
    code_version="2",
    pool="gpu",
    partitions_def=TRAINING_SETS,
    automation_condition=REFRESH,
    description="Accuracy per evaluation set (greedy generation; reasoning-gym scorers, "
    "math-verify), in/out-of-domain averages, reference NLL, ROUGE-L/BLEU for summaries.",
)
@on_gpu
def target_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    target_model: TargetManifest,
    eval_sets: EvalSetsManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[EvaluationManifest]:
    store = artifact_store.store()
    done = stage.evaluate_target(
        target_model, eval_sets, config.options(), store, progress=context.log.info
    )
    m = done.manifest
    upstream = {
        "target_model": target_model.final.sha256[:32],
        "eval_sets": eval_sets.eval.content_hash,
    }
    with mlflow.run(context, "target_evaluation", upstream) as mt:
        mt.set_tags(
            {
                "training_set": context.partition_key,
                "selection_method": target_model.selection_method or "",
            }
        )
        mt.log_metrics({**m.headline, **done.per_set_metrics()})
        mt.log_artifact(store.fetch(m.metrics.uri), "evaluation")
        mt.log_artifact(store.fetch(m.predictions.uri), "evaluation")
        log_lineage(mt, m.lineage)
        meta_ml = mlflow_metadata(mt)
    context.log.info(", ".join(f"{k}={v:.4f}" for k, v in m.headline.items()))
    return dg.Output(
        m,
        data_version=dg.DataVersion(m.predictions.content_hash),
        metadata={**evaluation_metadata(done), **meta_ml},
    )


def evaluation_metadata(done: stage.Evaluation) -> dict:
    m = done.manifest
    shown = ("eval_set", "prompt", "answer", "prediction", "correct", "nll")
    words = headline_in_words(m.headline)
    return {
        **({"in_words": dg.MetadataValue.md("\n".join(f"- {w}" for w in words))} if words else {}),
        **{k: dg.MetadataValue.float(v) for k, v in m.headline.items()},
        "metric_by_set": dg.MetadataValue.json(m.metric_by_set),
        "per_set": md(done.metrics.with_columns(pl.selectors.float().round(4))),
        "example_predictions": preview(done.predictions.select(*shown), 10),
        "predictions_path": dg.MetadataValue.path(m.predictions.uri),
        "lineage": dg.MetadataValue.json(m.lineage),
    }


@dg.asset_check(
    op_tags=cpu_step_tags(),
    asset="target_evaluation",
    partitions_def=TRAINING_SETS,
    description="The target does not answer one string to most prompts: warns when one "
    "prediction covers more than half of a set (a collapsed model's accuracy is its floor).",
)
def predictions_not_constant(
    target_evaluation: EvaluationManifest, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    preds = read_table(target_evaluation.predictions, artifact_store.store())
    modes = prediction_modes(preds)
    constant = modes.filter(pl.col("modal_share") > 0.5)
    worst = modes.sort("modal_share", descending=True).row(0, named=True)
    described = "; ".join(
        f"{r['eval_set']}: {r['modal_share']:.0%} answer {r['modal_prediction']!r}"
        for r in constant.iter_rows(named=True)
    )
    return dg.AssetCheckResult(
        passed=constant.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"one prediction covers more than half of {constant.height} of {modes.height} "
            f"sets: {described}"
            if constant.height
            else f"no set has one prediction for more than half its rows (at most "
            f"{worst['modal_share']:.0%}, {worst['eval_set']})"
        ),
        metadata={
            "constant_sets": constant.height,
            "max_modal_share": round(float(worst["modal_share"]), 4),
            "modal_prediction": worst["modal_prediction"],
            "modal_by_set": dg.MetadataValue.json(
                {
                    r["eval_set"]: {"prediction": r["modal_prediction"], "share": r["modal_share"]}
                    for r in modes.iter_rows(named=True)
                }
            ),
        },
    )
