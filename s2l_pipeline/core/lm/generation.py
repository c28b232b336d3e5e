"""Greedy generation in batches of equal-length prompts.

Prompts of one length need no padding, so no position-id care is needed for left padding and
every batch is exact; the embedded tasks have few distinct prompt lengths, so batches stay big.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..support.progress import Progress

log = logging.getLogger(__name__)


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
    lengths = np.array([len(x) for x in ids])
    out: list[str] = [""] * len(prompts)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stops = stop_ids or [eos]
    batches = [
        idx[i : i + batch_size]
        for length in np.unique(lengths)
        for idx in [np.flatnonzero(lengths == length)]
        for i in range(0, len(idx), batch_size)
    ]
    bar = Progress("generating", len(prompts), "prompts", progress) if progress else None
    done = 0
    model.eval()
    with torch.inference_mode():
        for rows in batches:
            batch = torch.tensor([ids[r] for r in rows], device=device)
            gen = model.generate(
                input_ids=batch,
                attention_mask=torch.ones_like(batch),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad if pad is not None else eos,
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
