"""MLflow as a Dagster resource: one MLflow run per materialization, tagged with its lineage."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from ..core.tracking import Tracker, local_tracking_uri, mlflow_run
from .resources import DEFAULT_DATA_DIR


class MlflowTracking(dg.ConfigurableResource):
    """Wraps ``MlflowClient``; the store is a local SQLite file unless ``tracking_uri`` is set."""

    tracking_uri: str | None = Field(
        None, description="e.g. http://mlflow:5000; empty: sqlite under data/mlflow/."
    )
    experiment: str = "s2l_pipeline"

    def resolved_uri(self) -> str:
        return self.tracking_uri or local_tracking_uri(
            os.environ.get("S2L_DATA_DIR", DEFAULT_DATA_DIR)
        )

    @contextmanager
    def run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        asset: str,
        upstream_versions: Mapping[str, str] | None = None,
    ) -> Iterator[Tracker]:
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": asset,
            "dagster.job": context.run.job_name,
        }
        if context.has_partition_key:
            tags["dagster.partition"] = context.partition_key
        for name, version in (upstream_versions or {}).items():
            tags[f"upstream.{name}.data_version"] = version
        with mlflow_run(
            self.resolved_uri(), self.experiment, f"{asset}-{context.run.run_id[:8]}", tags
        ) as tracker:
            yield tracker


def mlflow_metadata(tracker: Tracker) -> dict[str, dg.MetadataValue]:
    meta = {
        "mlflow_run_id": dg.MetadataValue.text(tracker.run_id),
        "mlflow_tracking_uri": dg.MetadataValue.text(tracker.tracking_uri),
    }
    if tracker.url:
        meta["mlflow_run"] = dg.MetadataValue.url(tracker.url)
    return meta
