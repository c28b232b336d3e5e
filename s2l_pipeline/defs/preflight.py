"""The check that runs before the proxy trains: what this run's settings ask of its data."""

import dagster as dg

from ..core.stages.manifests import RawDatasetManifest, ShardManifest, read_manifest
from ..core.stages.preflight import check_inputs
from .data import EvalSetsConfig, materialized_shards
from .executors import cpu_step_tags
from .proxy import ProxyConfig
from .resources import ArtifactStoreResource
from .selection import SelectionConfig
from .trajectories import ScoringConfig


def _config(run_config: dict, key: str, cls: type):
    """The config an asset (``asset`` or ``asset.op``) gets in this run: the run's values over
    the deployment's defaults, as Dagster will give it."""
    node = run_config.get("ops", {})
    asset, _, op = key.partition(".")
    node = node.get(asset, {})
    if op:
        node = node.get("ops", {}).get(op, {})
    return cls(**(node.get("config") or {}))


@dg.asset_check(
    op_tags=cpu_step_tags(),
    asset="raw_dataset",
    blocking=True,
    description="Before the proxy trains: this run's budget fits the pool, every evaluation "
    "file exists and parses, and few enough prompts fill max_length (blocking).",
)
def inputs_fit_the_run(
    context: dg.AssetCheckExecutionContext,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.AssetCheckResult:
    store = artifact_store.store()
    run_config = context.run.run_config or {}
    proxy = _config(run_config, "proxy_checkpoints", ProxyConfig)
    selection = _config(run_config, "selected_subset", SelectionConfig)
    evals = _config(run_config, "eval_sets", EvalSetsConfig).options()
    scoring = _config(run_config, "loss_trajectories.plan_scoring", ScoringConfig).options()
    keys = materialized_shards(context.instance) if proxy.include_shards else []
    shards = {k: read_manifest(store, ShardManifest, "data_shard", k) for k in keys}
    found = check_inputs(
        raw_dataset, shards, selection.budget, evals, proxy.to_run(), scoring, store
    )
    if found.unscorable:
        context.log.warning(
            f"{found.unscorable} of {raw_dataset.train.rows} rows have no response token within "
            f"max_length {found.max_length}"
        )
    return dg.AssetCheckResult(
        passed=not found.problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=" | ".join(found.problems)
        if found.problems
        else f"budget {selection.budget} of {found.pool_rows} rows, {len(evals.files)} "
        f"evaluation files readable, {found.unscorable} rows without a response token within "
        f"max_length {found.max_length}",
        metadata={
            "pool_rows": found.pool_rows,
            "budget": selection.budget,
            "eval_files": len(evals.files),
            "rows_without_response_tokens": found.unscorable,
            "max_length": found.max_length,
            "problems": len(found.problems),
        },
    )
