"""ZIP (Yin et al. 2024, "Entropy Law"): the samples that keep the chosen set's compression
ratio lowest, i.e. the least redundant set, greedily and with no model.

Each round: stage 1 takes the ``k1`` candidates of lowest standing ratio; stage 2 scores each
with the chosen set and keeps the ``k2`` lowest; stage 3 adds ``k3`` of those one at a time,
each the one that keeps the ratio lowest. Defaults are the paper's (10,000 / 200 / 100).

Ours streams: the chosen set is compressed once per step into a ``zlib`` compressor that each
candidate continues from a copy, so a candidate costs its own bytes, not the set's (the paper's
code recompresses the whole set per candidate). Deterministic: ties go by row order.
"""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl

from .common import Selection, SelectionInputError, SelectionOptions

LEVEL = 9


def sample_texts(traj: pl.DataFrame, data: pl.DataFrame | None) -> list[bytes]:
    """Each trajectory row's prompt and response as UTF-8 bytes (chat rows: their messages)."""
    if data is None or not {"example_id", "response"} <= set(data.columns):
        raise SelectionInputError("zip reads the texts: it needs the data's rows (response)")
    cols = [c for c in ("prompt", "response", "messages") if c in data.columns]
    rows = traj.select("example_id").join(
        data.select("example_id", *cols), on="example_id", how="left", maintain_order="left"
    )
    if rows["response"].null_count():
        raise SelectionInputError(
            f"{rows['response'].null_count()} trajectory rows have no row in the data"
        )
    chats = rows["messages"].to_list() if "messages" in cols else [None] * rows.height
    prompts = rows["prompt"].to_list() if "prompt" in cols else [""] * rows.height
    return [
        (str(m) if m is not None else f"{p or ''}\n{r}").encode()
        for p, r, m in zip(prompts, rows["response"].to_list(), chats, strict=True)
    ]


class _Stream:
    """A compressor holding the chosen set so far; ratio of the set plus a candidate."""

    def __init__(self) -> None:
        self.comp = zlib.compressobj(LEVEL)
        self.raw = 0
        self.out = 0

    def add(self, text: bytes) -> None:
        self.out += len(self.comp.compress(text + b"\n"))
        self.raw += len(text) + 1

    def ratio(self) -> float:
        return self.raw / max(self.out + len(self.comp.copy().flush()), 1)

    def ratio_with(self, text: bytes) -> float:
        c = self.comp.copy()
        size = self.out + len(c.compress(text + b"\n")) + len(c.flush())
        return (self.raw + len(text) + 1) / size


def select(
    traj: pl.DataFrame, data: pl.DataFrame | None, budget: int, seed: int, opts: SelectionOptions
) -> Selection:
    texts = sample_texts(traj, data)
    n = len(texts)
    standing = np.array([_Stream().ratio_with(t) for t in texts])
    free = np.ones(n, dtype=bool)
    stream, chosen = _Stream(), []
    while len(chosen) < budget:
        idle = np.flatnonzero(free)
        k1 = idle[np.argsort(standing[idle], kind="stable")[: opts.zip_k1]]
        standing[k1] = [stream.ratio_with(texts[i]) for i in k1]
        k2 = list(k1[np.argsort(standing[k1], kind="stable")[: opts.zip_k2]])
        for _ in range(min(opts.zip_k3, budget - len(chosen), len(k2))):
            best = min(k2, key=lambda i: (stream.ratio_with(texts[i]), i))
            k2.remove(best)
            stream.add(texts[best])
            chosen.append(best)
            free[best] = False
    return Selection(
        np.sort(np.asarray(chosen, dtype=np.int64)),
        info={"compression_ratio": round(stream.ratio(), 4)},
    )
