"""IFD (Superfiltering, Li et al. 2024): how much the prompt helps the proxy predict the response.

IFD = perplexity(response | prompt) / perplexity(response alone), on the proxy's last
checkpoint: the conditional loss is the trajectories' last column, the loss alone comes from
one more pass over the responses (``response_losses``). Highest IFD first; rows whose prompt
does not help (IFD >= 1, which Superfiltering drops) come only after every other row. The
pass alone skips each response's first token (nothing precedes it), a small bias the
ranking shares across rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .common import Selection, SelectionInputError, SelectionOptions, pick_steps, top_rows


@dataclass(frozen=True)
class ResponseLosses:
    """Each row's loss of its response alone, and what computing them cost."""

    table: pl.DataFrame  # example_id, response_loss
    cpu_seconds: float
    flops: float  # forward pass: 2 x parameters x tokens scored


def response_losses(
    model_dir: str | Path, data: pl.DataFrame, max_length: int | None = None
) -> ResponseLosses:
    """The proxy's mean loss of each response with no prompt before it (rows cut at
    ``max_length`` tokens, by default the model's longest)."""
    import torch

    from ..lm.encoding import encode
    from ..lm.losses import score_losses
    from ..lm.models import load_causal_lm

    t0 = time.process_time()
    model, tokenizer = load_causal_lm(model_dir)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    bare = data.select("example_id", "response", prompt=pl.lit(""), task=pl.lit("response_only"))
    enc = encode(bare, tokenizer, max_length or model.config.max_position_embeddings)
    losses = score_losses(model, enc)
    params = sum(p.numel() for p in model.parameters())
    tokens = float(sum(len(ids) for ids in enc.input_ids))
    return ResponseLosses(
        pl.DataFrame({"example_id": bare["example_id"], "response_loss": losses}),
        cpu_seconds=time.process_time() - t0,
        flops=2.0 * params * tokens,
    )


def select(
    traj: pl.DataFrame,
    data: pl.DataFrame | None,
    budget: int,
    seed: int,
    opts: SelectionOptions,
    response_losses: np.ndarray | None = None,
) -> Selection:
    if response_losses is None:
        raise SelectionInputError(
            "ifd needs the proxy's loss of each response alone: select through choose_subset "
            "with the proxy's checkpoint (the assets and `s2l select` do)"
        )
    last = pick_steps(traj, opts.steps, "last")[-1]
    ifd = np.exp(traj[last].to_numpy().astype(np.float64) - response_losses)
    ifd = np.where(np.isfinite(ifd), ifd, np.inf)
    # Below 1, higher is better; at or above 1 (the prompt does not help), lower is less bad.
    score = np.where(ifd < 1, ifd, -ifd)
    rows = top_rows(score, budget, traj["example_id"])
    info = {
        "ifd_at_least_1": int((ifd >= 1).sum()),
        "ifd_chosen_at_least_1": int((ifd[rows] >= 1).sum()),
        "ifd_median": float(np.median(ifd[np.isfinite(ifd)])) if np.isfinite(ifd).any() else None,
    }
    return Selection(rows, info=info)
