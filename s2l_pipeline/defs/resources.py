"""Resources: where artifacts live, and an IO manager passing small JSON manifests between assets.

Big things (tables, checkpoints) never travel through an IO manager: an asset writes them to the
artifact store and returns a manifest of uris and content hashes, which downstream assets read.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from ..core.storage import ArtifactStore

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

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root, endpoint_url=self.endpoint_url)


class ManifestIOManager(dg.ConfigurableIOManager):
    """Stores each asset's manifest (a JSON-able dict) next to its artifacts; no pickles."""

    artifact_store: ArtifactStoreResource

    def _key(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        name = "/".join(asset_key.path)
        return f"_manifests/{name}/{partition or '__unpartitioned__'}.json"

    def handle_output(self, context: dg.OutputContext, obj: dict | None) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_partition_key else None
        key = self._key(context.asset_key, partition)
        uri = self.artifact_store.store().write_text(key, json.dumps(obj, indent=2, sort_keys=True))
        context.add_output_metadata({"manifest": dg.MetadataValue.path(uri)})

    def load_input(self, context: dg.InputContext) -> dict:
        partition = context.asset_partition_key if context.has_asset_partitions else None
        key = self._key(context.asset_key, partition)
        store = self.artifact_store.store()
        if not store.exists(key):
            raise dg.Failure(
                f"no manifest for {context.asset_key.to_user_string()} at {store.uri(key)}: "
                "materialize it first"
            )
        return json.loads(store.read_text(key))
