"""How a training run is set: hyperparameters, checkpoint schedule, what the caller hears.

Kept apart from ``trainer`` (which imports torch and transformers) so the code location loads
without them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from .order import DEFAULT_LENGTH_WINDOW

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    learning_rate: float = 2e-3
    batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    # Tokens per example, or 'auto': the smallest multiple of 8 covering the 99th percentile of
    # prompt + response tokens, at most max_length_cap (fit.resolve_max_length).
    max_length: int | str = "auto"
    max_length_cap: int = 1024
    seed: int = 0
    # False: a seeded uniform shuffle per epoch (as the official S2L proxy training). True:
    # sort by length inside windows of ``length_window`` batches (less padding, but a window's
    # batches lean to one source when sources differ in length; see core/lm/order.py).
    group_by_length: bool = False
    length_window: int = DEFAULT_LENGTH_WINDOW

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointSchedule:
    """Keep ``count`` evenly spaced checkpoints, or one ``every`` N steps (and the last step)."""

    count: int | None = 10
    every: int | None = None

    def steps(self, total_steps: int) -> list[int]:
        if self.every:
            steps = set(range(self.every, total_steps + 1, self.every))
        else:
            count = max(1, min(self.count or 1, total_steps))
            steps = {round(total_steps * k / count) for k in range(1, count + 1)}
        steps.add(total_steps)
        return sorted(s for s in steps if s > 0)


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    return max(1, math.ceil(per_epoch * cfg.epochs))


def in_micro_batches(cfg: TrainConfig, max_length: int, max_tokens: int) -> TrainConfig:
    """``cfg`` with each batch of ``batch_size`` rows run as the fewest equal micro-batches of
    at most ``max_tokens`` padded tokens, their gradients accumulated: the same optimizer steps,
    rows and order (the loss is averaged over the whole batch's response tokens, trainer.py),
    with a forward pass's activations a fraction of the whole batch's."""
    parts = next(
        (d for d in range(1, cfg.batch_size + 1)
         if cfg.batch_size % d == 0 and cfg.batch_size // d * max_length <= max_tokens),
        cfg.batch_size,
    )  # fmt: skip
    if parts == 1:
        return cfg
    return replace(cfg, batch_size=cfg.batch_size // parts, grad_accum=cfg.grad_accum * parts)


# An exporter turns (model, tokenizer, step) into a JSON-able record (uri, hash, ...). It may
# also have ``present(record) -> bool``: whether that record's artifact is still where the
# exporter would put it now (a store emptied or moved makes a resume record stale).
Exporter = Callable[[object, object, int], dict]


# Ten minutes: a save of a small model's weights and optimizer state takes well under a second.
RESUME_EVERY_S = 600.0


class RunCanceled(KeyboardInterrupt):
    """The run was canceled; an interrupt, so orchestrators stop rather than retry."""


@dataclass
class TrainHooks:
    """What the caller hears from a training run, how it asks it to stop, and how much work a
    crash may cost."""

    on_log: Callable[[dict, int], None] | None = None  # Trainer logs (loss, lr) per step
    on_message: Callable[[str], None] | None = None  # resumed from step N, checkpoint kept ...
    should_stop: Callable[[], bool] | None = None  # polled every step; True stops with RunCanceled
    # Seconds of training between resume-only saves (not exported, not in the lineage): a crash
    # or kill -9 loses at most this much, not the time since the last kept checkpoint (hours on
    # a large set when only 2 are kept). None: resume from kept checkpoints only.
    resume_every_s: float | None = RESUME_EVERY_S

    def say(self, text: str) -> None:
        log.info(text)
        if self.on_message:
            self.on_message(text)
