"""Resources: where artifacts live, the manifest IO manager, the shard source, MLflow."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..core.data.shards import (
    list_shards,
)
from ..core.stages.lineage import lineage_tags
from ..core.stages.manifests import Manifest, manifest_key
from ..core.support.storage import ArtifactStore
from ..core.support.tracking import (
    Tracker,
    TrackingUnavailable,
    check_server,
    end_orphaned_runs,
    local_tracking_uri,
    mlflow_run,
)

DEFAULT_DATA_DIR = "data"


def data_dir() -> str:
    """The deployment's local folder: ``S2L_DATA_DIR``, else ``data`` in the current directory."""
    return os.environ.get("S2L_DATA_DIR") or DEFAULT_DATA_DIR


def default_artifact_root() -> str:
    return os.environ.get("S2L_ARTIFACT_ROOT") or os.path.join(data_dir(), "artifacts")


def default_work_dir() -> str:
    """Resume state follows ``S2L_DATA_DIR`` like MLflow does, so a rerun from another
    directory finds the checkpoints the killed run left."""
    return os.path.join(data_dir(), "work")


class ArtifactStoreResource(dg.ConfigurableResource):
    """A local folder (default ``data/artifacts``) or an ``s3://bucket/prefix``.

    S3 credentials come from the usual AWS environment variables; ``endpoint_url`` points at an
    S3-compatible server (MinIO, moto) and is normally set through ``dg.EnvVar``.
    """

    root: str = os.path.join(DEFAULT_DATA_DIR, "artifacts")
    endpoint_url: str | None = None
    work_dir: str = os.path.join(DEFAULT_DATA_DIR, "work")  # local resume state (optimizer...)

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root, endpoint_url=self.endpoint_url)

    def work_path(self, name: str) -> Path:
        path = Path(self.work_dir).expanduser().resolve() / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores every output (an asset's manifest, an op's small dict) as JSON; no pickles."""

    artifact_store: ArtifactStoreResource

    @staticmethod
    def _asset_key(asset_key: dg.AssetKey, partition: str | None) -> str:
        return manifest_key("/".join(asset_key.path), partition)

    @staticmethod
    def _op_key(identifier: list[str]) -> str:
        return "_ops/" + "/".join(identifier) + ".json"

    def handle_output(self, context: dg.OutputContext, obj: Manifest | dict | None) -> None:
        if obj is None:
            return
        if isinstance(obj, Manifest):
            obj = obj.to_dict()
        if context.has_asset_key:
            # The asset's own partition, not the run's: an unpartitioned asset in a run for
            # partition 'selected' is still stored (and later loaded) as unpartitioned.
            partition = context.asset_partition_key if context.has_asset_partitions else None
            key = self._asset_key(context.asset_key, partition)
        else:
            key = self._op_key(context.get_identifier())
        uri = self.artifact_store.store().write_text(key, json.dumps(obj, indent=2, sort_keys=True))
        if context.has_asset_key:
            context.add_output_metadata({"manifest": dg.MetadataValue.path(uri)})

    def load_input(self, context: dg.InputContext) -> Manifest | dict:
        if context.has_asset_key:
            partition = context.asset_partition_key if context.has_asset_partitions else None
            key = self._asset_key(context.asset_key, partition)
            what = context.asset_key.to_user_string()
        else:
            key = self._op_key(context.upstream_output.get_identifier())
            what = f"output of step {context.upstream_output.step_key}"
        store = self.artifact_store.store()
        if not store.exists(key):
            raise dg.Failure(f"no stored {what} at {store.uri(key)}: materialize it first")
        data = json.loads(store.read_text(key))
        kind = context.dagster_type.typing_type  # the input's annotation, e.g. ModelManifest
        if typing.get_origin(kind) is list:  # a fan-in (list[ScoredUnit]): loaded one by one
            [kind] = typing.get_args(kind)
        plain_class = typing.get_origin(kind) is None and isinstance(kind, type)
        return kind.from_dict(data) if plain_class and issubclass(kind, Manifest) else data


class MlflowTracking(dg.ConfigurableResource):
    """Wraps ``MlflowClient``; the store is a local SQLite file unless ``tracking_uri`` is set."""

    tracking_uri: str | None = Field(
        None, description="e.g. http://mlflow:5000; empty: sqlite under data/mlflow/."
    )
    experiment: str = "s2l_pipeline"
    on_unreachable: str = Field(
        "fail",
        description="'fail': the asset fails with a clear message; 'local': warn and "
        "log to the local SQLite store instead.",
    )

    def local_uri(self) -> str:
        return local_tracking_uri(data_dir())

    def resolved_uri(self) -> str:
        return self.tracking_uri or self.local_uri()

    def reachable_uri(self, context) -> str:
        """The store to log to now: the server if it answers, else per ``on_unreachable``."""
        uri = self.resolved_uri()
        try:
            check_server(uri)
            return uri
        except TrackingUnavailable as exc:
            if self.on_unreachable != "local":
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            context.log.warning(f"{exc}; logging to {self.local_uri()} instead")
            return self.local_uri()

    def end_orphaned_runs(self, dagster_run_id: str) -> list[str]:
        """Mark KILLED this Dagster run's MLflow runs left RUNNING by a killed process."""
        try:
            check_server(self.resolved_uri())
        except TrackingUnavailable:
            return []
        return end_orphaned_runs(
            self.resolved_uri(), self.experiment, "dagster.run_id", dagster_run_id
        )

    @contextmanager
    def run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        asset: str,
        upstream_versions: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[Tracker]:
        """An MLflow run for this step (nested under ``parent_run_id`` when given)."""
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": asset,
            "dagster.job": context.run.job_name,
        }
        if context.has_partition_key:
            tags["dagster.partition"] = context.partition_key
        for name, version in (upstream_versions or {}).items():
            tags[f"upstream.{name}.data_version"] = version
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        uri = self.reachable_uri(context)
        with mlflow_run(uri, self.experiment, f"{asset}-{context.run.run_id[:8]}", tags) as tracker:
            yield tracker

    def existing(self, context, run_id: str) -> Tracker:
        """A run made earlier (a study's parent run), to add to."""
        from mlflow.tracking import MlflowClient

        uri = self.reachable_uri(context)
        client = MlflowClient(tracking_uri=uri)
        return Tracker(client, run_id, client.get_run(run_id).info.experiment_id, uri)


def log_lineage(tracker: Tracker, lineage: dict) -> None:
    """The chain a subset, target or evaluation was made from, on its MLflow run: the short
    identifiers as tags (searchable) and the whole record as lineage.json."""
    tracker.set_tags(lineage_tags(lineage))
    tracker.log_dict(lineage, "lineage.json")


def mlflow_metadata(tracker: Tracker) -> dict[str, dg.MetadataValue]:
    meta = {
        "mlflow_run_id": dg.MetadataValue.text(tracker.run_id),
        "mlflow_tracking_uri": dg.MetadataValue.text(tracker.tracking_uri),
    }
    if tracker.url:
        meta["mlflow_run"] = dg.MetadataValue.url(tracker.url)
    return meta


def default_shard_root() -> str:
    return os.environ.get("S2L_SHARD_ROOT", os.path.join("data", "shards"))


class ShardSourceResource(dg.ConfigurableResource):
    """The folder or s3:// prefix new data lands in, one JSONL/JSON/Parquet file per shard."""

    root: str = Field(default_factory=default_shard_root)
    endpoint_url: str | None = None
    max_rejected_share: float = Field(
        0.01, description="A shard with more rejected rows than this share is refused whole."
    )

    def uri_of(self, key: str) -> str:
        shards = list_shards(self.root, self.endpoint_url)
        if key not in shards:
            raise dg.Failure(f"shard {key!r} is no longer under {self.root}", allow_retries=False)
        return shards[key]
