"""Selection: the S2L budget rule, stratification, determinism, and each baseline's ordering."""

import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.selection import SelectionInputError, SelectionOptions, choose, cluster_table
from s2l_pipeline.core.selection.budget import (
    balanced_allocation,
    parse_budget,
    proportional_allocation,
    resolve_budget,
    sample_balanced,
)
from s2l_pipeline.core.selection.clustering import kmeans, kmeans_by_group
from s2l_pipeline.core.selection.learning_percentage import learning_percentage
from s2l_pipeline.core.selection.s2l import sample


def traj_frame(losses: list[list[float]], steps=(0, 10, 20), truncated=None) -> pl.DataFrame:
    arr = np.asarray(losses, dtype=np.float32)
    cols = {f"loss_step_{s}": arr[:, i] for i, s in enumerate(steps)}
    n = len(arr)
    return pl.DataFrame(
        {
            "example_id": [f"e{i:03d}" for i in range(n)],
            **cols,
            "n_response_tokens": [3] * n,
            "truncated": truncated or [False] * n,
        }
    )


# --- the budget rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes,budget,expected",
    [
        ([1, 2, 10, 20], 12, [1, 2, 4, 5]),  # clusters of 1 and 2 taken whole, rest rolls on
        ([20, 10, 2, 1], 12, [5, 4, 2, 1]),  # order of input does not matter
        ([5, 5, 5], 7, [2, 2, 3]),  # equal sizes: ties by id, the remainder goes last
        ([1, 2], 10, [1, 2]),  # budget > N: everything
        ([3, 4, 5], 12, [3, 4, 5]),  # budget = N: everything
        ([1, 1, 1, 100], 4, [1, 1, 1, 1]),
        ([100, 100], 0, [0, 0]),
    ],
)
def test_balanced_allocation(sizes, budget, expected) -> None:
    assert balanced_allocation(sizes, budget).tolist() == expected


def test_allocation_always_meets_the_budget() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(1, 40, size=rng.integers(1, 12))
        budget = int(rng.integers(0, sizes.sum() + 10))
        take = balanced_allocation(sizes, budget)
        assert take.sum() == min(budget, sizes.sum()) and (take <= sizes).all()


def test_proportional_allocation() -> None:
    assert proportional_allocation([10, 30, 60], 10).tolist() == [1, 3, 6]
    assert proportional_allocation([1, 1, 1], 2).tolist() == [1, 1, 0]
    assert proportional_allocation([2, 100], 50).sum() == 50


@pytest.mark.parametrize(
    "given,n,expected",
    [
        (0.1, 1000, 100),
        (0.3, 7, 2),
        (1.0, 50, 50),
        (500, 1000, 500),
        (1000, 1000, 1000),
        (2.0, 10, 2),
    ],
)
def test_resolve_budget(given, n, expected) -> None:
    assert resolve_budget(given, n) == expected


def test_budget_above_the_pool_names_both_numbers() -> None:
    """A count above the pool took everything and exited 0."""
    with pytest.raises(ValueError, match="budget 100000 is more than the 400 usable rows"):
        resolve_budget(100000, 400)


@pytest.mark.parametrize("bad", [0, -3, 0.0, -0.5, 2.5])
def test_bad_budgets_are_errors(bad) -> None:
    with pytest.raises(ValueError, match="budget"):
        resolve_budget(bad, 100)


def test_parse_budget() -> None:
    assert parse_budget("500") == 500 and parse_budget("0.1") == 0.1
    with pytest.raises(ValueError):
        parse_budget("ten")


def test_sample_balanced_takes_the_allocation_from_each_cluster() -> None:
    labels = np.array([0] * 1 + [1] * 2 + [2] * 10 + [3] * 20)
    rows = sample_balanced(labels, 12, np.random.default_rng(1))
    assert len(rows) == 12 and len(set(rows)) == 12 and (np.diff(rows) > 0).all()
    assert np.bincount(labels[rows]).tolist() == [1, 2, 4, 5]
    again = sample_balanced(labels, 12, np.random.default_rng(1))
    other = sample_balanced(labels, 12, np.random.default_rng(2))
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)
    assert sample_balanced(labels, 99, np.random.default_rng(0)).tolist() == list(range(33))


def test_official_rule_skips_clusters_of_two_or_fewer() -> None:
    """min_cluster_size=3 (the official code): clusters of 1 and 2 get nothing while the big
    ones can fill the budget; ours (1) takes them whole."""
    labels = np.array([0] * 1 + [1] * 2 + [2] * 10 + [3] * 20)
    paper = sample_balanced(labels, 12, np.random.default_rng(1), min_cluster_size=3)
    assert np.bincount(labels[paper], minlength=4).tolist() == [0, 0, 6, 6]
    ours = sample_balanced(labels, 12, np.random.default_rng(1), min_cluster_size=1)
    assert np.array_equal(ours, sample_balanced(labels, 12, np.random.default_rng(1)))
    assert np.bincount(labels[ours], minlength=4).tolist() == [1, 2, 4, 5]


def test_skipped_small_clusters_fill_a_shortfall_first() -> None:
    # Big clusters hold 6 rows, the budget is 8: the 2 missing come from the small clusters
    # (rows 0-2), not from elsewhere; a budget past every row still returns them all.
    labels = np.array([0] * 1 + [1] * 2 + [2] * 3 + [3] * 3)
    rows = sample_balanced(labels, 8, np.random.default_rng(0), min_cluster_size=3)
    assert set(range(3, 9)) <= set(rows.tolist()) and len(rows) == 8
    assert len(set(rows.tolist()) & {0, 1, 2}) == 2
    everything = sample_balanced(labels, 99, np.random.default_rng(0), min_cluster_size=3)
    assert everything.tolist() == list(range(9))
    # Every cluster small: all of the budget is a "shortfall" drawn from them.
    tiny = sample_balanced(np.arange(6) // 2, 4, np.random.default_rng(0), min_cluster_size=3)
    assert len(tiny) == 4 and len(set(tiny.tolist())) == 4


def test_paper_mode_through_choose_stratified_by_source() -> None:
    rng = np.random.default_rng(0)
    n = 300
    traj = pl.DataFrame(
        {
            "example_id": [f"x{i:04d}" for i in range(n)],
            "loss_step_0": rng.normal(size=n).astype(np.float32),
            "loss_step_5": rng.normal(size=n).astype(np.float32),
            "loss_step_10": rng.normal(size=n).astype(np.float32),
        }
    )
    data = pl.DataFrame(
        {"example_id": traj["example_id"], "source": ["s1"] * 40 + ["s2"] * 100 + ["s3"] * 160}
    )
    paper = SelectionOptions(clusters=20, stratify_by="source", min_cluster_size=3)
    chosen, info = choose("s2l", traj, data, 90, seed=0, opts=paper)
    assert chosen.height == 90
    per_source = chosen.join(data, on="example_id")["source"].value_counts(sort=True)
    assert dict(per_source.iter_rows()) == {"s1": 30, "s2": 30, "s3": 30}  # smallest first
    again, _ = choose("s2l", traj, data, 90, seed=0, opts=paper)
    assert chosen.equals(again)  # seeded: the same subset byte for byte


def test_stratified_random_is_s2l_paper_without_trajectories() -> None:
    """Same split over sources as the paper's S2L, uniform inside, blind to the losses."""
    rng = np.random.default_rng(1)
    n = 300
    losses = {f"loss_step_{s}": rng.normal(size=n).astype(np.float32) for s in (0, 5, 10)}
    traj = pl.DataFrame({"example_id": [f"x{i:04d}" for i in range(n)], **losses})
    data = pl.DataFrame(
        {"example_id": traj["example_id"], "source": ["s1"] * 20 + ["s2"] * 80 + ["s3"] * 200}
    )
    paper = SelectionOptions(clusters=10, stratify_by="source", min_cluster_size=3)
    s2l_ids, _ = choose("s2l", traj, data, 120, seed=0, opts=paper)
    ids, info = choose("stratified_random", traj, data, 120, seed=0)

    def counts(chosen):
        return dict(chosen.join(data, on="example_id")["source"].value_counts().iter_rows())

    assert counts(ids) == counts(s2l_ids) == {"s1": 20, "s2": 50, "s3": 50}
    assert info["stratified_by"] == "source" and info["strata"] == 3
    shuffled = traj.with_columns(pl.col(c).shuffle(seed=3) for c in losses)
    assert choose("stratified_random", shuffled, data, 120, seed=0)[0].equals(ids)
    other, _ = choose("stratified_random", traj, data, 120, seed=1)
    assert not other.equals(ids) and counts(other) == counts(ids)
    with pytest.raises(SelectionInputError, match="'source'"):
        choose("stratified_random", traj, None, 120, seed=0)


def test_sampling_inside_a_cluster_is_uniform() -> None:
    labels = np.zeros(10, dtype=int)
    counts = np.zeros(10)
    for seed in range(2000):
        counts[sample_balanced(labels, 3, np.random.default_rng(seed))] += 1
    assert counts.min() > 0.8 * 600 and counts.max() < 1.2 * 600  # 2000 x 3 / 10 = 600 each


def test_stratified_split_over_sources_then_clusters() -> None:
    strata = np.array(["a"] * 3 + ["b"] * 40 + ["c"] * 60)
    labels = np.concatenate([[0] * 3, [1] * 20 + [2] * 20, [3] * 10 + [4] * 50])
    rows = sample(labels, strata, 30, seed=0)
    got = {s: int((strata[rows] == s).sum()) for s in "abc"}
    assert got == {"a": 3, "b": 13, "c": 14}  # a taken whole; 27 left over b and c
    # b: 13 over two clusters of 20 -> 6, 7; c: 14 over clusters of 10 and 50 -> 7, 7
    assert np.bincount(labels[rows], minlength=5).tolist() == [3, 6, 7, 7, 7]


def test_stratified_clusters_never_span_sources() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    groups = np.array(["a"] * 30 + ["b"] * 50 + ["c"] * 10)
    cl = kmeans_by_group(x, groups, 4, seed=0)
    for g in "abc":
        others = set(cl.labels[groups != g])
        assert set(cl.labels[groups == g]).isdisjoint(others)
    assert len(cl.centroids) == 12


def test_kmeans_trains_on_all_points_up_to_the_cap() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 6)).astype(np.float32)
    assert kmeans(x, 10, seed=0).n_trained_on == 5000  # faiss alone would use 2560
    capped = kmeans(x, 10, seed=0, max_train_points=1000)
    assert capped.n_trained_on == 1000 and len(capped.labels) == 5000
    a, b = kmeans(x, 10, seed=3), kmeans(x, 10, seed=3)
    assert np.array_equal(a.labels, b.labels) and a.inertia == b.inertia
    assert np.allclose(a.distances**2, ((x - a.centroids[a.labels]) ** 2).sum(1), atol=1e-3)
    with pytest.raises(ValueError, match="K must be between 1 and N"):
        kmeans(x[:5], 10)


# --- the whole S2L path ----------------------------------------------------------------------


@pytest.fixture
def blobs() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    centers = np.array([[5, 3, 2], [5, 5, 5], [5, 1, 0.5], [5, 4, 1]])
    sizes = [5, 30, 100, 300]
    losses = np.concatenate(
        [c + 0.05 * rng.normal(size=(n, 3)) for c, n in zip(centers, sizes, strict=True)]
    )
    traj = traj_frame(losses.tolist())
    data = pl.DataFrame(
        {
            "example_id": traj["example_id"],
            "source": (["s1"] * 35 + ["s2"] * 400),
            "prompt": [f"p{i}" for i in range(435)],
            "response": ["r"] * 435,
        }
    )
    return traj, data


def test_s2l_balances_clusters(blobs) -> None:
    traj, data = blobs
    opts = SelectionOptions(clusters=4)
    clusters, summary = cluster_table(traj, data, 0, opts)
    assert summary.clusters == 4 and clusters.height == 435
    chosen, info = choose("s2l", traj, data, 40, 0, opts, clusters)
    assert chosen.height == 40 and info["budget"] == 40
    per_cluster = sorted(chosen.group_by("cluster").len()["len"].to_list())
    assert per_cluster == [5, 11, 12, 12]  # the 5-row cluster whole; 35 over the other three


def test_same_inputs_same_subset_byte_for_byte(blobs, tmp_path) -> None:
    traj, data = blobs
    outs = []
    for i in range(2):
        clusters, _ = cluster_table(traj, data, 7, SelectionOptions(clusters=4))
        chosen, _ = choose("s2l", traj, data, 0.2, 7, SelectionOptions(clusters=4), clusters)
        chosen.write_parquet(tmp_path / f"{i}.parquet")
        outs.append((tmp_path / f"{i}.parquet").read_bytes())
    assert outs[0] == outs[1]
    other, _ = choose("s2l", traj, data, 0.2, 8, SelectionOptions(clusters=4))
    assert set(other["example_id"]) != set(pl.read_parquet(tmp_path / "0.parquet")["example_id"])


def test_truncated_rows_are_left_out_and_unflagged_nan_is_an_error() -> None:
    losses = [[3, 2, 1], [3, float("nan"), float("nan")], [3, 2.5, 2], [3, 1, 0.5]]
    traj = traj_frame(losses, truncated=[False, True, False, False])
    chosen, info = choose("least_confidence", traj, None, 3, 0)  # every usable row
    assert info["excluded_unscorable"] == 1 and "e001" not in chosen["example_id"].to_list()
    with pytest.raises(ValueError, match="budget 4 is more than the 3 usable rows"):
        choose("least_confidence", traj, None, 4, 0)
    bad = traj_frame(losses)
    with pytest.raises(SelectionInputError, match="not flagged truncated.*e001"):
        choose("random", bad, None, 2, 0)


def test_missing_columns_are_errors() -> None:
    with pytest.raises(SelectionInputError, match="example_id"):
        choose("random", pl.DataFrame({"loss_step_0": [1.0]}), None, 1)
    with pytest.raises(SelectionInputError, match="loss_step"):
        choose("random", pl.DataFrame({"example_id": ["a"]}), None, 1)
    with pytest.raises(SelectionInputError, match="unknown method"):
        choose("magic", traj_frame([[1, 1, 1]]), None, 1)


# --- baselines on hand-made inputs -----------------------------------------------------------

FIVE = [  # step 0, 10, 20
    [6.0, 3.0, 0.1],  # e000 learnt fast, easy at the end
    [6.0, 5.0, 3.0],  # e001 hard at the end
    [6.0, 2.0, 2.0],  # e002 plateau
    [6.0, 4.0, 1.0],  # e003 biggest drop after the first trained checkpoint
    [6.0, 2.9, 2.5],  # e004
]


def ids(method: str, budget: int, **opts) -> list[str]:
    chosen, _ = choose(method, traj_frame(FIVE), None, budget, 0, SelectionOptions(**opts))
    return chosen["example_id"].to_list()


def test_least_confidence_takes_highest_final_loss() -> None:
    assert ids("least_confidence", 2) == ["e001", "e004"]


def test_middle_perplexity_takes_those_nearest_the_median() -> None:
    # final perplexities exp(.1, 3, 2, 1, 2.5) = 1.1, 20.1, 7.39, 2.72, 12.18; median 7.39.
    # Distances in perplexity (not loss): e003 4.67 beats e004 4.79.
    assert ids("middle_perplexity", 2) == ["e002", "e003"]


def test_high_learnability_takes_the_largest_drop() -> None:
    # drops from step 10 to 20: 2.9, 2.0, 0.0, 3.0, 0.4
    assert ids("high_learnability", 2) == ["e000", "e003"]
    assert ids("high_learnability", 1, steps=(0, 20)) == ["e000"]  # from step 0: 5.9


def test_cartography_takes_the_most_variable_confidence() -> None:
    p = np.exp(-np.asarray(FIVE)[:, 1:])
    expected = [f"e{i:03d}" for i in sorted(np.argsort(-p.std(axis=1))[:2])]
    assert ids("cartography", 2) == expected == ["e000", "e003"]


def test_random_is_seeded() -> None:
    traj = traj_frame([[1, 1, 1]] * 50)
    a, _ = choose("random", traj, None, 10, 3)
    b, _ = choose("random", traj, None, 10, 3)
    c, _ = choose("random", traj, None, 10, 4)
    assert a.equals(b) and not a.equals(c)


def test_learning_percentage_formulas() -> None:
    l0, l1, ln = np.log([[10.0], [6.0], [2.0]])
    assert learning_percentage(l0, l1, ln, "lp1")[0] == pytest.approx((10 - 6) / (10 - 2))
    assert learning_percentage(l0, l1, ln, "lp_app")[0] == pytest.approx((10 - 6) / 10)
    assert learning_percentage(l0, l0, l0, "lp1")[0] == 1.0  # nothing learnt: neutral


def test_learning_percentage_hardest_first_within_embedding_clusters() -> None:
    # Two embedding clusters of 10 rows; budget 4 -> 2 from each, the lowest LP first.
    rng = np.random.default_rng(0)
    lp1_drop = rng.uniform(0.1, 3.0, size=20)  # loss at epoch 1 = 6 - drop
    losses = [[6.0, 6.0 - d, 0.5] for d in lp1_drop]
    traj = traj_frame(losses)
    emb = np.concatenate([np.ones((10, 4)), -np.ones((10, 4))]).astype(np.float32)
    emb += 0.01 * rng.normal(size=emb.shape).astype(np.float32)
    from s2l_pipeline.core.selection import learning_percentage as lp_mod

    sel = lp_mod.select(
        traj, None, 4, 0, SelectionOptions(embedding_clusters=2, epoch1_step=10), embeddings=emb
    )
    lp = learning_percentage(*(np.asarray(losses)[:, i] for i in range(3)), "lp1")
    expected = sorted(np.argsort(lp[:10])[:2].tolist() + (10 + np.argsort(lp[10:])[:2]).tolist())
    assert sel.rows.tolist() == expected


def test_learning_percentage_needs_step_zero() -> None:
    traj = traj_frame([[3, 2, 1]] * 4, steps=(10, 20, 30))
    with pytest.raises(SelectionInputError, match="step-0"):
        choose("learning_percentage", traj, None, 2)


def test_facility_location_covers_both_blobs() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(40, 2))
    b = rng.normal(10, 0.1, size=(40, 2))
    losses = np.concatenate([a, b])
    traj = traj_frame(np.column_stack([losses[:, 0], losses[:, 0], losses[:, 1]]).tolist())
    chosen, _ = choose("facility_location", traj, None, 2, 0, SelectionOptions(knn=10))
    rows = [int(i[1:]) for i in chosen["example_id"]]
    assert sum(r < 40 for r in rows) == 1 and sum(r >= 40 for r in rows) == 1


def test_epoch1_checkpoint_from_the_schedule() -> None:
    from s2l_pipeline.core.selection.learning_percentage import epoch1_from_schedule

    assert epoch1_from_schedule(939, 3.0, [0, 94, 188, 282, 376, 939]) == 282  # 313 per epoch
    assert epoch1_from_schedule(100, 1.0, [0, 50, 100]) == 100


def test_training_sets_for_the_target() -> None:
    from s2l_pipeline.core.stages.models import training_set_rows

    data = pl.DataFrame({"example_id": [f"e{i}" for i in range(10)], "x": list(range(10))})
    subset = data.head(3).with_columns(cluster=pl.lit(1))
    assert training_set_rows("full", data, subset, 3, 0).equals(data)
    assert training_set_rows("selected", data, subset, 3, 0).equals(data.head(3))
    rnd = training_set_rows("random", data, subset, 3, 0)
    assert rnd.height == 3 and rnd.equals(training_set_rows("random", data, subset, 3, 0))
    with pytest.raises(ValueError, match="unknown training set"):
        training_set_rows("half", data, subset, 3, 0)


def test_embedding_cluster_random_is_learning_percentage_without_its_order() -> None:
    """Same MiniLM clusters and per-cluster budget as learning percentage, random inside:
    the control that tells the score's effect from the clusters'."""
    rng = np.random.default_rng(2)
    n = 200
    losses = {f"loss_step_{s}": rng.uniform(1, 3, size=n).astype(np.float32) for s in (0, 5, 10)}
    traj = pl.DataFrame({"example_id": [f"x{i:04d}" for i in range(n)], **losses})
    centres = rng.normal(size=(4, 16))
    emb = (centres[np.arange(n) % 4] + 0.01 * rng.normal(size=(n, 16))).astype(np.float32)
    opts = SelectionOptions(embedding_clusters=4)
    lp, _ = choose("learning_percentage", traj, None, 40, seed=0, opts=opts, embeddings=emb)
    ids, info = choose("embedding_cluster_random", traj, None, 40, 0, opts, embeddings=emb)
    from s2l_pipeline.core.selection.clustering import kmeans

    labels = kmeans(emb, 4, seed=0).labels  # the clusters both methods draw from
    group = dict(zip(traj["example_id"], labels, strict=True))

    def per_cluster(chosen):
        return np.bincount([group[e] for e in chosen["example_id"]], minlength=4).tolist()

    assert per_cluster(ids) == per_cluster(lp) and sum(per_cluster(ids)) == 40
    assert info["embedding_clusters"] == 4
    assert set(ids["example_id"]) != set(lp["example_id"])  # not lowest-LP first
    again, _ = choose("embedding_cluster_random", traj, None, 40, 0, opts, embeddings=emb)
    assert again.equals(ids)
    other, _ = choose("embedding_cluster_random", traj, None, 40, 1, opts, embeddings=emb)
    assert not other.equals(ids)
