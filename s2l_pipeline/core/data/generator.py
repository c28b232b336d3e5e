"""The embedded default dataset: a MathInstruct-like mixture generated offline by reasoning-gym.

Each reasoning-gym task family is one ``source``, with imbalanced shares as in MathInstruct's
14 sources. Held-out problems are drawn first (from a seed range far from training's) and the
problems they pose, in any wording or family (problem_identity.py), are kept out of training, so
the in-domain test set is neither skewed toward rare items nor seen in another form.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field

import polars as pl

from ..support.hashing import example_ids
from .problem_identity import problem_key
from .schema import EVAL_SCHEMA, REASONING_GYM, as_eval_table, as_raw_table

log = logging.getLogger(__name__)

# reasoning-gym builds item i from Random(seed + i): keep seed ranges of different draws apart.
_TRAIN_SEED_BASE = 1_000_003
_HELDOUT_SEED_OFFSET = 500_000_000
_OOD_SEED_OFFSET = 900_000_000


@dataclass(frozen=True)
class Family:
    """One reasoning-gym task family with the difficulty that a tiny model can learn."""

    name: str
    weight: float
    kwargs: dict = field(default_factory=dict)


# Shares decay like MathInstruct's sources (largest ~8x the smallest). Difficulty: what a tiny
# model can learn; ranges wide enough to give >= 3x more unique questions than needed.
TRAIN_FAMILIES: tuple[Family, ...] = (
    Family(
        "basic_arithmetic",
        0.19,
        dict(
            min_terms=2,
            max_terms=2,
            min_digits=1,
            max_digits=2,
            operators=("+", "-", "*"),
            allow_parentheses=False,
            allow_negation=False,
        ),
    ),
    Family(
        "chain_sum",
        0.14,
        dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2, allow_negation=False),
    ),
    Family(
        "simple_equations",
        0.12,
        dict(
            min_terms=2,
            max_terms=2,
            min_value=1,
            # 20, not 10: at 10 there are only 300 distinct equations, all of them in the
            # held-out set once test problems are kept out of training by identity.
            max_value=20,
            operators=("+", "-"),
            operators_weights=[0.5, 0.5],
        ),
    ),
    Family("products", 0.10, dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)),
    Family("gcd", 0.09, dict(min_numbers=2, max_numbers=2, min_value=1, max_value=60)),
    Family("lcm", 0.08, dict(min_numbers=2, max_numbers=2, min_value=1, max_value=60)),
    Family(
        "leg_counting", 0.07, dict(min_animals=1, max_animals=2, min_instances=1, max_instances=9)
    ),
    Family(
        "fraction_simplification",
        0.06,
        dict(min_value=1, max_value=30, min_factor=1, max_factor=10, styles=("plain",)),
    ),
    Family("base_conversion", 0.05, dict(min_base=2, max_base=16, min_value=1, max_value=255)),
    Family("count_bits", 0.04, dict(min_n=1, max_n=4095)),
    Family("spell_backward", 0.035, dict(min_word_len=3, max_word_len=6)),
    Family(
        "decimal_chain_sum",
        0.025,
        dict(
            min_terms=2,
            max_terms=2,
            min_digits=1,
            max_digits=1,
            min_decimal_places=1,
            max_decimal_places=1,
            allow_negation=False,
        ),
    ),
)

# Families never trained on: the out-of-domain evaluation sets.
OOD_FAMILIES: tuple[Family, ...] = (
    Family("prime_factorization", 1.0, dict(min_value=2, max_value=600)),
    Family("letter_counting", 1.0, dict(min_words=3, max_words=6)),
    Family("count_primes", 1.0, dict(min_n=1, max_n=200)),
    Family("calendar_arithmetic", 1.0, dict(tasks=["weekday_of_date"])),
)

FAMILIES_BY_NAME = {f.name: f for f in TRAIN_FAMILIES + OOD_FAMILIES}


def families_with_settings(
    names: tuple[str, ...], settings: tuple[tuple[str, str, object], ...] = ()
) -> tuple[Family, ...]:
    """Named families at equal weights, each with its (family, key, value) setting changes:
    how a benchmark widens a family without redefining it."""
    changes: dict[str, dict] = {}
    for name, key, value in settings:
        changes.setdefault(name, {})[key] = value
    return tuple(
        Family(n, 1.0, {**FAMILIES_BY_NAME[n].kwargs, **changes.get(n, {})}) for n in names
    )


def allocate(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` by weights with the largest-remainder rule: exact sum, deterministic."""
    wsum = sum(weights)
    raw = [total * w / wsum for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def draw_family(
    family: Family,
    n: int,
    seed: int,
    exclude: frozenset[str] = frozenset(),
    distinct_problems: bool = False,
) -> list[dict]:
    """``n`` items of one family with distinct questions, none posing a problem in ``exclude``
    (problem keys); ``distinct_problems``: no two items pose the same problem either."""
    import reasoning_gym

    if n <= 0:
        return []
    budget = 4 * n + 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = reasoning_gym.create_dataset(family.name, size=budget, seed=seed, **family.kwargs)
    seen: set[str] = set()
    items: list[dict] = []
    for i in range(budget):
        entry = ds[i]
        q = entry["question"]
        key = problem_key(family.name, entry)
        ident = key if distinct_problems else q
        if ident in seen or key in exclude or not str(entry["answer"]).strip():
            continue
        seen.add(ident)
        items.append(entry)
        if len(items) == n:
            return items
    raise ValueError(
        f"reasoning-gym family {family.name!r} gave only {len(items)} distinct usable problems "
        f"of {n} asked for in {budget} draws: lower its share or widen its settings"
    )


def _family_seed(seed: int, index: int) -> int:
    return seed * _TRAIN_SEED_BASE + index * 10_000_019


def _rows(items: list[dict], source: str) -> dict[str, list]:
    prompts = [e["question"] for e in items]
    responses = [str(e["answer"]) for e in items]
    return {
        "example_id": example_ids(prompts, responses),
        "source": [source] * len(items),
        "prompt": prompts,
        "response": responses,
        "answer": responses,
        "task": ["math"] * len(items),
        "metadata": [json.dumps(e.get("metadata", {}), default=str, sort_keys=True) for e in items],
    }


def generate_mixture(
    size: int,
    seed: int = 0,
    heldout_per_family: int = 300,
    families: tuple[Family, ...] = TRAIN_FAMILIES,
    exclude: frozenset[str] = frozenset(),
    keep_metadata: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, in-domain held-out) for the embedded mixture; same arguments, same bytes.
    ``exclude``: problem keys no training row may pose (another draw's test problems);
    ``keep_metadata``: train keeps each item's metadata (JSON), which problem keys read."""
    train_items, held_items = draw_mixture(size, seed, heldout_per_family, families, exclude)
    train_parts, held_parts = [], []
    for family, train, held in zip(families, train_items, held_items, strict=True):
        log.info("family %s: %d train, %d held out", family.name, len(train), len(held))
        train_parts.append(pl.DataFrame(_rows(train, family.name)))
        held_parts.append(_eval_frame(held, family.name, "in_domain"))
    train_df = _raw(pl.concat(train_parts), keep_metadata)
    return train_df, pl.concat(held_parts)


def _raw(df: pl.DataFrame, keep_metadata: bool) -> pl.DataFrame:
    raw = as_raw_table(df)
    return raw.with_columns(df["metadata"]) if keep_metadata else raw


def draw_mixture(
    size: int,
    seed: int,
    heldout_per_family: int,
    families: tuple[Family, ...],
    exclude: frozenset[str] = frozenset(),
) -> tuple[list[list[dict]], list[list[dict]]]:
    """(train entries, held-out entries) per family: every family's test problems are drawn
    first, and none of them is trained on in any family or wording."""
    counts = allocate(size, [f.weight for f in families])
    seeds = [_family_seed(seed, index) for index in range(len(families))]
    held = [
        draw_family(f, heldout_per_family, s + _HELDOUT_SEED_OFFSET, distinct_problems=True)
        for f, s in zip(families, seeds, strict=True)
    ]
    exclude = exclude | frozenset(
        problem_key(f.name, e) for f, items in zip(families, held, strict=True) for e in items
    )
    train = [draw_family(f, n, s, exclude) for f, n, s in zip(families, counts, seeds, strict=True)]
    return train, held


def _eval_frame(items: list[dict], source: str, domain: str) -> pl.DataFrame:
    df = pl.DataFrame(_rows(items, source), schema_overrides={"metadata": pl.String})
    return as_eval_table(
        df.with_columns(
            eval_set=pl.lit(f"{source}"), domain=pl.lit(domain), answer_type=pl.lit(REASONING_GYM)
        )
    )


def generate_ood(
    n_per_family: int, seed: int = 0, families: tuple[Family, ...] = OOD_FAMILIES
) -> pl.DataFrame:
    """Out-of-domain evaluation sets: families the training mixture never contains."""
    parts = [
        _eval_frame(
            draw_family(f, n_per_family, _family_seed(seed, i) + _OOD_SEED_OFFSET),
            f.name,
            "out_of_domain",
        )
        for i, f in enumerate(families)
    ]
    return pl.concat(parts) if parts else pl.DataFrame(schema=EVAL_SCHEMA)


def draw_distinct(family: Family, n: int, seed: int) -> pl.DataFrame:
    """``n`` rows of one family in RAW_SCHEMA plus their metadata, no two posing the same
    problem: one draw that a study splits at random into test, validation and pool, so all
    three share its answer mix."""
    items = draw_family(
        family, n, _family_seed(seed, 0) + _HELDOUT_SEED_OFFSET, distinct_problems=True
    )
    return _raw(pl.DataFrame(_rows(items, family.name)), keep_metadata=True)


def table_problem_keys(raw: pl.DataFrame) -> set[str]:
    """The problem keys of generated rows (``source`` is the family, ``metadata`` JSON)."""
    return {
        problem_key(src, {"question": q, "metadata": json.loads(m) if m else {}})
        for src, q, m in raw.select("source", "prompt", "metadata").iter_rows()
    }


def as_eval_rows(raw: pl.DataFrame, domain: str) -> pl.DataFrame:
    """Raw generated rows as an evaluation table, one set per source."""
    return as_eval_table(
        raw.with_columns(
            eval_set=pl.col("source"), domain=pl.lit(domain), answer_type=pl.lit(REASONING_GYM)
        )
    )
