"""What can be checked before the proxy trains: a mistake found after an hour of training
(a budget above the pool, a missing test file, prompts that fill max_length) costs that hour."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from .data.eval_sets import EvalFile, load_eval_file
from .data.readers import FileReadError
from .lm.encoding import encode
from .lm.fit import ModelSpec, build_tokenizer, resolve_max_length
from .lm.train_config import TrainConfig
from .selection.budget import parse_budget, resolve_budget
from .trajectories import TooManyUnscorable, check_unscorable


def budget_problem(budget: str, pool_rows: int) -> str | None:
    """The budget against the pool it will be drawn from."""
    try:
        n = resolve_budget(parse_budget(budget), pool_rows)
    except ValueError as exc:
        return f"selected_subset: {exc}"
    return None if n > 0 else f"selected_subset: budget {budget} selects no row of {pool_rows}"


def eval_file_problems(
    files: Sequence[EvalFile], endpoint_url: str | None, max_rejected_share: float
) -> list[str]:
    """Every evaluation file exists, parses, and maps (templates, answer type) as configured."""
    problems = []
    for spec in files:
        try:
            load_eval_file(spec, endpoint_url, max_rejected_share)
        except (FileReadError, ValueError) as exc:  # missing, unreadable, unknown schema ...
            problems.append(f"eval_sets: {exc}")
    return problems


def unscorable_rows(
    train: pl.DataFrame, spec: ModelSpec, cfg: TrainConfig, max_share: float
) -> tuple[int, int, str | None]:
    """(rows whose prompt fills max_length under the proxy's tokenizer, that max_length (an
    'auto' one resolved as training will), the problem when those rows pass ``max_share``)."""
    tokenizer = build_tokenizer(spec, train)
    max_length, _ = resolve_max_length(train, tokenizer, cfg)
    enc = encode(train, tokenizer, max_length)
    base = pl.DataFrame({"n_response_tokens": enc.n_response_tokens})
    try:
        return check_unscorable(base, max_share, max_length), max_length, None
    except TooManyUnscorable as exc:
        n = int((base["n_response_tokens"] == 0).sum())
        return n, max_length, f"proxy_checkpoints: {exc}"
