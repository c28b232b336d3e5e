"""The chain from a result back to the data and models that made it, as nested JSON.

Assets write it into their metadata and MLflow runs; ``s2l lineage`` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..manifests import ClustersManifest, ModelManifest, PoolManifest, SubsetManifest

# The order links are printed in, from the data to the result.
ORDER = ("dataset", "proxy", "clustering", "selection", "target", "evaluation")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: for MLflow tags and params."""
    out: dict[str, str] = {}
    items = list(tree.items())
    if items and all(str(k).isdigit() for k, _ in items):  # checkpoint steps: in step order
        items.sort(key=lambda kv: int(kv[0]))
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, Mapping):
            out[name] = "(none)"  # e.g. no shards yet: say so rather than print nothing
        else:
            out[name] = str(value)
    return out


def _line(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return str(value)


def format_lineage(lineage: Mapping[str, Any], header: str = "") -> str:
    """A readable chain: one block per link, data first."""
    lines = [header] if header else []
    keys = [k for k in ORDER if k in lineage] + sorted(k for k in lineage if k not in ORDER)
    for i, key in enumerate(keys, 1):
        lines.append(f"{i}. {key}")
        value = lineage[key]
        if not isinstance(value, Mapping):
            lines.append(f"     {_line(value)}")
            continue
        for name, v in flatten(value).items():
            lines.append(f"     {name}: {_line(v)}")
    return "\n".join(lines)


# --- building the records: every lineage the assets record is assembled here, and only here.


def pool_lineage(
    raw_dataset_hash: str, shards: dict, pool_hash: str, trajectories_hash: str, proxy_fp: str
) -> dict:
    """What a training pool was made of: the base table, the shards, the proxy that scored it."""
    return {
        "raw_dataset": raw_dataset_hash,
        "shards": shards,
        "pool": pool_hash,
        "trajectories": trajectories_hash,
        "proxy_fingerprint": proxy_fp,
    }


def proxy_link(proxy: ModelManifest) -> dict:
    return {
        "fingerprint": proxy.fingerprint,
        "trained_on": proxy.trained_on,
        "checkpoints": {str(c.step): c.sha256 for c in proxy.checkpoints},
    }


def subset_lineage(
    pool: PoolManifest,
    proxy: ModelManifest,
    clusters: ClustersManifest,
    method: str,
    info: dict,
    subset_hash: str,
) -> dict:
    """Data, proxy, clustering and selection behind a subset."""
    opts = clusters.options
    return {
        "dataset": pool.lineage,
        "proxy": proxy_link(proxy),
        "clustering": {
            "k": opts["clusters"],
            "iterations": opts["kmeans_iterations"],
            "steps": opts["steps"],
            "stratify_by": opts["stratify_by"],
            "seed": opts["seed"],
            "clusters_hash": clusters.clusters.content_hash,
        },
        "selection": {
            "method": method,
            "budget": info["budget"],
            "seed": info["seed"],
            "subset_hash": subset_hash,
        },
    }


def target_lineage(
    subset: SubsetManifest,
    training_set: str,
    rows: int,
    rows_hash: str,
    model: str,
    trained: ModelManifest,
) -> dict:
    """A subset's lineage plus the target trained on one of its training sets."""
    return {
        **subset.lineage,
        "target": {
            "training_set": training_set,
            "training_rows": rows,
            "training_rows_hash": rows_hash,
            "model": model,
            "fingerprint": trained.fingerprint,
            "checkpoint_sha256": trained.final.sha256,
            "checkpoint_uri": trained.final.uri,
        },
    }


def evaluation_lineage(target: ModelManifest, eval_sets_hash: str, predictions_hash: str) -> dict:
    return {
        **target.lineage,
        "evaluation": {"eval_sets": eval_sets_hash, "predictions": predictions_hash},
    }


def lineage_tags(lineage: dict) -> dict[str, str]:
    """The short identifiers of the chain as MLflow tags (the full record is lineage.json)."""
    ds, sel = lineage["dataset"], lineage["selection"]
    tags = {
        "lineage.dataset.raw_dataset": ds["raw_dataset"],
        "lineage.dataset.pool": ds["pool"],
        "lineage.dataset.n_shards": str(len(ds.get("shards", {}))),
        "lineage.proxy.fingerprint": lineage["proxy"]["fingerprint"],
        "lineage.clustering.k": str(lineage["clustering"]["k"]),
        "lineage.selection.method": sel["method"],
        "lineage.selection.seed": str(sel["seed"]),
        "lineage.selection.subset_hash": sel["subset_hash"],
    }
    if "target" in lineage:
        tags["lineage.target.checkpoint_sha256"] = lineage["target"]["checkpoint_sha256"]
    return tags
