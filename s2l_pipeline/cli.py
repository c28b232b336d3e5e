"""The ``s2l`` command: selection outside Dagster, running the same core code as the assets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

from .core.export import EXPORT_FORMATS
from .core.selection import (
    METHODS,
    SelectionInputError,
    SelectionOptions,
    cluster_table,
    parse_budget,
)
from .core.stages.selection import choose_subset
from .defs.profiles import PROFILES
from .launch import (
    check_descriptions,
    config_mistakes,
    failures,
    fields_flag,
    heldout_without_eval,
    run_config_file,
    use_profile_and_quiet_logs,
    with_log_level,
    with_overrides,
)

# The main graph's assets in order, for `s2l run --until` (the same as defs.jobs.MAIN_ASSETS,
# named here so the command line answers --help without importing Dagster).
UNTIL_ASSETS = (
    "raw_dataset",
    "eval_sets",
    "proxy_checkpoints",
    "loss_trajectories",
    "training_pool",
    "trajectory_clusters",
    "selected_subset",
    "target_model",
    "target_evaluation",
)


def _read(path: str, what: str) -> pl.DataFrame:
    if not Path(path).exists():
        raise SelectionInputError(f"{path}: no such {what} file")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for bad files
        raise SelectionInputError(f"{path}: not a readable Parquet file ({exc})") from exc


def _steps(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(s) for s in text.split(",")) if text else None


OUT_SUFFIXES = (".parquet", ".jsonl", ".json")


def _select_data(args: argparse.Namespace) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(data, origins): a raw_dataset-shaped Parquet as it is, or the user's own file read the
    way raw_dataset reads it (so its example_ids match the trajectories')."""
    if not args.data:
        return None, None
    if args.data.endswith(".parquet") and not getattr(args, "fields", None):
        data = _read(args.data, "data")
        if {"example_id", "source"} <= set(data.columns):
            return data, None
    from .core.data.ingest import DatasetSpec, FileSource, load_dataset

    flags = fields_flag(args)
    spec = DatasetSpec(
        embedded=None,
        files=(FileSource(args.data, fields=flags.get("fields"), task=flags.get("task")),),
        max_rejected_share=1.0,
    )
    loaded = load_dataset(spec)
    return loaded.train, loaded.origins


def _write_selected(chosen: pl.DataFrame, origins: pl.DataFrame | None, out: str) -> str:
    """The selection in the format the --out extension names: the user's records when their
    file was given, else the ids."""
    from .core.export import as_table, subset_records

    suffix = Path(out).suffix
    if origins is not None:
        rows = subset_records(chosen.with_columns(source=pl.lit("")), origins)
        records = rows["record"].to_list()
        if suffix == ".jsonl":
            Path(out).write_text("".join(r + "\n" for r in records), encoding="utf-8")
        elif suffix == ".json":
            Path(out).write_text("[" + ",\n".join(records) + "]\n", encoding="utf-8")
        else:
            as_table(records).write_parquet(out)
        return "records"
    if suffix == ".jsonl":
        chosen.write_ndjson(out)
    elif suffix == ".json":
        chosen.write_json(out)
    else:
        chosen.write_parquet(out)
    return "ids"


def cmd_select(args: argparse.Namespace) -> int:
    if Path(args.out).suffix not in OUT_SUFFIXES:
        raise ValueError(
            f"--out {args.out}: unknown format {Path(args.out).suffix or '(no extension)'!r}; "
            f"name the file with one of {', '.join(OUT_SUFFIXES)}"
        )
    traj = _read(args.trajectories, "trajectories")
    data, origins = _select_data(args)
    opts = SelectionOptions(
        clusters=args.clusters,
        kmeans_iterations=args.iterations,
        max_train_points=args.max_train_points,
        stratify_by=args.stratify_by,
        steps=_steps(args.steps),
        epoch1_step=args.epoch1_step,
        lp_variant=args.lp_variant,
        embedding_clusters=args.embedding_clusters,
        knn=args.knn,
        min_cluster_size=args.min_cluster_size,
        zip_k1=args.zip_k1,
        zip_k2=args.zip_k2,
        zip_k3=args.zip_k3,
        nested=args.nested,
    )
    budget = parse_budget(args.budget)
    clusters = None
    if args.clusters_out:  # wanted whatever the method: made here, not inside the selection
        clusters, _ = cluster_table(traj, data, args.seed, opts)
        clusters.write_parquet(args.clusters_out)
    proxy = Path(args.proxy) if args.proxy else None
    chosen = choose_subset(
        args.method, traj, data, budget, args.seed, opts, clusters, None, proxy, args.max_length
    )
    wrote = _write_selected(chosen.ids, origins, args.out)
    info = {"out": args.out, "selected": chosen.ids.height, "wrote": wrote, **chosen.info}
    print(json.dumps(info, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the latest selected subset as the user's original records, with its lineage."""
    import os

    from .core.stages.export import export_subset
    from .core.support.storage import ArtifactStore
    from .defs.resources import default_artifact_root

    root = args.artifact_root or default_artifact_root()
    store = ArtifactStore(root, os.environ.get("AWS_ENDPOINT_URL"))
    done = export_subset(store, args.format, Path(args.out) if args.out else None)
    files = {"format": done.format, "rows": done.rows, "files": done.files}
    print(json.dumps({"out": str(done.out), **files}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole graph at the deployment's scale, recorded in the Dagster instance."""
    import os
    import signal

    import dagster as dg

    profile = use_profile_and_quiet_logs(args)
    from .console import failed_checks
    from .definitions import defs
    from .defs.recovery import owner_tags, sweep_dead_runs

    job = defs.resolve_job_def("s2l_job")
    run_config = with_log_level(with_overrides(run_config_file(args.config), args), args)
    carved = heldout_without_eval(run_config, args)
    if carved:
        print(f"s2l run: {carved}", file=sys.stderr)
    selection = until_selection(defs, args.until)
    if selection is not None:
        run_config = only_selected_ops(run_config, selection)
    mistakes = config_mistakes(job, run_config)
    if mistakes:  # one line each, before anything runs; no traceback
        for line in mistakes:
            print(f"s2l run: config: {line}", file=sys.stderr)
        return 2
    if not args.verbose:  # one line per step with its time, the steps' own messages under it
        from .console import step_console

        job = job.with_logger_defs({"console": step_console})
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    if instance is None:
        print(
            "DAGSTER_HOME is not set: this run will not appear in the Dagster UI", file=sys.stderr
        )
    else:
        mlflow = defs.resources["mlflow"]
        sweep_dead_runs(
            instance,
            on_dead=lambda run_id: mlflow.end_orphaned_runs(run_id),
            say=lambda text: print(text, file=sys.stderr),
        )
    # SIGTERM (timeout, systemd, kill) stops the run like Ctrl-C: steps end, the run is marked.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # The deployment's profile is in the config defaults, as for every launch; --config holds
    # only what this run changes, in the launchpad's format.
    result = job.execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=args.training_set,
        raise_on_error=False,
        tags=owner_tags(),
        asset_selection=selection,
    )
    summary: dict = {
        "run_id": result.run_id,
        "success": result.success,
        "profile": profile,
        "training_set": args.training_set,
    }
    if result.success and args.until:
        summary["until"] = args.until
        summary.update(_partial_summary(result, selection))
    elif result.success:
        raw = result.output_for_node("raw_dataset")
        evaluation = result.output_for_node("target_evaluation")
        summary["examples"] = raw.train.rows
        summary.update(evaluation.headline)
        summary["metric_by_set"] = evaluation.metric_by_set
        summary["subset"] = result.output_for_node("selected_subset").subset.uri
        from .core.evaluation.model_eval import headline_in_words

        summary["in_words"] = headline_in_words(evaluation.headline)
        for line in summary["in_words"]:
            print(f"s2l run: {line}", file=sys.stderr)
        print(
            f"s2l run: the subset is {summary['subset']}; in your own records: "
            "s2l export --out DIR [--format jsonl|parquet|hf]",
            file=sys.stderr,
        )
    summary["failed_checks"] = failed_checks(
        result.get_asset_check_evaluations(), check_descriptions(defs)
    )
    if not result.success:  # the reason first; what it held back after
        summary["failed_steps"] = failures(result)
        for step, reason in summary["failed_steps"].items():
            print(f"s2l run: step {step} failed: {reason}", file=sys.stderr)
        skipped = len(result.get_step_skipped_events())
        if skipped:
            print(f"s2l run: {skipped} later steps did not run", file=sys.stderr)
    for failed in summary["failed_checks"]:  # again at the end, where a person looks last
        print(
            f"s2l run: check {failed['check']} on {failed['asset']} failed "
            f"({failed['severity']}): {failed['found']}",
            file=sys.stderr,
        )
    print(json.dumps(summary, default=str))
    return 0 if result.success else 1


def until_selection(defs, until: str | None):
    """The main graph's assets up to ``until`` (it and what it reads); None: all of them."""
    if not until:
        return None
    import dagster as dg

    from .defs.jobs import MAIN_GRAPH

    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets(until).upstream().resolve(graph)
    return sorted(upstream & MAIN_GRAPH.resolve(graph), key=lambda k: k.to_user_string())


def only_selected_ops(run_config: dict, selection) -> dict:
    """The run config without settings for assets the run leaves out (Dagster refuses them)."""
    names = {key.path[-1] for key in selection}
    ops = {k: v for k, v in run_config.get("ops", {}).items() if k in names}
    return {**run_config, "ops": ops}


def _partial_summary(result, selection) -> dict:
    """What a run stopped early made: the pool's size and, when selected, the subset."""
    names = {key.path[-1] for key in selection}
    out: dict = {"assets": sorted(names)}
    if "raw_dataset" in names:
        out["examples"] = result.output_for_node("raw_dataset").train.rows
    if "selected_subset" in names:
        out["subset"] = result.output_for_node("selected_subset").subset.uri
        print(
            f"s2l run: the subset is {out['subset']}; in your own records: "
            "s2l export --out DIR [--format jsonl|parquet|hf]",
            file=sys.stderr,
        )
    return out


LINEAGE_ASSETS = ("selected_subset", "target_model", "target_evaluation", "training_pool")


def _asset_lineage(name: str, partition: str | None) -> tuple[dict, str]:
    """The lineage recorded by the latest materialization of an asset in the Dagster instance."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(name), asset_partitions=[partition] if partition else None
        ),
        limit=1,
    ).records
    if not records:
        where = f" partition {partition}" if partition else ""
        raise ValueError(f"{name}{where}: no materialization in the instance at DAGSTER_HOME")
    event = records[0].event_log_entry
    meta = event.asset_materialization.metadata
    if "lineage" not in meta:
        raise ValueError(f"{name}: its latest materialization records no lineage")
    header = (
        f"{name}{' [' + partition + ']' if partition else ''}: run {event.run_id}, "
        f"materialized {_time(event.timestamp)}"
    )
    return meta["lineage"].value, header


def _time(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mlflow_lineage(run_id: str, tracking_uri: str | None) -> tuple[dict, str]:
    """The lineage.json artifact of an MLflow run (selected_subset, target_model, evaluation)."""
    import os

    from mlflow.tracking import MlflowClient

    from .core.support.tracking import local_tracking_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri("data")
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        local = client.download_artifacts(run_id, "lineage.json")
    except Exception as exc:  # mlflow raises MlflowException or OSError variants
        raise ValueError(f"MLflow run {run_id} at {uri}: no lineage.json ({exc})") from exc
    lineage = json.loads(Path(local).read_text())
    asset = run.data.tags.get("dagster.asset_key", "?")
    header = (
        f"MLflow run {run_id} ({asset}, Dagster run {run.data.tags.get('dagster.run_id', '?')})"
    )
    return lineage, header


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the chain from a subset, target or evaluation back to the data and proxy."""
    from .core.support.lineage import format_lineage

    name, _, part = args.target.partition(":")
    if name in LINEAGE_ASSETS:
        lineage, header = _asset_lineage(name, args.partition or part or None)
    elif len(name) == 32 and all(c in "0123456789abcdef" for c in name):
        lineage, header = _mlflow_lineage(name, args.tracking_uri)
    else:
        raise ValueError(
            f"{args.target!r} is neither an asset ({', '.join(LINEAGE_ASSETS)}, optionally "
            "asset:partition) nor an MLflow run id (32 hex characters)"
        )
    if args.json:
        print(json.dumps(lineage, indent=1, sort_keys=True))
    else:
        print(format_lineage(lineage, header))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2l", description="SmallToLarge data selection.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("select", help="choose a subset from a loss-trajectory table")
    s.add_argument("--trajectories", required=True, help="Parquet: example_id, loss_step_<N>...")
    s.add_argument(
        "--data",
        help="the training data: your own JSONL/JSON/Parquet file (the selected rows are then "
        "written as your records), or raw_dataset's train.parquet; needed for --stratify-by "
        "and learning_percentage",
    )
    s.add_argument("--fields", help="templates mapping --data's records, as JSON (see s2l run)")
    s.add_argument("--task", choices=["math", "summarization"], help="task of --data's records")
    s.add_argument("--method", required=True, choices=sorted(METHODS))
    s.add_argument("--budget", required=True, help="a count (500) or a fraction (0.1)")
    d = SelectionOptions()  # the defaults the assets use too
    s.add_argument("--clusters", type=int, default=d.clusters, help=f"K for S2L ({d.clusters})")
    s.add_argument("--iterations", type=int, default=d.kmeans_iterations, help="K-means iterations")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--stratify-by", help="split the budget over this data column first")
    s.add_argument("--steps", help="checkpoint steps to use, e.g. 100,200,300")
    s.add_argument("--epoch1-step", type=int, help="learning_percentage: checkpoint ending epoch 1")
    s.add_argument(
        "--lp-variant",
        choices=["lp1", "lp_app"],
        default=d.lp_variant,
        help="learning_percentage: LP(1) or LP_app",
    )
    s.add_argument(
        "--embedding-clusters",
        type=int,
        default=d.embedding_clusters,
        help="learning_percentage: K of the MiniLM K-means",
    )
    s.add_argument("--knn", type=int, default=d.knn, help="facility_location: neighbours per point")
    s.add_argument(
        "--proxy",
        help="ifd: the proxy checkpoint folder that scored the trajectories (safetensors)",
    )
    s.add_argument(
        "--max-length",
        type=int,
        help="ifd: tokens per row the proxy scored (default: the model's longest)",
    )
    for k in ("k1", "k2", "k3"):
        s.add_argument(
            f"--zip-{k}",
            type=int,
            default=getattr(d, f"zip_{k}"),
            help=f"zip: stage {k[1]} size ({getattr(d, f'zip_{k}')})",
        )
    s.add_argument(
        "--min-cluster-size",
        type=int,
        default=d.min_cluster_size,
        help="s2l: skip smaller clusters, use them only for a shortfall (official code: 3)",
    )
    s.add_argument(
        "--max-train-points",
        type=int,
        default=d.max_train_points,
        help="K-means trains on all points up to this many",
    )
    s.add_argument(
        "--nested",
        action="store_true",
        help="random, s2l: subsets that nest across budgets (a learning curve's points)",
    )
    s.add_argument("--clusters-out", help="write every example's S2L cluster here (Parquet)")
    s.add_argument(
        "--out",
        required=True,
        help="where to write: .jsonl, .json or .parquet; your records with --data FILE, "
        "else example_id (and cluster)",
    )
    s.set_defaults(func=cmd_select)

    r = sub.add_parser("run", help="run the whole graph (proxy to evaluation) for a profile")
    r.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="scale of the run (default: S2L_PROFILE, else 'default')",
    )
    r.add_argument(
        "--config",
        help="YAML run config with what this run changes, as in the launchpad "
        "(e.g. ops: {proxy_checkpoints: {config: {epochs: 5}}})",
    )
    r.add_argument(
        "--data",
        action="append",
        help="a training file, folder or s3:// prefix (repeatable); replaces the embedded data",
    )
    r.add_argument("--eval", action="append", help="an evaluation file (repeatable)")
    r.add_argument(
        "--fields",
        help="templates mapping the records of the --data (and --eval) files, as JSON, e.g. "
        '\'{"prompt": "{question}\\nOptions: {options}", "response": "{rationale}", '
        '"answer": "{correct}"}\' (chat files need none; --eval-fields for --eval files of '
        "another schema)",
    )
    r.add_argument(
        "--eval-fields",
        help="templates mapping the --eval files' records, as --fields does (default: --fields); "
        "evaluation files of another schema than the training files",
    )
    r.add_argument(
        "--task",
        choices=["math", "summarization"],
        help="task of the --data and --eval files (default: the format's; with --fields, math "
        "when an answer is mapped, else summarization)",
    )
    r.add_argument(
        "--duplicates",
        choices=["drop", "reject"],
        help="exact duplicates in --data (same prompt and response): dropped and counted apart "
        "(drop, the default) or counted as rejected rows (reject)",
    )
    r.add_argument(
        "--verbose", action="store_true", help="every Dagster event (DEBUG), not only INFO"
    )
    r.add_argument("--budget", help="a count (5000) or a fraction (0.3) of the pool")
    r.add_argument("--method", choices=sorted(METHODS), help="selection method (default s2l)")
    r.add_argument(
        "--training-set",
        choices=["selected", "random", "full"],
        default="selected",
        help="what the target trains on (the target assets' partition)",
    )
    r.add_argument(
        "--until",
        choices=UNTIL_ASSETS,
        help="stop after this asset (and what it reads), e.g. selected_subset: the subset "
        "without training or evaluating a target",
    )
    r.set_defaults(func=cmd_run)

    x = sub.add_parser(
        "export", help="write the selected subset as your original records, with its lineage"
    )
    x.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    x.add_argument("--out", help="folder to write (default: data/export/<subset hash>)")
    x.add_argument(
        "--artifact-root", help="the artifact store (default: S2L_ARTIFACT_ROOT or data/artifacts)"
    )
    x.set_defaults(func=cmd_export)

    from .study_cli import add_parser as add_study_parser

    add_study_parser(sub)

    lin = sub.add_parser(
        "lineage", help="print the data, proxy and selection behind an asset or MLflow run"
    )
    lin.add_argument(
        "target", help="selected_subset, target_model[:partition], ... or an MLflow run id"
    )
    lin.add_argument("--partition", help="partition of a partitioned asset (default: the latest)")
    lin.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI or local)")
    lin.add_argument("--json", action="store_true", help="print the raw JSON record")
    lin.set_defaults(func=cmd_lineage)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (SelectionInputError, ValueError) as exc:
        print(f"s2l {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
