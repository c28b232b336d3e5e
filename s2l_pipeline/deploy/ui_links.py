"""Links into the Dagster UI that open where a user wants to look.

The UI opens the asset graph with every group collapsed (five boxes, assets only after "Expand
all groups"); its ``expanded`` query parameter opens groups by id, ``global@global:<group>``.
"""

from __future__ import annotations

# The code location's asset groups, in the order the graph reads (a test checks them against
# the definitions).
ASSET_GROUPS = ("data", "proxy", "selection", "target", "study")


def lineage_url(base: str, groups: tuple[str, ...] = ASSET_GROUPS) -> str:
    """The global asset graph at ``base`` (e.g. http://127.0.0.1:3000) with ``groups`` open."""
    return f"{base.rstrip('/')}/asset-groups?expanded=" + ",".join(
        f"global@global:{g}" for g in groups
    )
