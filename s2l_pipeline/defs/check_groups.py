"""Several checks of one asset in one step.

On Ray or Kubernetes each step is a process of its own (a job, a pod) that starts Python and
imports the code location before any work: a step per check cost more than the checks did. The
checks keep their own names, severities and blocking, and each can still be run alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dagster as dg


def selected_results(
    context: dg.AssetCheckExecutionContext,
    asset: str,
    evaluators: dict[str, Callable[[], dg.AssetCheckResult]],
) -> Iterator[dg.AssetCheckResult]:
    """Each selected check's result under its own name; a check that raises lets the others
    report first, then fails the step with its error."""
    selected = {key.name for key in context.selected_asset_check_keys}
    error: Exception | None = None
    for name, evaluate in evaluators.items():
        if name not in selected:
            continue
        try:
            result = evaluate()
        except Exception as exc:  # noqa: BLE001 - re-raised once the others have reported
            context.log.error(f"check {name} on {asset} raised {type(exc).__name__}: {exc}")
            error = error or exc
            continue
        yield result._replace(asset_key=dg.AssetKey(asset), check_name=name)
    if error is not None:
        raise error
