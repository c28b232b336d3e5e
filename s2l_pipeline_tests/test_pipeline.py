"""The whole graph so far, materialized in process on the tiny profile."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from s2l_pipeline.defs.profiles import run_config

from .test_data_assets import make_resources, meta


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    from s2l_pipeline.definitions import ASSETS, CHECKS

    root = tmp_path_factory.mktemp("pipeline")
    resources = make_resources(str(root / "art"))
    result = dg.materialize(
        [*ASSETS, *CHECKS], resources=resources, run_config=run_config("tiny")
    )
    return root, resources, result


def test_every_asset_materializes_and_checks_pass(tiny_run) -> None:
    _, _, result = tiny_run
    assert result.success
    done = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert done == {"raw_dataset", "eval_sets", "proxy_checkpoints", "loss_trajectories"}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "raw_dataset_rows_valid": True,
        "eval_sets_not_in_training": True,
        "trajectories_cover_dataset": True,
        "trajectories_finite": True,
        "trajectories_loss_decreases": True,
    }


def test_trajectory_table_layout(tiny_run) -> None:
    _, _, result = tiny_run
    traj = pl.read_parquet(meta(result, "loss_trajectories")["trajectories_path"])
    proxy = meta(result, "proxy_checkpoints")
    steps = [int(c.rsplit("_", 1)[1]) for c in traj.columns if c.startswith("loss_step_")]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) == 5  # step 0 + 4
    assert traj.columns == [
        "example_id", *[f"loss_step_{s}" for s in steps], "n_response_tokens", "truncated"
    ]
    assert all(traj[c].dtype == pl.Float32 for c in traj.columns if c.startswith("loss_"))
    assert traj.height == 400 and proxy["num_checkpoints"] == 5
    # The untrained start is near log(vocab); training lowers the mean loss.
    assert traj[f"loss_step_{steps[-1]}"].mean() < traj["loss_step_0"].mean()


def test_checkpoints_are_safetensors_folders(tiny_run) -> None:
    _, _, result = tiny_run
    [mat] = result.asset_materializations_for_node("proxy_checkpoints")
    table = mat.metadata["checkpoints"].value
    uris = [line.split(" | ")[1] for line in table.splitlines()[2:]]
    for uri in uris:
        files = {p.name for p in Path(uri).iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
        assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)


def test_mlflow_received_the_runs(tiny_run) -> None:
    from mlflow.tracking import MlflowClient

    _, resources, result = tiny_run
    client = MlflowClient(resources["mlflow"].resolved_uri())
    exp = client.get_experiment_by_name("s2l_pipeline")
    runs = client.search_runs([exp.experiment_id])
    by_asset = {r.data.tags["dagster.asset_key"]: r for r in runs}
    proxy = by_asset["proxy_checkpoints"]
    assert proxy.info.status == "FINISHED"
    assert proxy.data.tags["dagster.run_id"] == result.run_id
    assert proxy.data.params["learning_rate"] == "0.002"
    history = client.get_metric_history(proxy.info.run_id, "loss")
    assert len(history) >= 2
    assert by_asset["loss_trajectories"].data.metrics["n_examples"] == 400


def test_rematerializing_reuses_checkpoints_and_scores(tiny_run) -> None:
    from s2l_pipeline.definitions import ASSETS

    _, resources, first = tiny_run
    again = dg.materialize(ASSETS, resources=resources, run_config=run_config("tiny"))
    m = meta(again, "loss_trajectories")
    assert m["units_scored"] == 0 and m["units_reused"] == 5 * 3  # 5 checkpoints x 3 shards
    assert m["content_hash"] == meta(first, "loss_trajectories")["content_hash"]
