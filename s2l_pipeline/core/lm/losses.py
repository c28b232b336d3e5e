"""Per-example response loss of a causal LM, fast: the inner loop of loss trajectories.

Our scorer sorts rows by length and packs them into batches under a token budget, so padding is
at most the length spread inside one batch; it runs the transformer body once per batch under
``inference_mode`` (bf16 autocast on CUDA) and applies the LM head only at response positions,
the only places a loss is needed. The reference scorer is the official S2L loop (batch size 1,
fp32, one ``model(...).loss`` per row), kept for the correctness test and the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..support.progress import Progress
from .encoding import Encoded


def length_batches(lengths: np.ndarray, token_budget: int) -> list[np.ndarray]:
    """Row indices grouped so that rows x longest-row <= ``token_budget``, longest first."""
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, token_budget // longest)
        batches.append(order[start : start + size])
        start += size
    return batches


def _device_of(model):
    return next(model.parameters()).device


# Padded tokens per batch. On 2 CPU cores 8K beats both 2K and 64K by 1.3-2x (cache-sized
# activations; see docs/benchmarks.md); a GPU wants large batches.
CPU_TOKEN_BUDGET = 8_192
GPU_TOKEN_BUDGET = 65_536


def default_token_budget(device) -> int:
    return GPU_TOKEN_BUDGET if getattr(device, "type", str(device)) == "cuda" else CPU_TOKEN_BUDGET


def score_losses(
    model,
    enc: Encoded,
    token_budget: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Mean cross-entropy over each row's response tokens (float32; NaN where none is left)."""
    import torch
    import torch.nn.functional as F

    device = _device_of(model)
    token_budget = token_budget or default_token_budget(device)
    body = model.base_model
    head = model.get_output_embeddings()
    pad = model.config.pad_token_id or 0
    out = np.full(len(enc), np.nan, dtype=np.float32)
    scorable = np.flatnonzero(enc.n_response_tokens > 0)
    lengths = enc.lengths
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    bar = Progress("scoring", len(scorable), "rows", progress) if progress else None
    done = 0
    model.eval()
    with torch.inference_mode(), autocast:
        for local in length_batches(lengths[scorable], token_budget):
            rows = scorable[local]
            done += len(rows)
            width = int(lengths[rows].max())
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            # Position t predicts token t+1: a loss span [a, b) is predicted from positions
            # a-1 .. b-2 (for a plain row, prompt_len-1 .. len-2).
            pred = torch.zeros((len(rows), width), dtype=torch.bool)
            for j, r in enumerate(rows):
                seq = enc.input_ids[r]
                ids[j, : len(seq)] = torch.tensor(seq)
                mask[j, : len(seq)] = 1
                for a, b in enc.loss_spans(int(r)):
                    pred[j, max(a - 1, 0) : b - 1] = True
            ids, mask, pred = ids.to(device), mask.to(device), pred.to(device)
            hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
            targets = ids[:, 1:][pred[:, :-1]]
            logits = head(hidden[pred]).float()
            tok_loss = F.cross_entropy(logits, targets, reduction="none")
            row_of = torch.arange(len(rows), device=device).unsqueeze(1).expand_as(pred)[pred]
            sums = torch.zeros(len(rows), device=device).index_add_(0, row_of, tok_loss)
            counts = pred.sum(dim=1)
            out[rows] = (sums / counts).cpu().numpy()
            if bar is not None:
                bar.update(done)
    return out


def reference_losses(model, enc: Encoded) -> np.ndarray:
    """The official S2L scoring loop: one row at a time, fp32, ``model(..., labels).loss``."""
    import torch

    device = _device_of(model)
    model.eval()
    out = np.full(len(enc), np.nan, dtype=np.float32)
    with torch.no_grad():
        for i in range(len(enc)):
            ids = torch.tensor([enc.input_ids[i]], device=device)
            labels = torch.tensor([enc.labels(i)], device=device)
            loss = model(input_ids=ids, labels=labels).loss
            value = float(loss)
            out[i] = value if math.isfinite(value) else np.nan
    return out
