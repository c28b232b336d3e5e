"""Hyperparameters shared by the proxy and the target, as Dagster config."""

from dataclasses import fields
from typing import Any

import dagster as dg
from pydantic import Field

from ..core.lm.train_config import TrainConfig


class LMTrainingConfig(dg.Config):
    """The fields of core ``TrainConfig`` plus the model; subclasses set their own defaults."""

    model: str = Field(
        "embedded",
        description="'embedded' (GPT-NeoX from a config, BPE tokenizer from the data) or a HF "
        "causal LM name or folder, e.g. EleutherAI/pythia-70m-deduped.",
    )
    epochs: float = TrainConfig.epochs
    learning_rate: float = TrainConfig.learning_rate
    batch_size: int = TrainConfig.batch_size
    grad_accum: int = TrainConfig.grad_accum
    warmup_ratio: float = TrainConfig.warmup_ratio
    scheduler: str = TrainConfig.scheduler
    weight_decay: float = TrainConfig.weight_decay
    # Any: Dagster config has no 'int or "auto"' type; train_config() checks the value.
    max_length: Any = Field(
        TrainConfig.max_length,
        description="Tokens per example (longer ones are truncated), or 'auto': the smallest "
        "multiple of 8 covering the 99th percentile of prompt + response tokens of the "
        "training rows, at most max_length_cap; the step log and the manifest say what it "
        "chose.",
    )
    max_length_cap: int = Field(
        TrainConfig.max_length_cap, description="The most tokens 'auto' may choose."
    )
    seed: int = TrainConfig.seed
    group_by_length: bool = Field(
        TrainConfig.group_by_length,
        description="Off (default): a seeded uniform shuffle each epoch, as the official S2L "
        "proxy training. On: sort rows by length inside shuffled windows of length_window "
        "batches: less padding (faster), but when sources differ in length a window's batches "
        "lean to one source, and the proxy's losses then carry the schedule. The asset's "
        "longest_single_source_run shows the effect.",
    )
    length_window: int = Field(
        TrainConfig.length_window,
        description="With group_by_length: batches per window (larger: less padding, longer "
        "runs of one source).",
    )

    def train_config(self) -> TrainConfig:
        """Every TrainConfig field, from this config; a missing one is an error, not a skip."""
        cfg = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})
        auto = cfg.max_length == "auto"
        if not auto and not (isinstance(cfg.max_length, int) and cfg.max_length >= 8):
            raise ValueError(
                f"max_length: 'auto' or a count of at least 8 tokens, not {cfg.max_length!r}"
            )
        return cfg
