"""Checks on the trajectory table: complete and finite (blocking), and the proxy learned (warn)."""

import dagster as dg

from ..core.checks import (
    check_loss_decreases,
    check_trajectory_coverage,
    check_trajectory_finite,
)
from ..core.support.tables import TableRef, read_table
from ..core.trajectories import loss_columns
from .data_checks import check_result
from .resources import ArtifactStoreResource


def _load(manifest: dict, artifact_store: ArtifactStoreResource):
    return read_table(TableRef.from_dict(manifest["trajectories"]), artifact_store.store())


@dg.asset_check(
    asset="loss_trajectories",
    blocking=True,
    additional_ins={"raw_dataset": dg.AssetIn()},
    description="Every example_id of raw_dataset appears exactly once.",
)
def trajectories_cover_dataset(
    loss_trajectories: dict, raw_dataset: dict, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    train = read_table(TableRef.from_dict(raw_dataset["train"]), artifact_store.store())
    finding = check_trajectory_coverage(
        train["example_id"], _load(loss_trajectories, artifact_store)
    )
    return check_result(finding, dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset="loss_trajectories",
    blocking=True,
    description="No NaN or inf loss outside rows flagged truncated.",
)
def trajectories_finite(
    loss_trajectories: dict, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    traj = _load(loss_trajectories, artifact_store)
    return check_result(
        check_trajectory_finite(traj, loss_columns(traj)), dg.AssetCheckSeverity.ERROR
    )


@dg.asset_check(
    asset="loss_trajectories",
    description="Mean loss falls from the first to the last checkpoint (warns if not).",
)
def trajectories_loss_decreases(
    loss_trajectories: dict, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    traj = _load(loss_trajectories, artifact_store)
    return check_result(check_loss_decreases(traj, loss_columns(traj)), dg.AssetCheckSeverity.WARN)
