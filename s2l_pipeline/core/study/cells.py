"""A study's cells: one (method, budget, seed) each, named by a partition key, and what a
finished cell measured."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from .report import FULL, StudyCell

NESTING_METHODS = ("random", "s2l")  # subsets nest across budgets with the `nested` option


@dataclass(frozen=True, order=True)
class CellSpec:
    method: str
    budget: float  # a fraction of the study's training rows; 1.0 for full data
    seed: int

    @property
    def key(self) -> str:
        """The partition key, e.g. 's2l-0.1-0' (method names hold no '-')."""
        return f"{self.method}-{self.budget:g}-{self.seed}"

    def params(self, selector: str, arm_options: dict, nested: bool) -> dict:
        """The cell's parameters as a tracking run records them."""
        return {"method": selector, "arm": self.method, "budget": self.budget,
                "seed": self.seed, "nested": nested,
                **{f"arm.{k}": v for k, v in arm_options.items()}}  # fmt: skip


def parse_cell_key(key: str) -> CellSpec:
    """'learning_percentage-0.05-2' -> CellSpec; a clear error for anything else."""
    parts = key.rsplit("-", 2)
    try:
        method, budget, seed = parts[0], float(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"study cell {key!r}: expected <method>-<budget fraction>-<seed>, e.g. s2l-0.1-0"
        ) from None
    if not 0 < budget <= 1 or (method == FULL and budget != 1):
        raise ValueError(f"study cell {key!r}: budget must be a fraction in (0, 1] (full: 1)")
    return CellSpec(method, budget, seed)


def study_grid(
    methods: list[str], budgets: list[float], seeds: int, full: bool = True,
    full_seeds: int | None = None,
) -> list[CellSpec]:  # fmt: skip
    """Every cell of the grid, plus full data once per seed (or for its first ``full_seeds``:
    what 'within epsilon' compares with); 'random' is added when missing, since every method
    is compared with it."""
    bad = [b for b in budgets if not 0 < b < 1]
    if bad:
        raise ValueError(f"--budgets are fractions of the pool in (0, 1); not {bad}")
    if seeds < 1:
        raise ValueError("--seeds: at least 1 (2 or more for any interval)")
    names = list(dict.fromkeys([*methods, "random"]))
    cells = [CellSpec(m, float(b), s) for m in names for b in sorted(budgets) for s in range(seeds)]
    if full:
        cells += [
            CellSpec(FULL, 1.0, s) for s in range(seeds if full_seeds is None else full_seeds)
        ]
    return cells


@dataclass(frozen=True)
class CellResult:
    """One finished cell: its score on its judge (validation or test) and what it cost."""

    key: str
    method: str
    budget: float
    seed: int
    study_id: str  # the split it was judged on
    recipe: str  # the target recipe, evaluation and selection settings, hashed
    rows: int
    score: float  # mean over the validation sets of accuracy (math) or ROUGE-L (summaries)
    nll: float
    metric: str
    per_set: dict = field(default_factory=dict)
    floor: float | None = None  # each set's constant answer scored (commonest training one)
    collapsed: dict = field(default_factory=dict)  # set -> [prediction, share]: one answer
    nested: bool = False
    selection_cpu_seconds: float = 0.0
    selection_flops: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    train_tokens: int = 0  # tokens per epoch
    epochs: float = 0.0
    target_parameters: int = 0
    checkpoint_uri: str = ""
    predictions_uri: str = ""
    training_ids_uri: str = ""
    rows_hash: str = ""
    selector: str = ""  # the method the arm runs (``method`` is the arm's name); "" : method
    arm_options: dict = field(default_factory=dict)  # the arm's selector options
    correct: str = ""  # per judged row, '1'/'0' in the predictions' order (math sets)
    judge: str = "validation"  # what scored it: the validation split, or the held-out test
    # Per set: accuracy on the items whose answer is none of the pool's collapse answers.
    off_mode: dict = field(default_factory=dict)  # set -> {accuracy, items, floor}
    numerics: dict = field(default_factory=dict)  # threads etc. when set (lm/numerics.py)
    converted_from: str = ""  # a record made by another engine and converted: where it was

    def tracked_metrics(self) -> dict:
        """What a tracking run records of a finished cell."""
        return {"score": self.score, "nll": self.nll, "rows": self.rows,
                "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "selection_cpu_seconds": self.selection_cpu_seconds,
                "selection_flops": self.selection_flops,
                **({"floor": self.floor} if self.floor is not None else {})}  # fmt: skip

    def endpoint_score(self, endpoint: str = "score") -> float:
        """The cell's value on a study's primary endpoint (spec.py's ENDPOINTS), a fraction
        where higher is better."""
        if endpoint == "score":
            return self.score
        if endpoint == "score_over_floor":
            if self.floor is None:
                raise ValueError(f"cell {self.key}: no most-common-answer floor to subtract")
            return self.score - self.floor
        if endpoint == "nll":
            return -self.nll
        if endpoint == "off_mode":
            if not self.off_mode:
                raise ValueError(f"cell {self.key}: no off-mode score (no math set judged)")
            return sum(s["accuracy"] for s in self.off_mode.values()) / len(self.off_mode)
        raise ValueError(f"unknown endpoint {endpoint!r}")

    def study_cell(self, endpoint: str = "score") -> StudyCell:
        floor = {"score": self.floor, "score_over_floor": 0.0, "off_mode": self.off_mode_floor
                 }.get(endpoint)  # fmt: skip
        return StudyCell(
            self.method, self.budget, self.seed, self.endpoint_score(endpoint), self.nll, floor,
            bool(self.collapsed),
        )  # fmt: skip

    @property
    def off_mode_floor(self) -> float | None:
        """What one answer per set earns on the off-mode items (their commonest answer)."""
        if not self.off_mode:
            return None
        return sum(s["floor"] for s in self.off_mode.values()) / len(self.off_mode)

    @property
    def train_flops(self) -> float:
        """6 x parameters x tokens seen: the usual estimate of a training run's FLOPs."""
        return 6.0 * self.target_parameters * self.train_tokens * self.epochs


def validation_score(metrics: pl.DataFrame) -> tuple[float, float, str, dict]:
    """(score, NLL, metric name, per set): each set weighs the same; a math set gives its
    accuracy, a summarization set its ROUGE-L."""
    per_set = {}
    for r in metrics.iter_rows(named=True):
        per_set[r["eval_set"]] = float(r["accuracy"] if r["task"] == "math" else r["rougeL"])
    tasks = set(metrics["task"].to_list())
    metric = (
        "accuracy"
        if tasks == {"math"}
        else "ROUGE-L"
        if tasks == {"summarization"}
        else ("accuracy / ROUGE-L")
    )
    score = sum(per_set.values()) / len(per_set)
    return score, float(metrics["mean_nll"].mean()), metric, dict(sorted(per_set.items()))
