"""How long a study will take, from step times measured here before it starts: a few
optimizer steps of the study target, one evaluation batch, and (for the selectors that run
it) one forward batch of the proxy."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..lm.fit import TrainRun, as_trained, head_at_labels, resolve_max_length, training_model
from .cells import CellSpec

# Starting one cell's Dagster run (a process, imports, the definitions, the step's own reads,
# the MLflow run) around its training and evaluation: on this 2-core machine two studies'
# cells took 3-5 s each more than an estimate of 6 s allowed (107 s against 70 for 11 tiny
# cells, 455 s against 345 for 21 cells on 1,500 user rows), so 10 s.
RUN_START_SECONDS = 10.0
# A cell run in the study's own process (torch and the definitions loaded already): the step's
# reads, the MLflow run and the run's events only: tiny cells took 1-2 s in all.
IN_PROCESS_START_SECONDS = 1.0


@dataclass(frozen=True)
class StepTimes:
    train_step_s: float  # one optimizer step of the study target (batch_size x grad_accum rows)
    eval_row_s: float  # one validation row: generation plus its reference NLL
    proxy_row_s: float  # one row through the proxy (ifd's extra pass)
    rows_per_step: int
    epochs: float


def _batches(enc, batch_size: int, pad_id: int):
    from ..lm.trainer import make_collator

    collate = make_collator(pad_id)
    rows = [{"input_ids": enc.input_ids[i], "labels": enc.labels(i)} for i in range(len(enc))]
    return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def measure_train_step(
    run: TrainRun, rows: pl.DataFrame, tokenizer_dir: Path | None, steps: int = 3
) -> float:
    """Seconds per optimizer step of ``run``'s model on ``rows`` (the first step, which warms
    up, is not counted)."""
    import torch

    from ..lm.encoding import encode
    from ..lm.trainer import loss_at_labels

    model, tokenizer = training_model(run, rows, tokenizer_dir)  # LoRA, checkpointing: as trained
    max_length, _ = resolve_max_length(rows, tokenizer, run.train)
    trained_as = as_trained(run, max_length)  # micro-batches, when the run trains in them
    bs = trained_as.batch_size
    sample = rows.sample(min(rows.height, bs * (steps + 1)), seed=0, shuffle=True)
    batches = _batches(encode(sample, tokenizer, max_length), bs, tokenizer.pad_token_id or 0)
    if torch.cuda.is_available():
        model = model.to("cuda")
    trained = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    opt = torch.optim.AdamW(trained, lr=run.train.learning_rate)
    model.train()
    times = []
    for batch in (batches * (steps + 1))[: steps + 1]:
        t0 = time.perf_counter()
        batch = {k: v.to(model.device) for k, v in batch.items()}
        loss = loss_at_labels(model, batch) if head_at_labels(run) else model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(sum(times[1:]) / max(1, len(times) - 1)) * trained_as.grad_accum


def measure_eval_row(
    checkpoint: Path, validation: pl.DataFrame, max_new_tokens: int, max_length: int,
    batch_size: int,
) -> float:  # fmt: skip
    """Seconds per validation row for a model of the proxy's tokenizer (generation runs to
    ``max_new_tokens`` when the model never stops: an upper bound)."""
    from ..evaluation.model_eval import evaluate
    from ..lm.models import load_causal_lm

    model, tokenizer = load_causal_lm(checkpoint)
    part = validation.head(min(validation.height, batch_size))
    t0 = time.perf_counter()
    evaluate(model, tokenizer, part, max_new_tokens, max_length, batch_size)
    return (time.perf_counter() - t0) / max(1, part.height)


def cell_seconds(
    spec: CellSpec,
    pool_rows: int,
    validation_rows: int,
    t: StepTimes,
    start_s: float = RUN_START_SECONDS,
) -> float:
    """One cell's estimated wall time: training steps, evaluation, and its run's start."""
    rows = pool_rows if spec.method == "full" else math.floor(spec.budget * pool_rows)
    steps = math.ceil(max(1, rows) * t.epochs / t.rows_per_step)
    selection = pool_rows * t.proxy_row_s if spec.method == "ifd" else 0.0
    return start_s + steps * t.train_step_s + validation_rows * t.eval_row_s + selection


def study_seconds(seconds: list[float], parallel: int) -> float:
    """Wall time of cells run ``parallel`` at a time, longest first (a greedy packing)."""
    lanes = [0.0] * max(1, parallel)
    for s in sorted(seconds, reverse=True):
        lanes[lanes.index(min(lanes))] += s
    return max(lanes)
