"""The proxy model: trained on the whole dataset, with checkpoints kept along the way."""

import dagster as dg
from pydantic import Field

from ..core.data.shards import training_rows
from ..core.lm.fit import ModelSpec, TrainRun, train_proxy
from ..core.lm.trainer import CheckpointSchedule
from ..core.manifests import ModelManifest, RawDatasetManifest, ShardManifest
from ..core.support.tables import read_table
from .automation import RetrainPolicy
from .data import data_shard, materialized_shards
from .executors import gpu_retry_policy, gpu_step_tags, on_gpu
from .lm_config import LMTrainingConfig
from .metadata import training_loss_plot, training_order_metadata
from .profiles import profiled
from .resources import ArtifactStoreResource, MlflowTracking, mlflow_metadata, read_manifest
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
    train_ref = raw_dataset.train
    shards = {}
    for key in materialized_shards(context.instance) if config.include_shards else []:
        m = read_manifest(store, ShardManifest, "data_shard", key)
        if m is not None:
            ref = m.train
            shards[key] = (read_table(ref, store), ref.content_hash)
    train, data_hash, trained_on = training_rows(
        read_table(train_ref, store), train_ref.content_hash, shards
    )
    run = config.to_run()
    with mlflow.run(context, "proxy_checkpoints", {"raw_dataset": train_ref.content_hash}) as mt:
        mt.log_params(
            {
                **run.train.to_dict(),
                "model": run.model.name,
                "size": run.model.size,
                "vocab_size": run.model.vocab_size,
                "n_examples": train.height,
            }
        )
        trained = train_proxy(
            train,
            data_hash,
            run,
            store,
            artifact_store.work_path("proxy"),
            training_hooks(context, mt),
        )
        mt.log_dict(trained, "proxy_manifest.json")
        manifest = ModelManifest.from_dict(
            {**trained, "mlflow_run_id": mt.run_id, "trained_on": trained_on}
        )
        mlflow_meta = mlflow_metadata(mt)
    steps = [c.step for c in manifest.checkpoints]
    context.log.info(f"{len(steps)} checkpoints at steps {steps}")
    table = "| step | uri | sha256 |\n|---|---|---|\n" + "".join(
        f"| {c.step} | {c.uri} | {c.sha256[:16]} |\n" for c in manifest.checkpoints
    )
    version = manifest.fingerprint + ":" + manifest.final.sha256[:16]
    return dg.Output(
        manifest,
        data_version=dg.DataVersion(version),
        metadata={
            "checkpoints": dg.MetadataValue.md(table),
            "num_checkpoints": len(steps),
            "n_parameters": manifest.n_parameters,
            "n_examples": manifest.n_examples,
            "n_truncated": manifest.n_truncated,
            "train_tokens": manifest.train_tokens,
            "train_config": dg.MetadataValue.json(manifest.train),
            "trained_on": dg.MetadataValue.json(trained_on),
            "retrain_policy": dg.MetadataValue.json(retrain_policy.describe()),
            **training_loss_plot(manifest.loss_history, "Proxy training loss"),
            **training_order_metadata(manifest.order),
            **mlflow_meta,
        },
    )
