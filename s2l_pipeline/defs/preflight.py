"""The check that runs before the proxy trains: what this run's settings ask of its data."""

from dataclasses import replace

import dagster as dg

from ..core.manifests import RawDatasetManifest, ShardManifest
from ..core.preflight import budget_problem, eval_file_problems, unscorable_rows
from ..core.support.tables import read_table
from .data import NO_EVAL_SETS, EvalSetsConfig, materialized_shards
from .executors import cpu_step_tags
from .proxy import ProxyConfig
from .resources import ArtifactStoreResource, read_manifest
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
    evals = _config(run_config, "eval_sets", EvalSetsConfig)
    scoring = _config(run_config, "loss_trajectories.plan_scoring", ScoringConfig)

    train = read_table(raw_dataset.train, store)
    shard_rows = 0
    for key in materialized_shards(context.instance) if proxy.include_shards else []:
        m = read_manifest(store, ShardManifest, "data_shard", key)
        shard_rows += m.train.rows if m is not None else 0
    pool_rows = train.height + shard_rows
    problems = [p for p in [budget_problem(selection.budget, pool_rows)] if p]
    files = evals.eval_files()
    problems += eval_file_problems(files, store.endpoint_url, evals.max_rejected_share)
    with_ood = raw_dataset.embedded if evals.out_of_domain is None else evals.out_of_domain
    held = read_table(raw_dataset.heldout, store).height
    if not files and not held and not (with_ood and evals.ood_per_family > 0):
        problems.append(f"eval_sets: {NO_EVAL_SETS}")
    run = proxy.to_run()
    train_cfg = replace(run.train, max_length=scoring.max_length or run.train.max_length)
    n_unscorable, max_length, fit = unscorable_rows(
        train, run.model, train_cfg, scoring.max_unscorable_share
    )
    problems += [fit] if fit else []
    if n_unscorable:
        context.log.warning(
            f"{n_unscorable} of {train.height} rows have no response token within max_length "
            f"{max_length}"
        )
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=" | ".join(problems)
        if problems
        else f"budget {selection.budget} of {pool_rows} rows, {len(files)} evaluation files "
        f"readable, {n_unscorable} rows without a response token within max_length {max_length}",
        metadata={
            "pool_rows": pool_rows,
            "budget": selection.budget,
            "eval_files": len(files),
            "rows_without_response_tokens": n_unscorable,
            "max_length": max_length,
            "problems": len(problems),
        },
    )
