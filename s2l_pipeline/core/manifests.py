"""What the assets pass each other: small typed records of where things are and what made them.

Each is a dataclass written as JSON (``to_dict``) and read back (``from_dict``); tables are
``TableRef``s and checkpoints ``Checkpoint``s, so a reader gets attributes, not string keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .support.tables import TableRef


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        [tp] = [a for a in typing.get_args(tp) if a is not type(None)]
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _decode(hints[k], v) for k, v in value.items() if k in known})
    if origin is list:
        [arg] = typing.get_args(tp)
        return [_decode(arg, v) for v in value]
    return value


class Manifest:
    """JSON round trip for the dataclasses below."""

    def to_dict(self) -> dict:
        return _encode(self)

    @classmethod
    def from_dict(cls, data: dict):
        return _decode(cls, data)


@dataclass(frozen=True)
class Checkpoint(Manifest):
    step: int
    uri: str
    sha256: str


@dataclass(frozen=True)
class RawDatasetManifest(Manifest):
    train: TableRef
    heldout: TableRef
    rejected: TableRef
    embedded: bool = False  # the embedded reasoning-gym mixture is part of the training data
    origins: TableRef | None = None  # each train row's file, line and original record


@dataclass(frozen=True)
class EvalSetsManifest(Manifest):
    eval: TableRef
    rejected: TableRef


@dataclass(frozen=True)
class ShardManifest(Manifest):
    train: TableRef
    rejected: TableRef
    uri: str
    file_sha256: str
    shard: str
    origins: TableRef | None = None  # each row's line and original record


@dataclass(frozen=True)
class ModelManifest(Manifest):
    """A trained model (the proxy, or a target): its checkpoints and how it was trained."""

    fingerprint: str
    data_hash: str
    checkpoints: list[Checkpoint]
    n_parameters: int
    model: dict
    train: dict
    lora_r: int = 0
    n_examples: int = 0
    n_truncated: int = 0
    train_tokens: int = 0
    mlflow_run_id: str | None = None
    trained_on: dict = field(default_factory=dict)  # proxy: raw_dataset, shards, rows
    loss_history: list = field(default_factory=list)  # [step, training loss] pairs
    order: dict = field(default_factory=dict)  # how the first epoch was ordered (order_report)
    # target only
    lineage: dict = field(default_factory=dict)
    training_set: str | None = None
    training_rows_hash: str | None = None
    training_ids: str | None = None
    selection_method: str | None = None
    modal_answers: dict = field(default_factory=dict)  # source (and '*') -> its commonest answer

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]

    def checkpoint_records(self) -> list[dict]:
        """The checkpoints as plain records (step, uri, sha256), as core scoring takes them."""
        return [c.to_dict() for c in self.checkpoints]


@dataclass(frozen=True)
class TrajectoriesManifest(Manifest):
    trajectories: TableRef
    steps: list[int]
    proxy_fingerprint: str | None = None


@dataclass(frozen=True)
class ShardTrajectoriesManifest(Manifest):
    trajectories: TableRef
    train: TableRef
    shard: str
    proxy_fingerprint: str


@dataclass(frozen=True)
class PoolManifest(Manifest):
    train: TableRef
    trajectories: TableRef
    shards: dict
    lineage: dict


@dataclass(frozen=True)
class ClustersManifest(Manifest):
    clusters: TableRef
    options: dict
    n_clusters: int
    pool: dict


@dataclass(frozen=True)
class SubsetManifest(Manifest):
    subset: TableRef
    method: str
    budget: int
    seed: int
    info: dict
    lineage: dict
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class EvaluationManifest(Manifest):
    predictions: TableRef
    metrics: TableRef
    lineage: dict
    headline: dict[str, float]
    metric_by_set: dict = field(default_factory=dict)  # set -> 'accuracy (number)', 'ROUGE-L' ...
