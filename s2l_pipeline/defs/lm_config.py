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
    epochs: float = 3.0
    learning_rate: float = 2e-3
    batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_length: int = Field(128, description="Tokens per example; longer ones are truncated.")
    seed: int = 0

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            **{f.name: getattr(self, f.name) for f in fields(TrainConfig) if hasattr(self, f.name)}
        )
