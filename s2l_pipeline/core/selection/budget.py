"""Budgets and the S2L balanced allocation rule, shared by every selector."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def resolve_budget(budget: int | float, n: int) -> int:
    """A count (int >= 1, at most N) or a fraction f in (0, 1] meaning floor(f x N).

    A count above N is an error, not "take everything": a budget of 100000 on a 400-row pool
    is a mistake (a wrong file, a missing fraction point) a user should hear about."""
    if isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive count or a fraction in (0, 1], got {budget}")
    if isinstance(budget, float) and budget <= 1.0:
        count = min(n, math.floor(budget * n))
        if count == 0 and n > 0:
            raise ValueError(
                f"budget {budget:g} of {n} usable rows is 0 rows: give a larger fraction "
                f"(at least {1 / n:.2g}) or a count"
            )
        return count
    if isinstance(budget, float) and not budget.is_integer():
        raise ValueError(f"budget {budget} is neither a fraction in (0, 1] nor a whole count")
    if int(budget) > n:
        raise ValueError(
            f"budget {int(budget)} is more than the {n} usable rows of the pool: give a count up "
            f"to {n}, or a fraction such as 0.3"
        )
    return int(budget)


def parse_budget(text: str) -> int | float:
    """'500' -> 500 (a count); '0.1' -> 0.1 (a fraction)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError(f"budget {text!r} is neither a count nor a fraction") from None


def balanced_allocation(
    sizes: Sequence[int], budget: int, ids: Sequence | None = None
) -> np.ndarray:
    """S2L's rule: groups by size ascending (ties by id); the i-th takes
    min(size, floor(remaining / groups_left)); what a small group leaves rolls on."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ids = list(range(len(sizes))) if ids is None else list(ids)
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], ids[i]))
    take = np.zeros(len(sizes), dtype=np.int64)
    remaining = budget
    for pos, i in enumerate(order):
        share = remaining // (len(order) - pos)
        take[i] = min(int(sizes[i]), share)
        remaining -= take[i]
    return take


def proportional_allocation(sizes: Sequence[int], budget: int) -> np.ndarray:
    """floor(budget x size / N) per group, the remainder by largest fraction (ties by index)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros_like(sizes)
    raw = budget * sizes / total
    take = np.minimum(np.floor(raw).astype(np.int64), sizes)
    left = budget - int(take.sum())
    order = sorted(range(len(sizes)), key=lambda i: (-(raw[i] - take[i]), i))
    for i in order:
        if left <= 0:
            break
        if take[i] < sizes[i]:
            take[i] += 1
            left -= 1
    return take


def group_rows(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(group ids sorted, row indices of each group) without an O(N x K) scan."""
    order = np.argsort(labels, kind="stable")
    uniq, starts = np.unique(labels[order], return_index=True)
    return uniq, np.split(order, starts[1:])


def sample_balanced(
    labels: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    min_cluster_size: int = 1,
    nested_seed: int | None = None,
) -> np.ndarray:
    """Row indices: the balanced allocation over clusters of at least ``min_cluster_size``
    members, uniform without replacement inside each; a shortfall is filled uniformly from the
    skipped small clusters' rows first (the official code's rule), then from any row not yet
    chosen. Sorted.

    With ``nested_seed`` each cluster takes the prefix of its own seeded permutation: the
    allocation only grows with the budget, so a larger budget keeps every row of a smaller one.
    """
    budget = min(budget, len(labels))
    uniq, members = group_rows(labels)
    kept = [i for i in range(len(uniq)) if len(members[i]) >= min_cluster_size]
    take = np.zeros(len(uniq), dtype=np.int64)
    take[kept] = balanced_allocation(
        [len(members[i]) for i in kept], budget, [uniq[i] for i in kept]
    )
    order = sorted(kept, key=lambda i: (len(members[i]), uniq[i]))
    chosen = [
        members[i]
        if take[i] == len(members[i])
        else _prefix(members[i], take[i], nested_seed, i)
        if nested_seed is not None
        else rng.choice(members[i], take[i], replace=False)
        for i in order
        if take[i] > 0
    ]
    picked = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    skipped = [members[i] for i in range(len(uniq)) if len(members[i]) < min_cluster_size]
    if skipped and budget > len(picked):
        small = np.sort(np.concatenate(skipped))
        extra = rng.choice(small, min(budget - len(picked), len(small)), replace=False)
        picked = np.sort(np.concatenate([picked, extra]))
    short = budget - len(picked)
    if short > 0:
        rest = np.setdiff1d(np.arange(len(labels)), picked, assume_unique=True)
        picked = np.sort(np.concatenate([picked, rng.choice(rest, short, replace=False)]))
    return picked


def _prefix(members: np.ndarray, take: int, seed: int, group: int) -> np.ndarray:
    """The first ``take`` of a permutation that depends only on (seed, group), not the budget."""
    return np.random.default_rng([seed, group]).permutation(members)[:take]
