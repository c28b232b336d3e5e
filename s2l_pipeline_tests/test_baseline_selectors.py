"""The baselines practitioners compare with: longest response, IFD on our proxy, ZIP.

Each is checked against what it must prefer on data built so the answer is known, and IFD
end to end: the proxy's second pass through a real Dagster materialization of the tiny graph.
"""

from __future__ import annotations

import zlib

import dagster as dg
import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.selection import SelectionInputError, SelectionOptions, choose
from s2l_pipeline.core.selection.zip_compression import _Stream


def _traj(n: int, lengths=None, final=None) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "example_id": [f"e{i:04d}" for i in range(n)],
            "loss_step_0": rng.random(n) + 3,
            "loss_step_10": final if final is not None else rng.random(n),
            "n_response_tokens": lengths if lengths is not None else [5] * n,
            "truncated": [False] * n,
        }
    )


def test_longest_takes_the_longest_responses_and_nests() -> None:
    lengths = np.random.default_rng(1).permutation(200) + 1
    traj = _traj(200, lengths=lengths)
    small, info = choose("longest", traj, None, 20)
    large, _ = choose("longest", traj, None, 60)
    picked = traj.join(small, on="example_id", how="semi")["n_response_tokens"]
    assert sorted(picked.to_list()) == list(range(181, 201))
    assert info["shortest_chosen_tokens"] == 181 and info["selection_cpu_seconds"] >= 0
    assert set(small["example_id"]) < set(large["example_id"])  # budgets nest


def test_longest_needs_token_counts() -> None:
    with pytest.raises(SelectionInputError, match="n_response_tokens"):
        choose("longest", _traj(10).drop("n_response_tokens"), None, 3)


def _zip_data(n_dup: int, n_diverse: int) -> pl.DataFrame:
    """Near-duplicates of one sentence, and rows of random words: ZIP should avoid the former."""
    rng = np.random.default_rng(2)
    words = [f"w{k}" for k in range(3000)]
    dup = [f"What is 12 plus 7? The sum of 12 and 7 is 19. ({i % 3})" for i in range(n_dup)]
    diverse = [" ".join(rng.choice(words, 12)) for _ in range(n_diverse)]
    texts = dup + diverse
    return pl.DataFrame(
        {
            "example_id": [f"e{i:04d}" for i in range(len(texts))],
            "prompt": ["q"] * len(texts),
            "response": texts,
        }
    )


def test_stream_ratio_is_zlibs_ratio_of_the_whole_set() -> None:
    texts = [t.encode() for t in _zip_data(20, 20)["response"].to_list()]
    stream = _Stream()
    for t in texts[:-1]:
        stream.add(t)
    joined = b"".join(t + b"\n" for t in texts)
    assert stream.ratio_with(texts[-1]) == len(joined) / len(zlib.compress(joined, 9))


def test_zip_avoids_redundant_rows_and_beats_random_on_compression() -> None:
    data = _zip_data(150, 150)
    traj = _traj(300)
    opts = SelectionOptions(zip_k1=300, zip_k2=50, zip_k3=10)
    chosen, info = choose("zip", traj, data, 60, opts=opts)
    dup = chosen.filter(pl.col("example_id").str.slice(1).cast(pl.Int64) < 150).height
    # The first round starts from an empty set, where each row's ratio is its own and the
    # short duplicates look least compressible: at most that round's k3 rows, then none.
    assert dup <= opts.zip_k3, f"ZIP chose {dup} of 60 near-duplicates"

    def ratio(ids: pl.Series) -> float:
        rows = data.filter(pl.col("example_id").is_in(ids.to_list()))
        raw = "".join(f"q\n{r}\n" for r in rows["response"]).encode()
        return len(raw) / len(zlib.compress(raw, 9))

    randoms = [ratio(choose("random", traj, data, 60, seed=s)[0]["example_id"]) for s in range(5)]
    assert ratio(chosen["example_id"]) < min(randoms)
    again, _ = choose("zip", traj, data, 60, opts=opts)
    assert again.equals(chosen)  # no seed, no ties left to chance
    assert info["compression_ratio"] > 0


def test_zip_needs_the_texts() -> None:
    with pytest.raises(SelectionInputError, match="texts"):
        choose("zip", _traj(10), None, 3)


def test_ifd_ranks_helpful_prompts_first_and_unhelpful_last() -> None:
    final = np.log(np.array([2.0, 3.0, 4.0, 5.0, 9.0, 10.0]))
    alone = np.log(np.array([4.0, 4.0, 5.0, 4.0, 10.0, 5.0]))  # IFD .5 .75 .8 1.25 .9 2
    traj = _traj(6, final=final)
    losses = pl.DataFrame({"example_id": traj["example_id"], "response_loss": alone})
    top, info = choose("ifd", traj, None, 2, response_losses=losses)
    assert top["example_id"].to_list() == ["e0002", "e0004"]  # IFD .8 and .9
    assert info["ifd_at_least_1"] == 2 and info["ifd_chosen_at_least_1"] == 0
    # Past the rows below 1, the least bad of the rest: 1.25 before 2.
    five, info = choose("ifd", traj, None, 5, response_losses=losses)
    assert five["example_id"].to_list() == [f"e000{i}" for i in range(5)]
    assert info["ifd_chosen_at_least_1"] == 1
    with pytest.raises(SelectionInputError, match="proxy"):
        choose("ifd", traj, None, 4)


@pytest.mark.slow  # materializes beyond the tiny graph: a second proxy pass
def test_ifd_selects_through_dagster_with_the_proxys_second_pass(tiny_graph_copy) -> None:
    """A real materialization of selected_subset with method ifd on the tiny graph: the proxy's
    checkpoint scores the responses alone; the cost reaches the asset's metadata."""
    from s2l_pipeline.definitions import ASSETS
    from s2l_pipeline.defs.profiles import run_config
    from s2l_pipeline.defs.selection import selected_subset

    _, instance, resources = tiny_graph_copy
    config = run_config("tiny", assets=[])
    config.setdefault("ops", {})["selected_subset"] = {"config": {"method": "ifd", "budget": "20"}}
    result = dg.materialize(
        ASSETS,
        selection=[selected_subset],
        resources=resources,
        instance=instance,
        run_config=config,
    )
    assert result.success
    [mat] = result.asset_materializations_for_node("selected_subset")
    info = mat.metadata["selection_info"].value
    assert info["method"] == "ifd" and mat.metadata["dagster/row_count"].value == 20
    assert info["selection_flops"] > 0 and info["model_cpu_seconds"] > 0
    assert 0 <= info["ifd_chosen_at_least_1"] <= info["ifd_at_least_1"]


@pytest.mark.slow  # two `s2l select` processes (each imports torch)
def test_s2l_select_ifd_and_zip_from_the_command_line(tiny_graph, tmp_path) -> None:
    """`s2l select --method ifd --proxy DIR` and `--method zip` on the tiny graph's pool, as a
    user runs them: the chosen ids, and the cost printed with them."""
    import json
    import subprocess

    from .conftest import s2l_cmd

    store = tiny_graph.resources["artifact_store"].store()
    pool = tiny_graph.result.output_for_node("training_pool")
    proxy = tiny_graph.result.output_for_node("proxy_checkpoints")
    traj, data = store.fetch(pool.trajectories.uri), store.fetch(pool.train.uri)
    common = ["select", "--trajectories", str(traj), "--data", str(data), "--budget", "25"]
    runs = {
        "ifd": ["--proxy", str(store.fetch_dir(proxy.final.uri))],
        "zip": ["--zip-k1", "200", "--zip-k2", "40", "--zip-k3", "10"],
    }
    for method, extra in runs.items():
        out = tmp_path / f"{method}.parquet"
        res = subprocess.run(
            [*s2l_cmd(), *common, "--method", method, *extra, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert info["selected"] == 25 and pl.read_parquet(out).height == 25
        assert info["selection_cpu_seconds"] > 0
        assert (info.get("selection_flops", 0) > 0) == (method == "ifd")
    res = subprocess.run(
        [*s2l_cmd(), *common, "--method", "ifd", "--out", str(tmp_path / "x.parquet")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode != 0 and "proxy" in res.stderr
