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
        TrainConfig.group_by_length, description="Batch rows of similar length (less padding)."
    )

    def train_config(self) -> TrainConfig:
        """Every TrainConfig field, from this config; a missing one is an error, not a skip."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in fields(TrainConfig)})
