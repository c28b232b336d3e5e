"""What `s2l run` and `s2l study` share to launch a Dagster job from the command line: the
profile set before the definitions load, the run config from a file and flags, its mistakes
said one per line, and a failed step's reason in one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def use_profile_and_quiet_logs(args: argparse.Namespace) -> str:
    """Set the run's profile (before the definitions load) and keep third-party notices off
    the console unless --verbose; returns the profile."""
    import os

    deployed = os.environ.get("S2L_PROFILE") or "default"
    profile = args.profile or deployed
    if profile != deployed:
        print(
            f"note: running at profile {profile!r}; automation, sensors and UI launches use "
            f"S2L_PROFILE (now {deployed!r}): start `dagster dev` with S2L_PROFILE={profile} "
            "to keep this scale",
            file=sys.stderr,
        )
    os.environ["S2L_PROFILE"] = profile  # read when the definitions load, just below

    import warnings

    import dagster as dg

    # A terminal a person can read: Dagster's notices about the beta APIs we use (data_version=)
    # are for us, not the user; any other such notice is shown once, not once per asset.
    for kind in (dg.BetaWarning, dg.PreviewWarning):
        warnings.filterwarnings("once", category=kind)
        warnings.filterwarnings("ignore", message=".*is currently in (beta|preview)", category=kind)

    if not args.verbose:  # third-party INFO lines (MLflow's store migrations) are not ours
        import logging

        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        for name in ("mlflow", "alembic", "urllib3", "httpx", "datasets"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return profile


def config_mistakes(job, run_config: dict) -> list[str]:
    """Each error of ``run_config`` as one line: where, what, and the nearest valid key."""
    import dagster as dg

    try:
        dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as exc:
        return [_config_line(job, err) for err in exc.errors]
    return []


def _config_line(job, err) -> str:
    import difflib

    path = []
    entry = err.stack
    while entry is not None and hasattr(entry, "field_name"):
        path.insert(0, entry.field_name)
        entry = entry.parent
    where = ":".join(path) or "the top level"
    data = err.error_data
    unknown = getattr(data, "field_names", None) or (
        [data.field_name] if getattr(data, "field_name", None) else []
    )
    if err.reason.value in ("FIELD_NOT_DEFINED", "FIELDS_NOT_DEFINED") and unknown:
        valid = _keys_at(job.run_config_schema.config_type, path)
        lines = []
        for key in unknown:
            near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"valid: {', '.join(sorted(valid))}"
            lines.append(f"unknown key {key!r} under {where}: {hint}")
        return "; ".join(lines)
    return err.message.split(" Expected")[0]


def _keys_at(config_type, path: list[str]) -> list[str]:
    for name in path:
        fields = getattr(config_type, "fields", None) or {}
        if name not in fields:
            return []
        config_type = fields[name].config_type
    return list(getattr(config_type, "fields", None) or {})


def check_descriptions(defs) -> dict[str, str]:
    """Check name -> what the check guards (its definition's description)."""
    out = {}
    for checks_def in defs.asset_checks or []:
        for spec in checks_def.check_specs:
            out[spec.name] = spec.description or ""
    return out


def failures(result) -> dict[str, str]:
    """Step key -> the reason it failed (the user's message, else the error's last line)."""
    events = result.get_step_failure_events()
    return {e.step_key: failure_reason(e.step_failure_data) for e in events}


def failure_reason(data) -> str:
    """A step failure (``StepFailureData``) in one line: the user's message, else the error's
    cause as class and message."""
    user = data.user_failure_data
    error = data.error
    cause = error.cause if error and error.cause else error
    text = (user.description if user and user.description else None) or (
        f"{cause.cls_name}: {cause.message.strip()}" if cause else "unknown error"
    )
    if cause and cause.cls_name == "DagsterAssetCheckFailedError":
        text = "a blocking check failed; nothing after it ran (the check's line says why)"
    return text


def run_config_file(path: str | None) -> dict:
    """Run config from a YAML/JSON file in the launchpad's format ({ops: {asset: {config}}})."""
    if not path:
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not a readable YAML run config ({exc})") from exc
    if not isinstance(cfg, dict) or set(cfg) - {"ops", "resources", "execution", "loggers"}:
        raise ValueError(f"{path}: expected the launchpad's keys (ops:, resources:, ...)")
    return cfg


def with_log_level(cfg: dict, args: argparse.Namespace) -> dict:
    """Our step lines (the ``console`` logger of ``cmd_run``), or with --verbose every Dagster
    event (Dagster's own console logger); a logger runs only when the run config names it."""
    level = {"config": {"log_level": "DEBUG"}} if args.verbose else {}
    cfg.setdefault("loggers", {"console": level})
    return cfg


def asset_config(ops: dict, name: str) -> dict:
    """The ``config`` of asset ``name`` in a run config's ``ops``, made when missing."""
    return ops.setdefault(name, {}).setdefault("config", {})


def with_overrides(cfg: dict, args: argparse.Namespace) -> dict:
    """The common settings given as flags, over the config file's (flags win)."""
    ops = cfg.setdefault("ops", {})

    def asset(name: str) -> dict:
        return asset_config(ops, name)

    mapping = fields_flag(args)
    if args.data:
        raw = asset("raw_dataset")
        raw["files"] = _file_entries(args.data, raw.get("files"), mapping)
        raw.setdefault("embedded", {})["enabled"] = False
    if getattr(args, "duplicates", None):
        asset("raw_dataset")["duplicates"] = args.duplicates
    if getattr(args, "eval", None):
        evals = asset("eval_sets")
        own = getattr(args, "eval_fields", None)
        eval_mapping = fields_flag(args, "eval_fields") if own else mapping
        evals["files"] = _file_entries(args.eval, evals.get("files"), eval_mapping)
    if args.budget:
        asset("selected_subset")["budget"] = args.budget
    if args.method:
        asset("selected_subset")["method"] = args.method
    if not ops:
        del cfg["ops"]
    return cfg


# In-domain test problems carved from each source when `s2l run --data` has no --eval.
HELDOUT_WITHOUT_EVAL = 200


def heldout_without_eval(cfg: dict, args: argparse.Namespace) -> str | None:
    """With --data, no evaluation file and no held-out setting, a run that evaluates carves a
    test set from each source of the user's data; what it did, in words (None: nothing)."""
    ops = cfg.get("ops", {})
    raw = ops.get("raw_dataset", {}).get("config", {})
    evals = ops.get("eval_sets", {}).get("config", {})
    if not args.data or evals.get("files") or "heldout_per_source" in raw:
        return None
    if getattr(args, "until", None) not in (None, "eval_sets", "target_evaluation"):
        return None  # nothing is evaluated: the whole file is the pool
    from .core.data.ingest import HELDOUT_SHARE

    raw = asset_config(cfg.setdefault("ops", {}), "raw_dataset")
    raw["heldout_per_source"] = HELDOUT_WITHOUT_EVAL
    share = raw.get("heldout_share", HELDOUT_SHARE)
    return (
        f"no --eval: {share:.0%} of each source (at most {HELDOUT_WITHOUT_EVAL} problems, every "
        "row of a prompt on one side) is held out as the in-domain test set, out of the pool; "
        "raw_dataset's line says how many (give --eval FILE, or raw_dataset heldout_per_source: "
        "N in --config, to choose)"
    )


def fields_flag(args: argparse.Namespace, name: str = "fields") -> dict:
    """--fields (or --eval-fields: a JSON object of templates) and --task, as a file entry's
    settings."""
    out: dict = {}
    raw = getattr(args, name, None)
    flag = "--" + name.replace("_", "-")
    if raw:
        try:
            fields = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{flag}: not a JSON object ({exc}): {raw!r}") from exc
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            example = '\'{"prompt": "{question}", "response": "{rationale}"}\''
            raise ValueError(
                f"{flag}: expected a JSON object of templates, e.g. {example}, got {raw!r}"
            )
        out["fields"] = fields
    if getattr(args, "task", None):
        out["task"] = args.task
    return out


def _file_entries(paths: list[str], configured: list | None, flags: dict) -> list[dict]:
    """One entry per path given on the command line: what --config says about that path (its
    fields, source, task, ...) kept, the flags over it."""
    known = {e.get("path"): e for e in configured or [] if isinstance(e, dict)}
    return [{**known.get(p, {}), "path": p, **flags} for p in paths]
