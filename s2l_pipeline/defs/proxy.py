"""The proxy model: trained on the whole dataset, with checkpoints kept along the way."""

import dataclasses

import dagster as dg
from pydantic import Field

from ..core.lm.fit import ModelSpec, TrainRun
from ..core.lm.train_config import CheckpointSchedule
from ..core.stages.manifests import ModelManifest, RawDatasetManifest, ShardManifest, read_manifest
from ..core.stages.models import proxy_training_rows, train_proxy
from .automation import RetrainPolicy
from .data import data_shard, materialized_shards
from .executors import gpu_retry_policy, gpu_step_tags, on_gpu
from .lm_config import LMTrainingConfig
from .metadata import model_metadata, run_params, training_loss_plot
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata
from .runtime import training_hooks


class ProxyConfig(LMTrainingConfig):
    size: str = Field(ModelSpec.size, description="Embedded size: proxy-tiny, proxy, proxy-large.")
    vocab_size: int = Field(ModelSpec.vocab_size, description="Embedded BPE vocabulary size.")
    num_checkpoints: int = Field(
        CheckpointSchedule.count, description="Evenly spaced checkpoints (plus step 0)."
    )
    checkpoint_every: int | None = Field(
        None, description="Or a checkpoint every N steps (the paper: 500); overrides the count."
    )
    include_shards: bool = Field(
        True,
        description="Train on raw_dataset plus every shard materialized so far. The proxy is "
        "retrained only by policy (proxy_retrain_sensor / proxy_retrain_schedule).",
    )

    def to_run(self) -> TrainRun:
        return TrainRun(
            model=ModelSpec(self.model, self.size, self.vocab_size, self.seed),
            train=self.train_config(),
            schedule=CheckpointSchedule(count=self.num_checkpoints, every=self.checkpoint_every),
        )


ProxyConfig = profiled(ProxyConfig, "proxy_checkpoints")  # the deployment's scale


@dg.asset(
    op_tags=gpu_step_tags(),
    retry_policy=gpu_retry_policy(),
    group_name="proxy",
    kinds={"pytorch", "safetensors"},
    code_version="2",
    deps=[data_shard],
    pool="gpu",
    description="The small proxy LM trained on the whole raw_dataset (loss on response tokens "
    "only), with its checkpoints as safetensors folders; resumes after an interruption.",
)
@on_gpu
def proxy_checkpoints(
    context: dg.AssetExecutionContext,
    config: ProxyConfig,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
    mlflow: MlflowTracking,
    retrain_policy: RetrainPolicy,
) -> dg.Output[ModelManifest]:
    store = artifact_store.store()
    keys = materialized_shards(context.instance) if config.include_shards else []
    shards = {k: m for k in keys if (m := read_manifest(store, ShardManifest, "data_shard", k))}
    rows = proxy_training_rows(raw_dataset, shards, store)
    run = config.to_run()
    with mlflow.run(
        context, "proxy_checkpoints", {"raw_dataset": raw_dataset.train.content_hash}
    ) as mt:
        mt.log_params({**run_params(run, rows.rows.height), "vocab_size": run.model.vocab_size})
        trained = train_proxy(
            rows, run, store, artifact_store.work_path("proxy"), training_hooks(context, mt)
        )
        manifest = dataclasses.replace(trained, mlflow_run_id=mt.run_id)
        mt.log_dict(manifest.to_dict(), "proxy_manifest.json")
        meta_ml = mlflow_metadata(mt)
    context.log.info(
        f"{len(manifest.checkpoints)} checkpoints at steps {[c.step for c in manifest.checkpoints]}"
    )
    version = manifest.fingerprint + ":" + manifest.final.sha256[:16]
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(version),
        metadata={
            **model_metadata(manifest),
            "trained_on": dg.MetadataValue.json(manifest.trained_on.to_dict()),
            "retrain_policy": dg.MetadataValue.json(retrain_policy.describe()),
            **training_loss_plot(manifest.loss_history, "Proxy training loss"),
            **meta_ml,
        },
    )
