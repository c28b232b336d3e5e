"""A study written down before it runs: ``s2l study --spec study.yaml``.

The spec names the data, the study target, the arms (named selector settings), the budgets,
the seed policy, the primary endpoint, the comparisons and epsilon. What decides the answer
(arms, budgets, endpoint, comparisons, epsilon, seeds) is hashed into the spec's id, which
the report carries: a study whose endpoint was changed after its cells were seen gets a new id,
and its report says how many cells of the same data were finished before it was registered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..selection import METHODS
from ..selection.common import SelectionOptions
from .report import BASELINE, FULL
from .sequential import Comparison, SeedPolicy

ENDPOINTS = {
    "score": "accuracy (math) or ROUGE-L (summaries), each validation set weighing the same",
    "score_over_floor": "the score minus each cell's most-common-answer floor (the answer "
    "prior): what the target learned beyond guessing the commonest answer",
    "nll": "the judge's NLL of the references, negated so that higher is better",
    "off_mode": "accuracy on the items whose answer is neither the pool's commonest nor their "
    "source's commonest in the pool: credit a collapsed model cannot earn",
}
# What an arm may set beside its method: the selector's options (SelectionOptions' fields).
ARM_OPTIONS = tuple(f.name for f in dataclasses.fields(SelectionOptions))
ARM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a cell key is '<arm>-<budget>-<seed>'
TOP_KEYS = ("data", "target", "split", "proxy", "tuning", "arms", "budgets", "seeds",
            "full_seeds", "draws", "endpoint", "comparisons", "epsilon")  # fmt: skip
# What a tuning grid may choose: the study target's recipe settings, chosen on validation.
TUNABLE = ("learning_rate", "epochs")


class SpecError(ValueError):
    """A mistake in a study spec, naming the file and the field."""


@dataclass(frozen=True)
class Arm:
    """A named selector setting, e.g. ``s2l_paper: {method: s2l, min_cluster_size: 3}``."""

    name: str
    method: str
    options: dict = field(default_factory=dict)  # SelectionOptions changes

    def to_dict(self) -> dict:
        return {"method": self.method, **self.options}


@dataclass(frozen=True)
class Tuning:
    """Choices made on the validation split only: every grid point trains ``arm`` at
    ``budget`` for ``seeds`` seeds; the best mean endpoint (ties: the lower NLL) is kept."""

    grid: dict  # setting -> candidate values, e.g. {learning_rate: [5e-4, 1e-3]}
    arm: str = BASELINE
    budget: float | None = None  # None: the study's smallest budget
    seeds: int = 1

    def points(self) -> list[dict]:
        """Every combination of the grid, in the spec's order."""
        out: list[dict] = [{}]
        for name, values in self.grid.items():
            out = [{**p, name: v} for p in out for v in values]
        return out

    def to_dict(self) -> dict:
        """As a spec writes it (the grid's settings beside arm, budget and seeds)."""
        return {**self.grid, "arm": self.arm, "budget": self.budget, "seeds": self.seeds}


@dataclass(frozen=True)
class StudySpec:
    arms: tuple[Arm, ...]
    budgets: tuple[float, ...]
    seeds: int | SeedPolicy = 3
    endpoint: str = "score"
    comparisons: tuple[tuple[str, str], ...] = ()  # (arm, against); both at each budget
    epsilon: float = 1.0
    data: dict = field(default_factory=dict)  # raw_dataset's config (files, or embedded)
    target: dict = field(default_factory=dict)  # study_cells' config (the study target)
    split: dict = field(default_factory=dict)  # study_split's config
    source: str = ""  # the file it was read from
    proxy: dict = field(default_factory=dict)  # proxy_checkpoints' config
    tuning: Tuning | None = None
    full_seeds: int | None = None  # full-data cells (the costliest): None, as many as seeds
    draws: int = 1  # the split (and a generated pool) drawn this many times, seeds nested

    @property
    def tuning_budget(self) -> float:
        return self.tuning.budget if self.tuning and self.tuning.budget else self.budgets[0]

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def arm(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    def grid(self) -> list:
        """Every cell of the study (full data for ``full_seeds`` seeds)."""
        from .cells import study_grid

        return study_grid(self.arm_names, list(self.budgets), self.max_seeds,
                          full_seeds=self.full_seeds)  # fmt: skip

    @property
    def max_seeds(self) -> int:
        return self.seeds.max if isinstance(self.seeds, SeedPolicy) else self.seeds

    def registered(self) -> dict:
        """What decides the answer: fixed before the first cell, hashed into the id."""
        seeds = dataclasses.asdict(self.seeds) if isinstance(self.seeds, SeedPolicy) else self.seeds
        out = {
            "arms": {a.name: a.to_dict() for a in self.arms},
            "budgets": list(self.budgets),
            "seeds": seeds,
            "endpoint": self.endpoint,
            "comparisons": [list(c) for c in self.comparisons],
            "epsilon": self.epsilon,
        }
        if self.tuning is not None:  # a spec without a grid keeps the id it always had
            out["tuning"] = self.tuning.to_dict()
        if self.full_seeds is not None:
            out["full_seeds"] = self.full_seeds
        if self.draws != 1:
            out["draws"] = self.draws
        return out

    @property
    def spec_id(self) -> str:
        text = json.dumps(self.registered(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def to_dict(self) -> dict:
        return {"data": self.data, "target": self.target, "split": self.split,
                **({"proxy": self.proxy} if self.proxy else {}), **self.registered()}  # fmt: skip

    def arm_config(self) -> dict:
        """study_cells' ``arms`` config: the arms that are not a plain method of that name."""
        return {
            a.name: {"method": a.method, "options": a.options}
            for a in self.arms
            if a.options or a.name != a.method
        }

    def pairs(self) -> list[Comparison]:
        """The comparisons at every budget, as the sequential design names arms
        ('s2l@0.1', 'full')."""
        out = []
        for arm, against in self.comparisons:
            for b in self.budgets:
                name = f"{arm}@{b:g}"
                out.append(Comparison(name, FULL if against == FULL else f"{against}@{b:g}"))
        return out


def default_comparisons(arms: list[str], with_full: bool = True) -> list[tuple[str, str]]:
    """Every arm against random (does selection beat it?) and against full data (is this
    budget enough?): what a study of flags compares."""
    out = [(a, BASELINE) for a in arms if a != BASELINE]
    return out + ([(a, FULL) for a in arms] if with_full else [])


def from_flags(methods: list[str], budgets: list[float], seeds: int | SeedPolicy,
               epsilon: float) -> StudySpec:  # fmt: skip
    """The spec `--methods/--budgets/--seeds/--epsilon` stand for: one arm per method."""
    names = list(dict.fromkeys([*methods, BASELINE]))
    arms = tuple(Arm(m, m) for m in names)
    return StudySpec(arms, tuple(sorted(budgets)), seeds, "score",
                     tuple(default_comparisons(names)), epsilon)  # fmt: skip


def load_spec(path: str | Path) -> StudySpec:
    """Read and check a spec file; every mistake names the file and the field."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not a readable YAML study spec ({exc})") from None
    return parse_spec(raw, str(path))


def parse_spec(raw: object, where: str = "study spec") -> StudySpec:
    def bad(field_name: str, what: str) -> SpecError:
        return SpecError(f"{where}: {field_name}: {what}")

    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key; valid: {', '.join(TOP_KEYS)}")
    arms = _arms(raw.get("arms"), bad)
    budgets = _budget_list(raw.get("budgets"), bad)
    seeds = _seed_policy(raw.get("seeds", 3), bad)
    endpoint = raw.get("endpoint", "score")
    if isinstance(endpoint, dict):  # {primary: nll}
        endpoint = endpoint.get("primary")
    if endpoint not in ENDPOINTS:
        raise bad("endpoint", f"one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
    names = [a.name for a in arms]
    comparisons = _comparisons(raw.get("comparisons"), names, bad)
    try:
        epsilon = float(raw.get("epsilon", 1.0))
    except (TypeError, ValueError):
        raise bad("epsilon", f"points, e.g. 1.0; not {raw.get('epsilon')!r}") from None
    sections = {}
    for name in ("data", "target", "split", "proxy"):
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise bad(name, f"a mapping (the {name} asset's config), not {value!r}")
        sections[name] = value
    tuning = _tuning(raw.get("tuning"), names, budgets, sections["target"], bad)
    full_seeds = raw.get("full_seeds")
    most = seeds.max if isinstance(seeds, SeedPolicy) else seeds
    if full_seeds is not None and not (isinstance(full_seeds, int) and 0 <= full_seeds <= most):
        raise bad("full_seeds", f"a count from 0 to the seeds ({most}), not {full_seeds!r}")
    draws = raw.get("draws", 1)
    if not isinstance(draws, int) or draws < 1:
        raise bad("draws", f"a count of data draws, 1 or more (3 for an interval), not {draws!r}")
    if draws > 1 and isinstance(seeds, SeedPolicy):
        raise bad("draws", "draws take a fixed seed count (seeds: 5), not sequential seeds")
    judged_by_files = "validation_files" in sections["split"] and (
        "test_files" in sections["split"] or not sections["split"].get("test_share")
    )
    if draws > 1 and judged_by_files and sections["data"].get("files"):
        raise bad("draws", "nothing is drawn: the pool is your files and every judge a file "
                  "(carve a split, or use the embedded generator)")  # fmt: skip
    return StudySpec(
        arms, budgets, seeds, endpoint, comparisons, epsilon, sections["data"],
        sections["target"], sections["split"], where, sections["proxy"], tuning, full_seeds,
        draws,
    )  # fmt: skip


def _tuning(raw, names: list[str], budgets: tuple[float, ...], target: dict, bad) -> Tuning | None:
    if raw is None:
        return None
    example = "{learning_rate: [0.0005, 0.001], epochs: [10, 30], arm: random}"
    if not isinstance(raw, dict):
        raise bad("tuning", f"a grid, e.g. {example}")
    grid = {k: v for k, v in raw.items() if k not in ("arm", "budget", "seeds")}
    if not grid:
        raise bad("tuning", f"at least one of {', '.join(TUNABLE)} with its values; e.g. {example}")
    for key, values in grid.items():
        if key not in TUNABLE:
            raise bad(f"tuning: {key}", f"not a setting a grid may choose; valid: "
                      f"{', '.join(TUNABLE)}")  # fmt: skip
        if not isinstance(values, list) or not values:
            raise bad(f"tuning: {key}", f"a list of candidate values, not {values!r}")
        try:
            grid[key] = [float(v) for v in values]
        except (TypeError, ValueError):
            raise bad(f"tuning: {key}", f"numbers, not {values!r}") from None
        if key in target:
            raise bad(f"tuning: {key}", f"also fixed in target ({target[key]!r}): one or the other")
    arm = str(raw.get("arm", BASELINE))
    if arm not in names:
        raise bad("tuning: arm", f"{arm!r} is not an arm ({', '.join(names)})")
    budget = raw.get("budget")
    try:
        if budget is not None and not 0 < float(budget) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise bad("tuning: budget", f"a fraction of the pool in (0, 1), not {budget!r}") from None
    seeds = raw.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise bad("tuning: seeds", f"a count of 1 or more, not {seeds!r}")
    return Tuning(grid, arm, float(budget) if budget is not None else None, seeds)


def _arms(raw, bad) -> tuple[Arm, ...]:
    if not isinstance(raw, dict) or not raw:
        example = "{s2l: {method: s2l}, random: {method: random}}"
        raise bad("arms", f"named selector settings, e.g. {example}")
    arms = []
    for name, settings in raw.items():
        name = str(name)
        if not ARM_NAME.match(name) or name == FULL:
            raise bad(f"arms: {name}", "a name of lower-case letters, digits and _ (not 'full')")
        settings = settings or {}
        if not isinstance(settings, dict):
            raise bad(f"arms: {name}", f"a mapping with method: and options, not {settings!r}")
        method = settings.get("method", name)
        if method not in METHODS:
            raise bad(f"arms: {name}: method", f"{method!r} is not one of {', '.join(METHODS)}")
        options = {k: v for k, v in settings.items() if k != "method"}
        for key in options:
            if key not in ARM_OPTIONS:
                raise bad(f"arms: {name}: {key}", f"not a selector option; valid: "
                          f"{', '.join(ARM_OPTIONS)}")  # fmt: skip
        if "steps" in options and options["steps"] is not None:
            options["steps"] = tuple(options["steps"])
        arms.append(Arm(name, method, dict(sorted(options.items()))))
    if BASELINE not in {a.name for a in arms}:
        arms.append(Arm(BASELINE, BASELINE))  # every study has random to compare with
    return tuple(arms)


def _budget_list(raw, bad) -> tuple[float, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad("budgets", "a list of fractions of the pool, e.g. [0.05, 0.1]")
    try:
        out = tuple(sorted(float(b) for b in raw))
    except (TypeError, ValueError):
        raise bad("budgets", f"fractions, not {raw!r}") from None
    wrong = [b for b in out if not 0 < b < 1]
    if wrong:
        raise bad("budgets", f"fractions of the pool in (0, 1); not {wrong}")
    return out


def _seed_policy(raw, bad) -> int | SeedPolicy:
    if isinstance(raw, dict):
        unknown = set(raw) - {"min", "max", "look_every"}
        if unknown:
            example = "{min: 5, max: 30, look_every: 5}"
            raise bad("seeds", f"unknown {sorted(unknown)}; e.g. {example}")
        try:
            return SeedPolicy(**{k: int(v) for k, v in raw.items()})
        except (TypeError, ValueError) as exc:
            raise bad("seeds", str(exc)) from None
    if isinstance(raw, int) and raw >= 1:
        return raw
    raise bad("seeds", f"a count (3) or {{min: 5, max: 30, look_every: 5}}, not {raw!r}")


def _comparisons(raw, names: list[str], bad) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return tuple(default_comparisons(names))
    if not isinstance(raw, list):
        raise bad("comparisons", "a list of [arm, against] pairs, e.g. [[s2l, random]]")
    out = []
    for i, pair in enumerate(raw):
        if isinstance(pair, str):
            pair = [p.strip() for p in pair.split(" vs ")]
        if not isinstance(pair, list) or len(pair) != 2:
            raise bad(f"comparisons[{i}]", f"[arm, against] or 'arm vs against', not {pair!r}")
        arm, against = (str(p) for p in pair)
        for side in (arm, against):
            if side not in names and side != FULL:
                raise bad(f"comparisons[{i}]", f"{side!r} is not an arm ({', '.join(names)}) "
                          "or full")  # fmt: skip
        if arm in (FULL, against):
            raise bad(f"comparisons[{i}]", f"compare an arm with another arm or full: {pair}")
        out.append((arm, against))
    return tuple(out)
