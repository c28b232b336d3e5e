"""Named run-config presets: the default scale, a tiny one for tests and smoke runs.

A profile only fills asset config; every value stays editable in the Dagster launchpad.
Graph-backed assets (loss_trajectories) take config per inner op: ``{"ops": {op: {...}}}``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

# Asset (or graph-asset op path) -> config values.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # About 20K examples over 12 families; the main job's scale.
    "default": {
        "raw_dataset": {"embedded": {"size": 20_000, "heldout_per_family": 300}},
        "eval_sets": {"ood_per_family": 300},
        "proxy_checkpoints": {"size": "proxy", "epochs": 3.0, "num_checkpoints": 10},
        "loss_trajectories.plan_scoring": {"shard_rows": 1_000_000},
        "trajectory_clusters": {"clusters": 100},
        "selected_subset": {"method": "s2l", "budget": "0.3"},
        "target_model": {"size": "target", "epochs": 10.0},
        "target_evaluation": {"max_new_tokens": 16},
    },
    # A few hundred examples: the whole graph in a minute or two, for tests and smoke checks.
    "tiny": {
        "raw_dataset": {"embedded": {"size": 400, "heldout_per_family": 10}},
        "eval_sets": {"ood_per_family": 10},
        "proxy_checkpoints": {
            "size": "proxy-tiny",
            "epochs": 2.0,
            "num_checkpoints": 4,
            "batch_size": 32,
            "max_length": 96,
        },
        "loss_trajectories.plan_scoring": {"shard_rows": 150},
        "trajectory_clusters": {"clusters": 8},
        "selected_subset": {"method": "s2l", "budget": "0.3", "embedding_clusters": 20},
        "target_model": {"size": "proxy", "epochs": 2.0, "batch_size": 32, "max_length": 96},
        "target_evaluation": {"max_new_tokens": 8},
    },
}


def run_config(
    profile: str = "default",
    overrides: dict[str, dict] | None = None,
    assets: Iterable[str] | None = None,
) -> dict:
    """Run config for a profile; ``overrides`` merge per key (``asset`` or ``asset.op``).

    ``assets`` keeps only those assets' entries, for runs that materialize part of the graph.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    flat = copy.deepcopy(PROFILES[profile])
    for key, cfg in (overrides or {}).items():
        flat.setdefault(key, {}).update(cfg)
    keep = set(assets) if assets is not None else None
    ops: dict[str, dict] = {}
    for key, cfg in flat.items():
        asset, _, op = key.partition(".")
        if keep is not None and asset not in keep:
            continue
        if op:
            ops.setdefault(asset, {"ops": {}})["ops"][op] = {"config": cfg}
        else:
            ops[asset] = {"config": cfg}
    return {"ops": ops}
