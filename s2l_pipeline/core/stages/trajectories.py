"""Trajectory stages: the base table planned into (checkpoint x shard) units, each unit scored,
the units joined into one wide table; a new shard scored against what is known already."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from ..support.hashing import table_hash
from ..support.storage import ArtifactStore
from ..support.tables import read_table, write_table
from ..trajectories import (
    assemble,
    check_unscorable,
    incremental_trajectories,
    loss_summary,
    plan_units,
    score_rows,
    score_unit,
    token_facts,
)
from .manifests import (
    ModelManifest,
    RawDatasetManifest,
    ScoredUnit,
    ScoringPlan,
    ScoringWork,
    ShardManifest,
    ShardTrajectoriesManifest,
    TrajectoriesManifest,
)


@dataclass(frozen=True)
class ScoringOptions:
    shard_rows: int = 1_000_000  # rows per scoring unit; smaller units fan out to more workers
    token_budget: int | None = None  # padded tokens per batch; None: 8K on CPU, 64K on CUDA
    max_length: int | None = None  # tokens per example; None: the proxy's training max_length
    max_unscorable_share: float = 0.05  # fail when more rows have no response token in reach


@dataclass(frozen=True)
class Plan:
    plan: ScoringPlan
    work: list[ScoringWork]
    rows: int
    max_length: int
    unscorable: int  # rows with no response token within max_length


def plan_scoring(
    raw: RawDatasetManifest, proxy: ModelManifest, opts: ScoringOptions, store: ArtifactStore
) -> Plan:
    """Token facts of every row, and the units to score; raises TooManyUnscorable first."""
    train = read_table(raw.train, store)
    max_length = opts.max_length or proxy.train.max_length
    base = token_facts(train, store.fetch_dir(proxy.checkpoints[0].uri), max_length)
    unscorable = check_unscorable(base, opts.max_unscorable_share, max_length)
    base_hash = table_hash(base)
    base_ref = write_table(
        base, store, f"loss_trajectories/base/{base_hash[:16]}.parquet", base_hash
    )
    units = plan_units(
        proxy.checkpoint_records(),
        train.height,
        opts.shard_rows,
        raw.train.content_hash,
        max_length,
        opts.token_budget,
    )
    plan = ScoringPlan(base=base_ref, train=raw.train, proxy_fingerprint=proxy.fingerprint)
    work = [ScoringWork(unit=u, train=raw.train) for u in units]
    return Plan(plan, work, train.height, max_length, unscorable)


def unit_key(work: ScoringWork) -> str:
    """Where a unit's losses are stored: by content, so any run with the same unit reuses them."""
    return f"loss_trajectories/units/{work.unit.key}.parquet"


def score_work(
    work: ScoringWork, store: ArtifactStore, progress: Callable[[str], None] | None = None
) -> ScoredUnit:
    """One unit's losses, scored and stored, or found stored by an earlier run."""
    unit, key = work.unit, unit_key(work)
    if store.exists(key):
        return ScoredUnit(step=unit.step, uri=store.uri(key), reused=True)
    rows = read_table(work.train, store).slice(unit.start, unit.stop - unit.start)
    ref = write_table(score_unit(unit, rows, store, progress), store, key)
    return ScoredUnit(step=unit.step, uri=ref.uri, reused=False)


@dataclass(frozen=True)
class Assembled:
    manifest: TrajectoriesManifest
    summary: pl.DataFrame  # loss per checkpoint: mean and percentiles
    rows: int
    truncated: int
    unscorable: int
    reused: int  # units an earlier run had scored


def assemble_scores(plan: ScoringPlan, scored: list[ScoredUnit], store: ArtifactStore) -> Assembled:
    """Every unit's losses joined into the wide table: one row per example, a column per step."""
    by_step: dict[int, list[pl.DataFrame]] = {}
    for s in sorted(scored, key=lambda s: (s.step, s.uri)):
        by_step.setdefault(s.step, []).append(read_table(s.uri, store))
    table = assemble(read_table(plan.base, store), by_step)
    version = table_hash(table)
    ref = write_table(
        table, store, f"loss_trajectories/{version[:16]}/trajectories.parquet", version
    )
    summary = loss_summary(table)
    manifest = TrajectoriesManifest(
        trajectories=ref,
        steps=summary["step"].to_list(),
        proxy_fingerprint=plan.proxy_fingerprint,
    )
    return Assembled(
        manifest,
        summary,
        table.height,
        int(table["truncated"].sum()),
        int((table["n_response_tokens"] == 0).sum()),
        sum(1 for s in scored if s.reused),
    )


def score_table(
    rows: pl.DataFrame, proxy: ModelManifest, store: ArtifactStore, max_length: int | None = None
) -> pl.DataFrame:
    """The trajectory table of ``rows`` at every checkpoint of ``proxy``, in one process."""
    return score_rows(rows, proxy.checkpoint_records(), store, max_length or proxy.train.max_length)


@dataclass(frozen=True)
class ShardScores:
    manifest: ShardTrajectoriesManifest
    scored: int
    reused: int


def score_shard(
    shard: ShardManifest,
    proxy: ModelManifest,
    base: TrajectoriesManifest,
    store: ArtifactStore,
) -> ShardScores:
    """A shard's trajectories at the proxy's checkpoints; rows this proxy scored before (in
    the base table or an earlier run of this shard) are reused, not rescored."""
    rows = read_table(shard.train, store)
    key = f"shard_trajectories/{proxy.fingerprint}/{shard.train.content_hash[:16]}.parquet"
    known = []
    if store.exists(key):
        known.append(read_table(store.uri(key), store))
    if base.proxy_fingerprint == proxy.fingerprint:
        base_table = read_table(base.trajectories, store)
        known.append(base_table.join(rows.select("example_id"), on="example_id", how="semi"))
    table, n_scored, n_reused = incremental_trajectories(
        rows,
        pl.concat(known, how="vertical_relaxed").unique("example_id") if known else None,
        lambda todo: score_table(todo, proxy, store),
    )
    ref = write_table(table, store, key, table_hash(table))
    manifest = ShardTrajectoriesManifest(
        trajectories=ref,
        train=shard.train,
        shard=shard.shard,
        proxy_fingerprint=proxy.fingerprint,
    )
    return ShardScores(manifest, n_scored, n_reused)
