"""The embedded reasoning-gym mixture: deterministic, imbalanced, held-out kept out of training."""

import polars as pl
import pytest

from s2l_pipeline.core.data.generator import (
    OOD_FAMILIES,
    TRAIN_FAMILIES,
    allocate,
    generate_mixture,
    generate_ood,
)
from s2l_pipeline.core.support.hashing import table_hash


@pytest.fixture(scope="module")
def mixture() -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate_mixture(600, seed=3, heldout_per_family=15)


def test_same_seed_same_bytes(mixture, tmp_path) -> None:
    again = generate_mixture(600, seed=3, heldout_per_family=15)
    assert table_hash(mixture[0]) == table_hash(again[0])
    assert table_hash(mixture[1]) == table_hash(again[1])
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    mixture[0].write_parquet(a)
    again[0].write_parquet(b)
    assert a.read_bytes() == b.read_bytes()


def test_other_seed_other_data(mixture) -> None:
    other, _ = generate_mixture(600, seed=4, heldout_per_family=15)
    overlap = set(other["prompt"]) & set(mixture[0]["prompt"])
    assert len(overlap) < 0.5 * other.height


def test_families_are_sources_with_imbalanced_sizes(mixture) -> None:
    train, _ = mixture
    counts = dict(train.group_by("source").len().iter_rows())
    assert len(TRAIN_FAMILIES) >= 10 and set(counts) == {f.name for f in TRAIN_FAMILIES}
    assert sum(counts.values()) == 600
    assert max(counts.values()) >= 5 * min(counts.values())
    assert counts == dict(
        zip(
            [f.name for f in TRAIN_FAMILIES],
            allocate(600, [f.weight for f in TRAIN_FAMILIES]),
            strict=True,
        )
    )


def test_rows_are_unique_and_math(mixture) -> None:
    train, _ = mixture
    assert train["example_id"].n_unique() == train.height
    assert train["prompt"].n_unique() == train.height
    assert set(train["task"]) == {"math"}
    assert (train["response"] == train["answer"]).all()
    assert train["response"].str.strip_chars().str.len_chars().min() > 0


def test_heldout_questions_never_in_train(mixture) -> None:
    train, held = mixture
    assert held.height == 15 * len(TRAIN_FAMILIES)
    assert set(held["prompt"]).isdisjoint(train["prompt"])
    assert set(held["domain"]) == {"in_domain"}
    assert held["metadata"].null_count() == 0  # reasoning-gym scorers need it later


def test_ood_families_are_not_training_families() -> None:
    ood = generate_ood(12, seed=0)
    assert set(ood["eval_set"]) == {f.name for f in OOD_FAMILIES}
    assert set(ood["eval_set"]).isdisjoint(f.name for f in TRAIN_FAMILIES)
    assert set(ood["domain"]) == {"out_of_domain"} and ood.height == 12 * len(OOD_FAMILIES)


def test_allocate_is_exact() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(allocate(20_000, [f.weight for f in TRAIN_FAMILIES])) == 20_000
    assert allocate(0, [1, 2]) == [0, 0]
