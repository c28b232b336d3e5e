"""Hyperparameters shared by the proxy and the target, as Dagster config."""

from dataclasses import fields

import dagster as dg
from pydantic import Field

from ..core.lm.trainer import TrainConfig


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
    max_length: int = Field(
        TrainConfig.max_length, description="Tokens per example; longer ones are truncated."
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
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})
