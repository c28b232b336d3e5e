"""The order rows are trained in: a seeded uniform shuffle per epoch, or length grouping that
keeps sources mixed, and a measure of how long training runs on one source at a time.

HF's length grouping sorts megabatches of up to 50 batches by length; when sources differ in
length, each megabatch trains several consecutive steps on one source, and a proxy checkpoint
taken after such a block sees that source's loss low and the others high. S2L reads exactly
those losses, so the default is the uniform shuffle the official S2L proxy training uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Length grouping sorts by length only inside windows of this many batches: padding drops
# within a window. A run of one source is short where sources are mixed, but it is not bounded
# by the window: a source that fills most of the pool can run on across windows, as it does in a
# shuffle (longest_single_source_run reports it, beside a shuffle's figure).
DEFAULT_LENGTH_WINDOW = 4


def _generator(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED])


def epoch_order(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool = False,
    length_window: int = DEFAULT_LENGTH_WINDOW,
) -> np.ndarray:
    """Row indices of one epoch, a function of (seed, epoch) alone (so a resume is exact).

    Grouped: shuffle, cut into windows of ``length_window`` batches, sort each window by
    length, then shuffle the order of the window's batches.
    """
    n = len(lengths)
    rng = _generator(seed, epoch)
    order = rng.permutation(n)
    if not group_by_length or n == 0:
        return order
    lens = np.asarray(lengths)[order]
    window = max(1, int(length_window)) * batch_size
    out = []
    for start in range(0, n, window):
        idx = order[start : start + window]
        idx = idx[np.argsort(-lens[start : start + window], kind="stable")]
        batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
        out.extend(batches[j] for j in rng.permutation(len(batches)))
    return np.concatenate(out)


def longest_single_source_run(order: np.ndarray, sources: Sequence[str], batch_size: int) -> int:
    """Longest run of consecutive batches whose rows all come from one and the same source
    (0 when no batch is single-source)."""
    src = np.asarray(sources, dtype=object)[order]
    best = run = 0
    previous = None
    for start in range(0, len(src), batch_size):
        batch = set(src[start : start + batch_size].tolist())
        only = next(iter(batch)) if len(batch) == 1 else None
        run = run + 1 if only is not None and only == previous else (1 if only is not None else 0)
        previous = only
        best = max(best, run)
    return best


@dataclass(frozen=True)
class OrderReport:
    """How a run's first epoch was ordered, beside a uniform shuffle of the same rows."""

    order: str  # 'shuffle' or 'length windows of N batches'
    batch_size: int
    longest_single_source_run: int  # consecutive batches drawn from one source
    longest_single_source_run_shuffle: int
    padding_share: float
    padding_share_shuffle: float


def order_report(
    lengths: Sequence[int],
    sources: Sequence[str],
    batch_size: int,
    seed: int,
    group_by_length: bool,
    length_window: int = DEFAULT_LENGTH_WINDOW,
) -> OrderReport:
    """How the first epoch was ordered, beside a uniform shuffle of the same rows."""
    trained = epoch_order(lengths, batch_size, seed, 0, group_by_length, length_window)
    shuffled = epoch_order(lengths, batch_size, seed, 0, False)
    lens = np.asarray(lengths)
    return OrderReport(
        order=f"length windows of {length_window} batches" if group_by_length else "shuffle",
        batch_size=batch_size,
        longest_single_source_run=longest_single_source_run(trained, sources, batch_size),
        longest_single_source_run_shuffle=longest_single_source_run(shuffled, sources, batch_size),
        padding_share=round(_padding_share(trained, lens, batch_size), 4),
        padding_share_shuffle=round(_padding_share(shuffled, lens, batch_size), 4),
    )


def _padding_share(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> float:
    """Share of the padded batch tensors that is padding: what length grouping saves."""
    if len(order) == 0:
        return 0.0
    padded = real = 0
    for start in range(0, len(order), batch_size):
        lens = lengths[order[start : start + batch_size]]
        padded += int(lens.max()) * len(lens)
        real += int(lens.sum())
    return 1.0 - real / padded if padded else 0.0
