"""Training order: sources stay mixed in every batch sequence the proxy and target train on."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun, train_model
from s2l_pipeline.core.lm.order import epoch_order, longest_single_source_run, order_report
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig
from s2l_pipeline.core.lm.trainer import EpochSeededSampler
from s2l_pipeline.core.support.storage import ArtifactStore

BATCH = 16


def three_sources(n_per: int = 400) -> tuple[list[int], list[str]]:
    """Three sources whose lengths never overlap (as gcd, chain_sum, simple_equations)."""
    rng = np.random.default_rng(0)
    lengths, sources = [], []
    for name, (lo, hi) in {"short": (10, 20), "mid": (30, 40), "long": (60, 70)}.items():
        lengths += rng.integers(lo, hi, n_per).tolist()
        sources += [name] * n_per
    return lengths, sources


def test_hf_length_grouping_trains_in_blocks_of_one_source() -> None:
    """The measure sees what the issue saw: HF's megabatches run many batches of one source."""
    lengths, sources = three_sources()
    g = torch.Generator().manual_seed(0)
    hf = np.asarray(get_length_grouped_indices(lengths, BATCH, generator=g))
    assert longest_single_source_run(hf, sources, BATCH) >= 5


def test_default_order_stays_at_the_shuffles_level() -> None:
    lengths, sources = three_sources()
    sampler = EpochSeededSampler(lengths, BATCH, TrainConfig())
    order = np.asarray(list(sampler))
    assert sorted(order.tolist()) == list(range(len(lengths)))
    run = longest_single_source_run(order, sources, BATCH)
    shuffle_runs = [
        longest_single_source_run(
            np.random.default_rng(s).permutation(len(lengths)), sources, BATCH
        )
        for s in range(20)
    ]
    assert run <= max(shuffle_runs) <= 1


def test_length_windows_bound_runs_and_cut_padding() -> None:
    lengths, sources = three_sources()
    report = order_report(lengths, sources, BATCH, 0, group_by_length=True, length_window=4)
    # three balanced sources: windows keep runs short (the HF megabatches ran 5 or more)
    assert report.longest_single_source_run <= 2
    assert report.padding_share < report.padding_share_shuffle
    shuffled = order_report(lengths, sources, BATCH, 0, group_by_length=False)
    assert shuffled.longest_single_source_run == shuffled.longest_single_source_run_shuffle


def test_order_is_a_function_of_seed_and_epoch() -> None:
    lengths, _ = three_sources(50)
    for grouped in (False, True):
        a = epoch_order(lengths, BATCH, 3, 2, grouped)
        assert np.array_equal(a, epoch_order(lengths, BATCH, 3, 2, grouped))
        assert not np.array_equal(a, epoch_order(lengths, BATCH, 3, 1, grouped))
        assert sorted(a.tolist()) == list(range(len(lengths)))


@pytest.mark.slow  # beyond the fast loop
def test_trained_model_records_its_order(tmp_path: Path) -> None:
    """A proxy trained on three sources of disjoint lengths reports a shuffle-level run."""
    rows = []
    for name, width in (("short", 1), ("mid", 6), ("long", 14)):
        for i in range(64):
            rows.append((name, f"{name} {'word ' * width}{i}?", str(i % 7)))
    df = pl.DataFrame(
        {
            "example_id": [f"{k:04d}" for k in range(len(rows))],
            "source": [r[0] for r in rows],
            "prompt": [r[1] for r in rows],
            "response": [r[2] for r in rows],
            "answer": [r[2] for r in rows],
            "task": ["math"] * len(rows),
        }
    )
    run = TrainRun(
        model=ModelSpec(size="proxy-tiny", vocab_size=300),
        train=TrainConfig(epochs=1, batch_size=BATCH, max_length=48),
        schedule=CheckpointSchedule(count=1),
    )
    out = train_model("proxy_checkpoints", df, "h", run, ArtifactStore(str(tmp_path)), tmp_path)
    order = out.order
    assert order.order == "shuffle"
    assert order.longest_single_source_run == order.longest_single_source_run_shuffle <= 1
