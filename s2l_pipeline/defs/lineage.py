"""Lineage records assembled from upstream manifests (no logic beyond picking fields)."""


def proxy_link(proxy_checkpoints: dict) -> dict:
    return {
        "fingerprint": proxy_checkpoints["fingerprint"],
        "trained_on": proxy_checkpoints.get("trained_on", {}),
        "checkpoints": {str(c["step"]): c["sha256"] for c in proxy_checkpoints["checkpoints"]},
    }


def subset_lineage(
    training_pool: dict,
    proxy_checkpoints: dict,
    trajectory_clusters: dict,
    method: str,
    info: dict,
    subset_hash: str,
) -> dict:
    opts = trajectory_clusters["options"]
    return {
        "dataset": training_pool["lineage"],
        "proxy": proxy_link(proxy_checkpoints),
        "clustering": {
            "k": opts["clusters"],
            "iterations": opts["kmeans_iterations"],
            "steps": opts["steps"],
            "stratify_by": opts["stratify_by"],
            "seed": opts["seed"],
            "clusters_hash": trajectory_clusters["clusters"]["content_hash"],
        },
        "selection": {
            "method": method,
            "budget": info["budget"],
            "seed": info["seed"],
            "subset_hash": subset_hash,
        },
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
