"""The check that runs before the proxy trains: what this run's settings ask of its data."""

import dagster as dg

from ..core.stages.manifests import RawDatasetManifest, ShardManifest, read_manifest
from ..core.stages.preflight import check_inputs
from .check_groups import selected_results
from .data import EvalSetsConfig, materialized_shards, rows_valid
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


def _planned(context: dg.AssetCheckExecutionContext) -> set[str]:
    """The assets this run materializes: the budget and the evaluation files are checked only
    when it selects and evaluates (a study's run does neither)."""
    keys = context.op_execution_context.job_def.asset_layer.executable_asset_keys
    return {k.to_user_string() for k in keys}


def inputs_fit(
    context: dg.AssetCheckExecutionContext, raw_dataset: RawDatasetManifest, store
) -> dg.AssetCheckResult:
    """What this run's settings ask of the data, before the proxy trains."""
    run_config = context.run.run_config or {}
    proxy = _config(run_config, "proxy_checkpoints", ProxyConfig)
    selection = _config(run_config, "selected_subset", SelectionConfig)
    evals = _config(run_config, "eval_sets", EvalSetsConfig).options()
    scoring = _config(run_config, "loss_trajectories.plan_scoring", ScoringConfig).options()
    planned = _planned(context)
    if "selected_subset" not in planned:  # the study's run: no budget, its own validation
        selection = None
    if "eval_sets" not in planned:
        evals = None
    keys = materialized_shards(context.instance) if proxy.include_shards else []
    shards = {k: read_manifest(store, ShardManifest, "data_shard", k) for k in keys}
    budget = selection.budget if selection else None
    found = check_inputs(raw_dataset, shards, budget, evals, proxy.to_run(), scoring, store)
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
        else f"budget {budget} of {found.pool_rows} rows, {len(evals.files) if evals else 0} "
        f"evaluation files readable, {found.unscorable} rows without a response token within "
        f"max_length {found.max_length}",
        metadata={
            "pool_rows": found.pool_rows,
            "budget": budget or "",
            "eval_files": len(evals.files) if evals else 0,
            "rows_without_response_tokens": found.unscorable,
            "max_length": found.max_length,
            "problems": len(found.problems),
        },
    )


RAW_DATASET_CHECKS = [
    dg.AssetCheckSpec(
        "raw_dataset_rows_valid",
        asset="raw_dataset",
        blocking=True,
        description="Every example_id present and unique; no empty prompt or response.",
    ),
    dg.AssetCheckSpec(
        "inputs_fit_the_run",
        asset="raw_dataset",
        blocking=True,
        description="Before the proxy trains: this run's budget fits the pool, every evaluation "
        "file exists and parses, and few enough prompts fill max_length (blocking).",
    ),
]


@dg.multi_asset_check(specs=RAW_DATASET_CHECKS, can_subset=True, op_tags=cpu_step_tags())
def raw_dataset_checks(
    context: dg.AssetCheckExecutionContext,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
):
    """The training table's checks, both blocking, in one step (check_groups.py)."""
    store = artifact_store.store()
    yield from selected_results(
        context,
        "raw_dataset",
        {
            "raw_dataset_rows_valid": lambda: rows_valid(raw_dataset, store),
            "inputs_fit_the_run": lambda: inputs_fit(context, raw_dataset, store),
        },
    )
