"""Asset checks guarding the data assets before anything trains on them."""

import dagster as dg

from ..core.checks import Finding, check_contamination, check_training_table
from ..core.support.tables import TableRef, read_table
from .resources import ArtifactStoreResource


def check_result(finding: Finding, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=severity,
        description=finding.summary,
        metadata={k: dg.MetadataValue.int(v) for k, v in finding.counts.items()},
    )


@dg.asset_check(
    asset="raw_dataset",
    blocking=True,
    description="Every example_id present and unique; no empty prompt or response.",
)
def raw_dataset_rows_valid(
    raw_dataset: dict, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    train = read_table(TableRef.from_dict(raw_dataset["train"]), artifact_store.store())
    return check_result(check_training_table(train), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(
    asset="eval_sets",
    additional_ins={"raw_dataset": dg.AssetIn()},
    description="No evaluation prompt appears verbatim in the training table (warns).",
)
def eval_sets_not_in_training(
    eval_sets: dict, raw_dataset: dict, artifact_store: ArtifactStoreResource
) -> dg.AssetCheckResult:
    store = artifact_store.store()
    train = read_table(TableRef.from_dict(raw_dataset["train"]), store)
    evals = read_table(TableRef.from_dict(eval_sets["eval"]), store)
    return check_result(check_contamination(train, evals), dg.AssetCheckSeverity.WARN)
