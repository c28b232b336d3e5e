"""Resources: where artifacts live, and an IO manager passing small JSON manifests between assets.

Big things (tables, checkpoints) never travel through an IO manager: an asset writes them to the
artifact store and returns a manifest of uris and content hashes, which downstream assets read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from ..core.support.storage import ArtifactStore

DEFAULT_DATA_DIR = "data"


def default_artifact_root() -> str:
    return os.environ.get("S2L_ARTIFACT_ROOT", os.path.join(DEFAULT_DATA_DIR, "artifacts"))


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


def manifest_key(asset: str, partition: str | None = None) -> str:
    return f"_manifests/{asset}/{partition or '__unpartitioned__'}.json"


def read_manifest(store: ArtifactStore, asset: str, partition: str | None = None) -> dict | None:
    """An asset's stored manifest, for assets that read upstream partitions by listing them."""
    key = manifest_key(asset, partition)
    return json.loads(store.read_text(key)) if store.exists(key) else None


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores every output (an asset's manifest, an op's small dict) as JSON; no pickles."""

    artifact_store: ArtifactStoreResource

    @staticmethod
    def _asset_key(asset_key: dg.AssetKey, partition: str | None) -> str:
        return manifest_key("/".join(asset_key.path), partition)

    @staticmethod
    def _op_key(identifier: list[str]) -> str:
        return "_ops/" + "/".join(identifier) + ".json"

    def handle_output(self, context: dg.OutputContext, obj: dict | list | None) -> None:
        if obj is None:
            return
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

    def load_input(self, context: dg.InputContext) -> dict | list:
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
        return json.loads(store.read_text(key))
