"""The loss-trajectory table: one row per example, one float32 column per checkpoint.

Scoring is cut into units of (checkpoint, shard of rows) so that each unit can run as its own
step on its own worker; each unit writes a small Parquet file, and the table is assembled from
them. Units are keyed by content, so a unit already on disk is never scored again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .lm.encoding import Encoded, encode
from .lm.losses import score_losses
from .support.hashing import file_hash, table_hash
from .support.storage import ArtifactStore

SCORER_VERSION = "1"


def loss_column(step: int) -> str:
    return f"loss_step_{step}"


def loss_columns(df: pl.DataFrame) -> list[str]:
    """Loss columns in step order."""
    cols = [c for c in df.columns if c.startswith("loss_step_")]
    return sorted(cols, key=step_of)


def steps_of(df: pl.DataFrame) -> list[int]:
    return [step_of(c) for c in loss_columns(df)]


@dataclass(frozen=True)
class ScoringUnit:
    """One checkpoint scored on rows [start, stop) of the training table."""

    step: int
    checkpoint_uri: str
    checkpoint_hash: str
    start: int
    stop: int
    data_hash: str
    max_length: int
    token_budget: int | None

    @property
    def key(self) -> str:
        """Content key: same checkpoint, rows and settings -> same key -> reuse the result."""
        ident = json.dumps(
            [
                SCORER_VERSION,
                self.checkpoint_hash,
                self.data_hash,
                self.start,
                self.stop,
                self.max_length,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(ident.encode()).hexdigest()[:20]

    @property
    def mapping_key(self) -> str:
        return f"step_{self.step}_rows_{self.start}_{self.stop}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScoringUnit:
        return cls(**d)


def plan_units(
    checkpoints: list[dict],
    n_rows: int,
    shard_rows: int,
    data_hash: str,
    max_length: int,
    token_budget: int | None,
) -> list[ScoringUnit]:
    """Every (checkpoint, shard) pair; ``checkpoints`` are records with step, uri, sha256."""
    shard_rows = max(1, shard_rows)
    return [
        ScoringUnit(
            c["step"],
            c["uri"],
            c["sha256"],
            start,
            min(start + shard_rows, n_rows),
            data_hash,
            max_length,
            token_budget,
        )
        for c in sorted(checkpoints, key=lambda c: c["step"])
        for start in range(0, max(n_rows, 1), shard_rows)
    ]


def unit_frame(example_ids: list[str], losses: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"example_id": example_ids, "loss": losses.astype(np.float32)},
        schema={"example_id": pl.String, "loss": pl.Float32},
    )


def assemble(base: pl.DataFrame, unit_tables: dict[int, list[pl.DataFrame]]) -> pl.DataFrame:
    """Wide table: ``base`` (example_id, n_response_tokens, truncated) + one column per step.

    ``unit_tables`` maps step -> its shard tables; every example must be scored exactly once
    per step, else the assembly fails loudly rather than leaving holes.
    """
    out = base
    for step in sorted(unit_tables):
        col = pl.concat(unit_tables[step]).rename({"loss": loss_column(step)})
        if col.height != base.height or col["example_id"].n_unique() != base.height:
            raise ValueError(
                f"step {step}: {col.height} scores for {base.height} examples "
                "(a shard is missing or repeated)"
            )
        out = out.join(col, on="example_id", how="left", maintain_order="left")
    cols = [
        "example_id",
        *[loss_column(s) for s in sorted(unit_tables)],
        "n_response_tokens",
        "truncated",
    ]
    return out.select(cols)


def loss_summary(df: pl.DataFrame) -> pl.DataFrame:
    """Mean and percentiles of the loss at each checkpoint (NaN rows left out)."""
    rows = []
    for col, step in zip(loss_columns(df), steps_of(df), strict=True):
        s = df[col].drop_nans().drop_nulls()
        rows.append(
            {
                "step": step,
                "mean": float(s.mean()) if s.len() else float("nan"),
                "p10": float(s.quantile(0.1)) if s.len() else float("nan"),
                "p50": float(s.quantile(0.5)) if s.len() else float("nan"),
                "p90": float(s.quantile(0.9)) if s.len() else float("nan"),
            }
        )
    return pl.DataFrame(rows)


class CheckpointIntegrityError(ValueError):
    """A checkpoint's weights differ from the hash recorded when it was trained."""


def base_table(example_ids: list[str], enc: Encoded) -> pl.DataFrame:
    """Per-example facts that do not depend on the checkpoint."""
    return pl.DataFrame(
        {
            "example_id": example_ids,
            "n_response_tokens": enc.n_response_tokens,
            "truncated": enc.truncated,
        },
        schema={"example_id": pl.String, "n_response_tokens": pl.Int32, "truncated": pl.Boolean},
    )


def load_checkpoint(unit: ScoringUnit, store: ArtifactStore, device: str | None = None):
    """(model, tokenizer) of the unit's checkpoint, refusing one whose weights changed."""
    import torch

    from .lm.models import load_causal_lm

    local = store.fetch_dir(unit.checkpoint_uri)
    digest = file_hash(local / "model.safetensors")
    if digest != unit.checkpoint_hash:
        raise CheckpointIntegrityError(
            f"{unit.checkpoint_uri}: weights hash {digest[:12]} does not match the manifest's "
            f"{unit.checkpoint_hash[:12]}; the checkpoint was modified after training"
        )
    model, tokenizer = load_causal_lm(local)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer


def score_unit(
    unit: ScoringUnit,
    rows: pl.DataFrame,
    store: ArtifactStore,
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Losses of ``rows`` (the unit's slice of the training table) at the unit's checkpoint."""
    model, tokenizer = load_checkpoint(unit, store)
    enc = encode(rows, tokenizer, unit.max_length)
    losses = score_losses(model, enc, unit.token_budget, progress)
    return unit_frame(rows["example_id"].to_list(), losses)


def score_rows(
    rows: pl.DataFrame,
    checkpoints: list[dict],
    store: ArtifactStore,
    max_length: int,
    token_budget: int | None = None,
) -> pl.DataFrame:
    """The trajectory table of ``rows`` at every checkpoint, in one process: the same units,
    scoring and assembly as the fanned-out asset, for a shard or any small table."""
    from transformers import AutoTokenizer

    units = plan_units(
        checkpoints, rows.height, max(rows.height, 1), table_hash(rows), max_length, token_budget
    )
    by_step = {u.step: [score_unit(u, rows, store)] for u in units}
    tokenizer = AutoTokenizer.from_pretrained(str(store.fetch_dir(checkpoints[0]["uri"])))
    enc = encode(rows, tokenizer, max_length)
    return assemble(base_table(rows["example_id"].to_list(), enc), by_step)


def incremental_trajectories(
    rows: pl.DataFrame, known: pl.DataFrame | None, score: Callable[[pl.DataFrame], pl.DataFrame]
) -> tuple[pl.DataFrame, int, int]:
    """Trajectories of ``rows`` in their order, taking rows already in ``known`` (same proxy)
    from there and scoring only the rest; returns (table, n_scored, n_reused)."""
    reused = (
        known.join(rows.select("example_id"), on="example_id", how="semi")
        if known is not None and known.height
        else None
    )
    todo = (
        rows
        if reused is None
        else rows.join(reused.select("example_id"), on="example_id", how="anti")
    )
    parts = [p for p in (reused, score(todo) if todo.height else None) if p is not None]
    if not parts:
        raise ValueError("no rows to score")
    cols = parts[-1].columns
    table = pl.concat([p.select(cols) for p in parts], how="vertical")
    order = rows.select("example_id").with_row_index("_order")
    table = table.join(order, on="example_id").sort("_order").drop("_order")
    return table, todo.height, 0 if reused is None else reused.height


class TooManyUnscorable(ValueError):
    """Too many rows have no response token left within max_length."""


def check_unscorable(base: pl.DataFrame, max_share: float, max_length: int) -> int:
    """Count rows whose prompt fills ``max_length`` (no response token left: no loss, never
    selectable); raise TooManyUnscorable past ``max_share`` of the rows, with what to change."""
    n = int((base["n_response_tokens"] == 0).sum())
    share = n / base.height if base.height else 0.0
    if share > max_share:
        raise TooManyUnscorable(
            f"{n} of {base.height} rows ({share:.1%}) have no response token within max_length "
            f"{max_length}: their prompts fill it, so they get no loss and can never be "
            f"selected (more than max_unscorable_share {max_share:.1%}). Raise max_length "
            "(proxy_checkpoints and target_model), shorten or left-truncate those prompts, "
            "or raise max_unscorable_share to go on without them."
        )
    return n


def step_of(column: str) -> int:
    """The checkpoint step of a ``loss_step_<N>`` column."""
    return int(column.rsplit("_", 1)[1])


def token_facts(train: pl.DataFrame, tokenizer_dir: Path, max_length: int) -> pl.DataFrame:
    """The base table of a trajectory run: each row's response tokens and truncation flag
    under the proxy's tokenizer (the same for every checkpoint)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return base_table(train["example_id"].to_list(), encode(train, tokenizer, max_length))
