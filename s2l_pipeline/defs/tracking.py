"""MLflow as a Dagster resource: one MLflow run per materialization, tagged with its lineage."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from ..core.support.tracking import (
    Tracker,
    TrackingUnavailable,
    check_server,
    end_orphaned_runs,
    local_tracking_uri,
    mlflow_run,
)
from .resources import DEFAULT_DATA_DIR


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
        return local_tracking_uri(os.environ.get("S2L_DATA_DIR", DEFAULT_DATA_DIR))

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
        uri = self.reachable_uri(context)
        with mlflow_run(uri, self.experiment, f"{asset}-{context.run.run_id[:8]}", tags) as tracker:
            yield tracker


def mlflow_metadata(tracker: Tracker) -> dict[str, dg.MetadataValue]:
    meta = {
        "mlflow_run_id": dg.MetadataValue.text(tracker.run_id),
        "mlflow_tracking_uri": dg.MetadataValue.text(tracker.tracking_uri),
    }
    if tracker.url:
        meta["mlflow_run"] = dg.MetadataValue.url(tracker.url)
    return meta
