"""Named scales: the default one, a tiny one for tests and smoke runs.

A deployment runs at one scale, named by ``S2L_PROFILE`` (default: ``default``) in the
environment of every Dagster process (``dagster dev``, the daemon, ``s2l run``). The profile's
values become the *defaults* of the assets' config classes, so every way to launch (a job, the
asset graph, automation, a sensor, a schedule, GraphQL without config) runs at that scale, and
every value stays editable in the launchpad. ``run_config`` still builds explicit run config for
tests and scripts. Graph-backed assets (loss_trajectories) take config per inner op.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

import pydantic

from ..core.selection.common import PAPER_S2L

# Asset (or graph-asset op path) -> config values.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # About 20K examples over 12 families: the code defaults of the config classes, as they are.
    "default": {},
    # A few hundred examples: the whole graph in a minute or two, for tests and smoke checks.
    "tiny": {
        "raw_dataset": {"embedded": {"size": 400, "heldout_per_family": 10}},
        "eval_sets": {"ood_per_family": 10},
        "proxy_checkpoints": {
            "size": "proxy-tiny",
            "epochs": 2.0,
            "num_checkpoints": 4,
            "batch_size": 32,
        },
        "loss_trajectories.plan_scoring": {"shard_rows": 150},
        "trajectory_clusters": {"clusters": 8},
        "selected_subset": {"method": "s2l", "budget": "0.3", "embedding_clusters": 20},
        "target_model": {"size": "proxy", "epochs": 2.0, "batch_size": 32},
        "target_evaluation": {"max_new_tokens": 8},
    },
}


# The official code's S2L at the default scale (core.selection.common.PAPER_S2L); README
# "S2L: ours and the paper's" lists the differences.
PROFILES["paper"] = {
    "trajectory_clusters": {
        "clusters": PAPER_S2L["clusters"],
        "iterations": PAPER_S2L["kmeans_iterations"],
        "stratify_by": PAPER_S2L["stratify_by"],
    },
    "selected_subset": {"method": "s2l", "min_cluster_size": PAPER_S2L["min_cluster_size"]},
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


PROFILE_ENV = "S2L_PROFILE"


def active_profile() -> str:
    """The deployment's scale, from ``S2L_PROFILE``; an unknown name fails loudly at load."""
    name = os.environ.get(PROFILE_ENV, "default") or "default"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; known: {sorted(PROFILES)}")
    return name


def with_defaults(cls: type[pydantic.BaseModel], values: dict[str, Any]) -> type:
    """A subclass of a config class whose defaults are ``values`` (nested dicts go deeper)."""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        info = cls.model_fields[name]
        if isinstance(value, dict):
            sub = with_defaults(info.annotation, value)
            fields[name] = (sub, pydantic.Field(default_factory=sub, description=info.description))
        else:
            fields[name] = (info.annotation, pydantic.Field(value, description=info.description))
    return pydantic.create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)


def profiled(cls: type, key: str) -> type:
    """``cls`` with the active profile's values for ``key`` (``asset`` or ``asset.op``)."""
    values = PROFILES[active_profile()].get(key)
    return with_defaults(cls, values) if values else cls
