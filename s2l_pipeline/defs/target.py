"""The target model fine-tuned on a training set, and its evaluation."""

import dataclasses

import dagster as dg
import polars as pl
from pydantic import Field

from ..core.data.eval_sets import first_rows_per_set
from ..core.evaluation.model_eval import evaluate_checkpoint, headline, metric_by_set
from ..core.evaluation.sanity import answer_floor, modal_answers, prediction_modes
from ..core.lm.fit import ModelSpec, TrainRun, train_model
from ..core.lm.trainer import CheckpointSchedule
from ..core.manifests import (
    EvalSetsManifest,
    EvaluationManifest,
    ModelManifest,
    PoolManifest,
    SubsetManifest,
)
from ..core.selection import usable_rows
from ..core.selection.random_sample import training_set_rows
from ..core.support.hashing import table_hash
from ..core.support.lineage import evaluation_lineage, lineage_tags, target_lineage
from ..core.support.tables import read_table, write_table
from .automation import REFRESH
from .executors import cpu_step_tags, gpu_retry_policy, gpu_step_tags, on_gpu
from .lm_config import LMTrainingConfig
from .metadata import md, preview, training_loss_plot, training_order_metadata
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata
from .runtime import training_hooks

TRAINING_SETS = dg.StaticPartitionsDefinition(["selected", "random", "full"])


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
) -> dg.Output[ModelManifest]:
    store = artifact_store.store()
    partition = context.partition_key
    data = read_table(training_pool.train, store)
    subset = read_table(selected_subset.subset, store)
    usable = usable_rows(read_table(training_pool.trajectories, store))["example_id"]
    rows = training_set_rows(
        partition, data, subset, selected_subset.budget, selected_subset.seed, usable
    )
    rows_hash = table_hash(rows)
    tokenizer_dir = store.fetch_dir(proxy_checkpoints.checkpoints[0].uri)
    run = config.to_run()
    upstream = {
        "training_pool": training_pool.train.content_hash,
        "selected_subset": selected_subset.subset.content_hash,
        "proxy_checkpoints": proxy_checkpoints.fingerprint,
        "training_rows": rows_hash,
    }
    with mlflow.run(context, "target_model", upstream) as mt:
        mt.set_tags({"training_set": partition, "selection_method": selected_subset.method})
        mt.log_params(
            {
                **run.train.to_dict(),
                "model": run.model.name,
                "size": run.model.size,
                "lora_r": run.lora_r,
                "training_set": partition,
                "n_examples": rows.height,
                "selection_method": selected_subset.method,
            }
        )
        ids_path = write_table(
            rows.select("example_id"), store, f"target_model/training_ids/{rows_hash[:16]}.parquet"
        ).uri
        trained = train_model(
            "target_model",
            rows,
            rows_hash,
            run,
            store,
            artifact_store.work_path("target"),
            hooks=training_hooks(context, mt),
            tokenizer_dir=tokenizer_dir if run.model.name == "embedded" else None,
        )
        mt.log_dict(trained, "target_manifest.json")
        model = ModelManifest.from_dict(trained)
        name = run.model.name if run.model.name != "embedded" else run.model.size
        lineage = target_lineage(selected_subset, partition, rows.height, rows_hash, name, model)
        mt.set_tags(lineage_tags(lineage))
        mt.log_dict(lineage, "lineage.json")
        manifest = dataclasses.replace(
            model,
            lineage=lineage,
            training_set=partition,
            training_rows_hash=rows_hash,
            training_ids=ids_path,
            mlflow_run_id=mt.run_id,
            selection_method=selected_subset.method,
            modal_answers=modal_answers(rows),
        )
        meta_ml = mlflow_metadata(mt)
    final = manifest.final
    context.log.info(f"{partition}: trained on {rows.height} rows; final {final.uri}")
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(final.sha256[:32]),
        metadata={
            "training_set": partition,
            "training_rows": rows.height,
            **training_loss_plot(manifest.loss_history, f"Target training loss ({partition})"),
            **training_order_metadata(manifest.order),
            "n_parameters": manifest.n_parameters,
            "final_checkpoint": dg.MetadataValue.path(final.uri),
            "checkpoint_sha256": final.sha256,
            "train_config": dg.MetadataValue.json(manifest.train),
            "lineage": dg.MetadataValue.json(manifest.lineage),
            **meta_ml,
        },
    )


class EvaluationConfig(dg.Config):
    max_new_tokens: int = Field(16, description="Generation bound (GSM8K/MATH want 256-512).")
    batch_size: int = 64
    max_length: int = Field(256, description="Tokens per row when scoring reference NLL.")
    max_rows_per_set: int | None = Field(
        None, description="Evaluate at most this many rows of each set (first ones); empty: all."
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
    target_model: ModelManifest,
    eval_sets: EvalSetsManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
) -> dg.Output[EvaluationManifest]:
    store = artifact_store.store()
    table = read_table(eval_sets.eval, store)
    table = first_rows_per_set(table, config.max_rows_per_set)
    final = target_model.final
    preds, metrics = evaluate_checkpoint(
        final.uri,
        store,
        table,
        config.max_new_tokens,
        config.max_length,
        config.batch_size,
        progress=context.log.info,
    )
    metrics = metrics.join(
        answer_floor(table, target_model.modal_answers), on="eval_set", how="left"
    )
    heads = headline(metrics)
    metric_names = metric_by_set(metrics)
    version = table_hash(preds)
    prefix = f"target_evaluation/{version[:16]}"
    preds_ref = write_table(preds, store, f"{prefix}/predictions.parquet", version)
    metrics_ref = write_table(metrics, store, f"{prefix}/metrics.parquet")
    upstream = {
        "target_model": final.sha256[:32],
        "eval_sets": eval_sets.eval.content_hash,
    }
    with mlflow.run(context, "target_evaluation", upstream) as mt:
        mt.set_tags(
            {
                "training_set": context.partition_key,
                "selection_method": target_model.selection_method or "",
            }
        )
        mt.log_metrics(heads)
        mt.log_metrics(
            {
                f"{r['eval_set']}.{k}": r[k]
                for r in metrics.iter_rows(named=True)
                for k in ("accuracy", "mean_nll", "rougeL", "bleu", "embedding_similarity")
                if r.get(k) is not None
            }
        )
        mt.log_artifact(store.fetch(metrics_ref.uri), "evaluation")
        mt.log_artifact(store.fetch(preds_ref.uri), "evaluation")
        lineage = evaluation_lineage(target_model, eval_sets.eval.content_hash, version)
        mt.log_dict(lineage, "lineage.json")
        meta_ml = mlflow_metadata(mt)
    context.log.info(", ".join(f"{k}={v:.4f}" for k, v in heads.items()))
    return dg.Output(
        EvaluationManifest(
            predictions=preds_ref,
            metrics=metrics_ref,
            lineage=lineage,
            headline=heads,
            metric_by_set=metric_names,
        ),
        data_version=dg.DataVersion(version),
        metadata={
            **{k: dg.MetadataValue.float(v) for k, v in heads.items()},
            "metric_by_set": dg.MetadataValue.json(metric_names),
            "per_set": md(metrics.with_columns(pl.selectors.float().round(4))),
            "example_predictions": preview(
                preds.select("eval_set", "prompt", "answer", "prediction", "correct", "nll"), 10
            ),
            "predictions_path": dg.MetadataValue.path(preds_ref.uri),
            "lineage": dg.MetadataValue.json(lineage),
            **meta_ml,
        },
    )


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
