"""What the stages pass each other: small typed records of where things are and what made them.

Each is a dataclass written as JSON (``to_dict``) and read back (``from_dict``); tables are
``TableRef``s, checkpoints ``Checkpoint``s, settings the core dataclasses that hold them
(``TrainConfig``, ``ModelSpec``, ``SelectionOptions``), so a reader gets attributes, not keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..lm.fit import TrainedModel
from ..selection.common import SelectionOptions
from ..study.cells import CellResult
from ..support.records import from_plain, to_plain
from ..support.storage import ArtifactStore
from ..support.tables import TableRef
from ..trajectories import ScoringUnit


class Manifest:
    """JSON round trip for the dataclasses below."""

    def to_dict(self) -> dict:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict):
        return from_plain(cls, data)


M = TypeVar("M", bound=Manifest)


def manifest_key(asset: str, partition: str | None = None) -> str:
    """Where the IO manager keeps an asset's (partition's) manifest in the artifact store."""
    return f"_manifests/{asset}/{partition or '__unpartitioned__'}.json"


def read_manifest(
    store: ArtifactStore, kind: type[M], asset: str, partition: str | None = None
) -> M | None:
    """An asset's stored manifest, for readers outside a run (sensors, export, listings)."""
    key = manifest_key(asset, partition)
    return kind.from_dict(json.loads(store.read_text(key))) if store.exists(key) else None


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
class TrainedOn(Manifest):
    """The data a proxy trained on: the base table, every shard by content hash, the rows."""

    raw_dataset: str
    shards: dict[str, str]
    rows: int


@dataclass(frozen=True)
class ModelManifest(TrainedModel, Manifest):
    """A trained model (the proxy): its checkpoints, how it was trained, on what."""

    mlflow_run_id: str | None = None
    trained_on: TrainedOn | None = None  # the proxy's data

    @classmethod
    def of(cls, trained: TrainedModel, **extra: Any):
        """``trained`` as this manifest, with the fields only the manifest has."""
        own = {f.name: getattr(trained, f.name) for f in dataclasses.fields(TrainedModel)}
        return cls(**own, **extra)


@dataclass(frozen=True)
class TargetManifest(ModelManifest):
    """A target trained on one training set of a subset, and the chain that made that set."""

    lineage: dict = field(default_factory=dict)
    training_set: str | None = None
    training_rows_hash: str | None = None
    training_ids: str | None = None
    selection_method: str | None = None
    modal_answers: dict = field(default_factory=dict)  # source -> its commonest answer


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
    options: SelectionOptions  # ``steps``: the checkpoint steps the trajectories used
    n_clusters: int
    pool: dict
    seed: int = 0


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


@dataclass(frozen=True)
class StudySplitManifest(Manifest):
    """What a study's cells select from and are judged on, and its MLflow parent run."""

    train: TableRef
    trajectories: TableRef
    validation: TableRef
    study_id: str
    validation_share: float
    seed: int
    lineage: dict
    mlflow_parent_run_id: str | None = None
    test: TableRef | None = None  # the held-out test judge; None: validation judges alone
    judges: dict = field(default_factory=dict)  # judge -> where its rows came from

    def judge_table(self, judge: str) -> TableRef:
        """The table a cell judged by ``judge`` ('validation' or 'test') reads."""
        if judge == "test":
            if self.test is None:
                raise ValueError(f"study {self.study_id} has no test split (split: test_share "
                                 "or test_files)")  # fmt: skip
            return self.test
        return self.validation


@dataclass(frozen=True)
class StudyCellManifest(CellResult, Manifest):
    mlflow_run_id: str | None = None


@dataclass(frozen=True)
class StudyReportManifest(Manifest):
    report: TableRef | None  # the curve as a table
    report_json: str  # uri of the whole report (JSON)
    report_md: str  # uri of the report a person reads
    plot: str  # uri of the PNG
    study_id: str
    cells: int
    recommendation: list[str]
    spec_id: str = ""  # the registered spec the report follows ('' : none given)


# --- the scoring graph's inner values (loss_trajectories' ops pass these to each other)


@dataclass(frozen=True)
class ScoringPlan(Manifest):
    """Per-example token facts, the table scored and the proxy scoring it."""

    base: TableRef
    train: TableRef
    proxy_fingerprint: str


@dataclass(frozen=True)
class ScoringWork(Manifest):
    """One (checkpoint, shard) unit to score, and the table its rows come from."""

    unit: ScoringUnit
    train: TableRef


@dataclass(frozen=True)
class ScoredUnit(Manifest):
    """Where one unit's losses are, and whether an earlier run had already scored them."""

    step: int
    uri: str
    reused: bool
