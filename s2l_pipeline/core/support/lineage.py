"""Reading a lineage record (the chain from a result back to its data and models): flattened
for MLflow tags and params, or printed one link per block (``s2l lineage``).

The records are built in ``core/stages/lineage.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
