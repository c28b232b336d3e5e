"""Greedy generation in batches of prompts of any length.

Prompts are sorted by length and cut into batches, each left-padded to its longest prompt with
an attention mask (``generate`` derives positions from the mask), so a batch wastes little
padding and a set whose prompts all differ in length still runs in full batches: on real data
nearly every prompt has its own length, and batches of equal lengths held one prompt each. A
batch of equal lengths has no padding at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..support.progress import Progress

log = logging.getLogger(__name__)


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of ``batch_size``, shortest prompts first (a stable sort: equal
    lengths keep their order), so each batch pads to a length close to its shortest."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_padded(rows: list[list[int]], pad: int):
    """(input_ids, attention_mask) with every row right-aligned, padding masked out."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[j, width - len(r) :] = 1
    return ids, mask


def greedy_generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int = 16,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
    stop_ids: list[int] | None = None,
) -> list[str]:
    """The decoded continuation of each prompt (token ids), stopped at eos or
    ``max_new_tokens``."""
    import torch

    device = next(model.parameters()).device
    limit = getattr(model.config, "max_position_embeddings", 2048)
    keep = max(1, limit - max_new_tokens)  # leave room for the answer: cut prompts from the left
    ids = [x[-keep:] for x in prompts]
    out: list[str] = [""] * len(prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = pad if pad is not None else eos  # pad = eos is safe: padding is masked out
    stops = stop_ids or [eos]
    batches = length_batches(np.array([len(x) for x in ids]), batch_size)
    bar = Progress("generating", len(prompts), "prompts", progress) if progress else None
    done = 0
    model.eval()
    with torch.inference_mode():
        for rows in batches:
            batch, mask = left_padded([ids[r] for r in rows], pad)
            gen = model.generate(
                input_ids=batch.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad,
            )[:, batch.shape[1] :]
            for r, seq in zip(rows, gen.tolist(), strict=True):
                ends = [k for k, t in enumerate(seq) if t in stops]
                if ends:
                    seq = seq[: ends[0]]
                out[r] = tokenizer.decode(seq, skip_special_tokens=True)
            done += len(rows)
            if bar is not None:
                bar.update(done)
    return out
