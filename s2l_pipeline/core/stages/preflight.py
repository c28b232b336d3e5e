"""The stage before the proxy trains: what a run's settings ask of its data, checked at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..lm.fit import TrainRun
from ..preflight import budget_problem, eval_file_problems, unscorable_rows
from ..support.storage import ArtifactStore
from ..support.tables import read_table
from .data import NO_EVAL_SETS, EvalSetsOptions
from .manifests import RawDatasetManifest, ShardManifest
from .trajectories import ScoringOptions


@dataclass(frozen=True)
class Preflight:
    problems: list[str]
    pool_rows: int
    unscorable: int  # rows with no response token within max_length
    max_length: int  # as training will resolve it ('auto' included)


def check_inputs(
    raw: RawDatasetManifest,
    shards: Mapping[str, ShardManifest | None],
    budget: str | None,
    evals: EvalSetsOptions | None,
    proxy: TrainRun,
    scoring: ScoringOptions,
    store: ArtifactStore,
) -> Preflight:
    """The budget against the pool, every evaluation file, and prompts that fill max_length;
    None for the budget or the evaluation: this run does not select or evaluate."""
    train = read_table(raw.train, store)
    pool_rows = train.height + sum(m.train.rows for m in shards.values() if m is not None)
    problems = [p for p in [budget_problem(budget, pool_rows) if budget else None] if p]
    if evals is not None:
        problems += eval_file_problems(evals.files, store.endpoint_url, evals.max_rejected_share)
        with_ood = raw.embedded if evals.out_of_domain is None else evals.out_of_domain
        held = read_table(raw.heldout, store).height
        if not evals.files and not held and not (with_ood and evals.ood_per_family > 0):
            problems.append(f"eval_sets: {NO_EVAL_SETS}")
    cfg = replace(proxy.train, max_length=scoring.max_length or proxy.train.max_length)
    unscorable, max_length, fit = unscorable_rows(
        train, proxy.model, cfg, scoring.max_unscorable_share
    )
    return Preflight(problems + ([fit] if fit else []), pool_rows, unscorable, max_length)
