"""Every lineage record the stages write, assembled here and only here: the chain from a
result back to the data and models that made it, as nested JSON."""

from __future__ import annotations

from ..lm.fit import TrainedModel
from .manifests import ClustersManifest, ModelManifest, PoolManifest, SubsetManifest, TargetManifest


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
        "trained_on": proxy.trained_on.to_dict() if proxy.trained_on else {},
        "checkpoints": {str(c.step): c.sha256 for c in proxy.checkpoints},
    }


def subset_lineage(
    pool: PoolManifest,
    proxy: ModelManifest,
    clusters: ClustersManifest,
    method: str,
    budget: int,
    seed: int,
    subset_hash: str,
) -> dict:
    """Data, proxy, clustering and selection behind a subset."""
    opts = clusters.options
    return {
        "dataset": pool.lineage,
        "proxy": proxy_link(proxy),
        "clustering": {
            "k": opts.clusters,
            "iterations": opts.kmeans_iterations,
            "steps": list(opts.steps or ()),
            "stratify_by": opts.stratify_by,
            "seed": clusters.seed,
            "clusters_hash": clusters.clusters.content_hash,
        },
        "selection": {"method": method, "budget": budget, "seed": seed, "subset_hash": subset_hash},
    }


def target_lineage(
    subset: SubsetManifest,
    training_set: str,
    rows: int,
    rows_hash: str,
    model: str,
    trained: TrainedModel,
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


def evaluation_lineage(target: TargetManifest, eval_sets_hash: str, predictions_hash: str) -> dict:
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
