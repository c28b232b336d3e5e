"""Named run-config presets: the default scale, a tiny one for tests and smoke runs.

A profile only fills asset config; every value stays editable in the Dagster launchpad.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # About 20K examples over 12 families; the main job's scale.
    "default": {
        "raw_dataset": {"embedded": {"size": 20_000, "heldout_per_family": 300}},
        "eval_sets": {"ood_per_family": 300},
    },
    # A few hundred examples: the whole graph in a minute or two, for tests and smoke checks.
    "tiny": {
        "raw_dataset": {"embedded": {"size": 400, "heldout_per_family": 10}},
        "eval_sets": {"ood_per_family": 10},
    },
}


def run_config(
    profile: str = "default",
    overrides: dict[str, dict] | None = None,
    assets: Iterable[str] | None = None,
) -> dict:
    """Run config ``{"ops": {asset: {"config": ...}}}`` for a profile, with per-asset overrides.

    ``assets`` keeps only those assets' entries, for runs that materialize part of the graph.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    ops = {name: {"config": copy.deepcopy(cfg)} for name, cfg in PROFILES[profile].items()}
    for name, cfg in (overrides or {}).items():
        ops.setdefault(name, {"config": {}})["config"].update(cfg)
    if assets is not None:
        keep = set(assets)
        ops = {name: cfg for name, cfg in ops.items() if name in keep}
    return {"ops": ops}
