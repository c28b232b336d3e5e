"""New data in shards: the sensor's cursor, incremental scoring, automation, staleness, lineage."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

# Dagster keeps its staleness resolver (what the UI's "stale" badges use) internal.
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from s2l_pipeline.core.data.shards import (
    ShardCursor,
    list_shards,
    retrain_due,
    shard_key,
    union_tables,
)
from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun, train_proxy
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig
from s2l_pipeline.core.support.storage import ArtifactStore
from s2l_pipeline.core.trajectories import incremental_trajectories, loss_columns, score_rows
from s2l_pipeline.defs.profiles import run_config

from .helpers import make_resources, meta, new_rows, write_shard

# ------------------------------------------------------------------------ core pieces


def test_shard_keys_and_listing(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    assert list_shards(str(root)) == {}  # an absent folder is simply empty
    write_shard(root / "2026-11" / "a b.jsonl", new_rows(12, 1))
    (root / "notes.txt").write_text("not data")
    shards = list_shards(str(root))
    assert list(shards) == ["2026-11__a_b.jsonl"]
    assert shard_key("s3://bucket/in/x.parquet", "s3://bucket/in/") == "x.parquet"


def test_cursor_round_trip_and_union_first_wins() -> None:
    c = ShardCursor({"a.jsonl": "v1"}, {"b.jsonl": {"version": "v2", "reason": "bad"}})
    assert ShardCursor.parse(c.dump()) == c
    assert ShardCursor.parse(None) == ShardCursor()
    a = pl.DataFrame({"example_id": ["1", "2"], "x": [1, 2]})
    b = pl.DataFrame({"example_id": ["2", "3"], "x": [20, 3]})
    assert union_tables([a, b]).to_dict(as_series=False) == {
        "example_id": ["1", "2", "3"],
        "x": [1, 2, 3],
    }


def test_retrain_policy_threshold() -> None:
    assert retrain_due(1000, 1300, 0.25) == (False, retrain_due(1000, 1300, 0.25)[1])
    due, reason = retrain_due(1000, 1400, 0.25)
    assert due and "400 of 1400" in reason
    assert not retrain_due(1000, 1000, 0.0)[0]  # nothing unseen: never due


@pytest.fixture(scope="module")
def tiny_proxy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("proxy")
    store = ArtifactStore(str(root / "art"))
    data = new_rows(240, 3)
    run = TrainRun(
        ModelSpec("embedded", "proxy-tiny"),
        TrainConfig(epochs=1.0, batch_size=32, max_length=96),
        CheckpointSchedule(count=3),
    )
    manifest = train_proxy(data, "d", run, store, root / "work")
    return store, data, manifest


def test_incremental_scores_equal_scoring_from_scratch(tiny_proxy) -> None:
    store, data, manifest = tiny_proxy
    base, extra = data.head(160), data.slice(120, 120)  # 40 rows overlap the base
    ckpts = manifest.checkpoint_records()
    scored: list[int] = []

    def score(rows: pl.DataFrame) -> pl.DataFrame:
        scored.append(rows.height)
        return score_rows(rows, ckpts, store, 96)

    known = score_rows(base, ckpts, store, 96)
    inc, n_scored, n_reused = incremental_trajectories(extra, known, score)
    scratch = score_rows(extra, ckpts, store, 96)
    assert (n_scored, n_reused) == (80, 40) and scored == [80]
    assert inc["example_id"].to_list() == extra["example_id"].to_list()
    for col in loss_columns(scratch):
        np.testing.assert_allclose(inc[col].to_numpy(), scratch[col].to_numpy(), atol=1e-5)
    assert inc["n_response_tokens"].equals(scratch["n_response_tokens"])
    # Everything already known: nothing is scored.
    again, n_scored, n_reused = incremental_trajectories(extra, inc, score)
    assert (n_scored, n_reused) == (0, 120) and scored == [80]
    assert again.equals(inc)


# ------------------------------------------------------------------------ the sensor


def _tick(instance, resources, cursor):
    from s2l_pipeline.defs.sensors import shard_sensor

    needed = {k: resources[k] for k in ("shard_source", "artifact_store")}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=needed) as ctx:
        result = shard_sensor(ctx)
    # What the sensor daemon does with a result: add partitions, record observations.
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def test_sensor_cursor_over_several_ticks(tmp_path: Path) -> None:
    resources = make_resources(str(tmp_path / "art"))
    root = Path(resources["shard_source"].root)
    write_shard(root / "s1.jsonl", new_rows(24, 11))
    write_shard(root / "s2.jsonl", new_rows(24, 12))
    (root / "bad.jsonl").write_text('{"instruction": "q"}\nnot json\n{"output": "x"}\n')
    instance = dg.DagsterInstance.ephemeral()

    first = _tick(instance, resources, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["s1.jsonl", "s2.jsonl"]
    keys = {r.run_key for r in first.run_requests}
    cursor = ShardCursor.parse(first.cursor)
    assert "bad.jsonl" in cursor.rejected and "bad.jsonl" in cursor.rejected["bad.jsonl"]["reason"]
    assert instance.get_dynamic_partitions("data_shards") == ["s1.jsonl", "s2.jsonl"]
    store = resources["artifact_store"].store()
    assert "bad.jsonl" in json.loads(store.read_text("data_shard/_rejected_shards.json"))

    # The same tick again: nothing new, nothing requested.
    second = _tick(instance, resources, first.cursor)
    assert not second.run_requests and second.cursor == first.cursor
    # A restart that lost the cursor asks again with the same run keys, which Dagster
    # skips, and registers no partition twice.
    replay = _tick(instance, resources, None)
    assert {r.run_key for r in replay.run_requests} == keys
    assert not replay.dynamic_partitions_requests

    # One new shard, one rewritten shard, and the bad one fixed: three requests, new keys.
    write_shard(root / "s3.jsonl", new_rows(24, 13))
    write_shard(root / "s1.jsonl", new_rows(30, 14))
    write_shard(root / "bad.jsonl", new_rows(24, 15))
    third = _tick(instance, resources, second.cursor)
    assert sorted(r.partition_key for r in third.run_requests) == [
        "bad.jsonl",
        "s1.jsonl",
        "s3.jsonl",
    ]
    assert not ({r.run_key for r in third.run_requests} & keys)
    assert ShardCursor.parse(third.cursor).rejected == {}
    assert not _tick(instance, resources, third.cursor).run_requests


def test_sensor_on_an_s3_prefix(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    import boto3

    from s2l_pipeline.defs.resources import ShardSourceResource

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    good = write_shard(tmp_path / "good.jsonl", new_rows(24, 31))
    client.upload_file(str(good), s3_bucket, "incoming/2026/good.jsonl")
    client.put_object(Bucket=s3_bucket, Key="incoming/2026/broken.parquet", Body=b"not parquet")
    resources = make_resources(str(tmp_path / "art"))
    resources["shard_source"] = ShardSourceResource(
        root=f"s3://{s3_bucket}/incoming", endpoint_url=s3_endpoint
    )
    instance = dg.DagsterInstance.ephemeral()
    first = _tick(instance, resources, None)
    assert [r.partition_key for r in first.run_requests] == ["2026__good.jsonl"]
    rejected = ShardCursor.parse(first.cursor).rejected
    assert list(rejected) == ["2026__broken.parquet"]
    assert "broken.parquet" in rejected["2026__broken.parquet"]["reason"]
    assert not _tick(instance, resources, first.cursor).run_requests


# ------------------------------------------------------------------------ a real pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_graph, tiny_graph_copy):
    """The session's tiny graph (conftest), copied into an instance and store of its own, so
    the shards added here change nothing another module reads."""
    root, instance, resources = tiny_graph_copy
    return root, instance, resources, tiny_graph.result


def _defs(resources):
    from s2l_pipeline.definitions import ASSETS

    return dg.Definitions(assets=ASSETS, resources=resources)


@pytest.mark.slow  # beyond the fast loop
def test_new_shard_is_scored_incrementally_and_joins_the_pool(pipeline) -> None:
    from s2l_pipeline.definitions import ASSETS
    from s2l_pipeline.defs.data import data_shard
    from s2l_pipeline.defs.trajectories import shard_trajectories

    root, instance, resources, first = pipeline
    defs = _defs(resources)
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.total_requested == 0  # all materialized, nothing changed: nothing to do
    base = pl.read_parquet(meta(first, "raw_dataset")["train_path"])
    fresh = new_rows(40, 21)
    shard = pl.concat([fresh, base.head(10)])
    write_shard(Path(resources["shard_source"].root) / "new.jsonl", shard)
    [request] = _tick(instance, resources, None).run_requests
    assert set(request.asset_selection) == {data_shard.key, shard_trajectories.key}
    # New data: the pool is stale as soon as the shard is accepted.
    graph = _defs(resources).resolve_asset_graph()
    assert staleness(instance, graph).get_status(dg.AssetKey("training_pool")) == StaleStatus.STALE
    shard_run = dg.materialize(
        ASSETS,
        selection=[data_shard, shard_trajectories],
        partition_key=request.partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config("tiny", assets=[]),
    )
    assert shard_run.success
    m = meta(shard_run, "shard_trajectories")
    n_new = fresh.unique("example_id").join(base, on="example_id", how="anti").height
    n_shard = meta(shard_run, "data_shard")["dagster/row_count"]
    assert n_new > 30 and m["rows_scored"] == n_new
    assert m["rows_reused"] == n_shard - n_new >= 10  # the 10 base rows are not rescored

    # Stale after new data: the pool (and all below it) until it is materialized again.
    resolver = staleness(instance, graph)
    assert resolver.get_status(dg.AssetKey("training_pool")) == StaleStatus.STALE
    assert resolver.get_status(dg.AssetKey("raw_dataset")) == StaleStatus.FRESH

    # Declarative automation: the pool is requested because its shard dependency changed.
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    requested = {k.path[0] for k in graph.get_all_asset_keys() if after.get_num_requested(k)}
    assert "training_pool" in requested
    assert "data_shard" not in requested and "proxy_checkpoints" not in requested

    sel = ["training_pool", "trajectory_clusters", "selected_subset"]
    again = dg.materialize(
        ASSETS,
        selection=[a for a in ASSETS if a.key.path[0] in sel],
        resources=resources,
        instance=instance,
        run_config=run_config("tiny", assets=sel),
    )
    assert again.success
    pool = meta(again, "training_pool")
    assert pool["dagster/row_count"] == base.height + n_new
    assert pool["n_shards"] == 1 and "new.jsonl" in pool["shards"]
    lineage = meta(again, "selected_subset")["lineage"]
    assert lineage["dataset"]["shards"] == pool["shards"]
    assert lineage["dataset"]["raw_dataset"] == meta(first, "raw_dataset")["content_hash"]
    resolver = staleness(instance, graph)
    assert resolver.get_status(dg.AssetKey("selected_subset")) == StaleStatus.FRESH


def staleness(instance, graph) -> CachingStaleStatusResolver:
    return CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))


def test_new_code_version_makes_assets_stale(pipeline) -> None:
    from s2l_pipeline.definitions import ASSETS

    _, instance, resources, _ = pipeline
    bumped = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="99"))
        if a.key.path[0] == "trajectory_clusters"
        else a
        for a in ASSETS
    ]
    graph = dg.Definitions(assets=bumped, resources=resources).resolve_asset_graph()
    resolver = staleness(instance, graph)
    assert resolver.get_status(dg.AssetKey("trajectory_clusters")) == StaleStatus.STALE
    causes = resolver.get_stale_causes(dg.AssetKey("trajectory_clusters"))
    assert any("code version" in c.reason for c in causes)
    assert resolver.get_status(dg.AssetKey("raw_dataset")) == StaleStatus.FRESH


def test_lineage_command_prints_the_chain(pipeline, monkeypatch, capsys) -> None:
    from s2l_pipeline.cli import main

    root, instance, resources, first = pipeline
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster"))
    assert main(["lineage", "target_model:selected"]) == 0
    out = capsys.readouterr().out
    proxy = meta(first, "proxy_checkpoints")
    target = meta(first, "target_model")
    for text in (
        meta(first, "raw_dataset")["content_hash"],
        "method: s2l",
        "k: 8",
        "seed: 0",
        target["checkpoint_sha256"],
        "training_set: selected",
    ):
        assert text in out, text
    manifest = json.loads(Path(proxy["manifest"]).read_text())
    for c in manifest["checkpoints"]:  # every proxy checkpoint's hash is on the chain
        assert c["sha256"] in out
    order = [out.index(f". {link}\n") for link in ("dataset", "proxy", "selection", "target")]
    assert order == sorted(order)

    # The same chain from the target's MLflow run.
    run_id = target["mlflow_run_id"]
    uri = resources["mlflow"].tracking_uri
    assert main(["lineage", run_id, "--tracking-uri", uri, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["target"]["checkpoint_sha256"] == target["checkpoint_sha256"]
    assert record["selection"]["method"] == "s2l"
    # Every MLflow run on the chain carries it: searchable tags and the whole record.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    subset_hash = meta(first, "selected_subset")["content_hash"]
    for asset in ("selected_subset", "target_model", "target_evaluation"):
        mlflow_run = meta(first, asset)["mlflow_run_id"]
        tags = client.get_run(mlflow_run).data.tags
        assert tags["lineage.selection.subset_hash"] == subset_hash, asset
        assert "lineage.json" in {a.path for a in client.list_artifacts(mlflow_run)}, asset

    assert main(["lineage", "no_such_asset"]) == 2
    assert "neither an asset" in capsys.readouterr().err


@pytest.mark.slow  # materializes shards beyond the tiny graph
def test_proxy_retrains_only_by_policy(pipeline) -> None:
    from s2l_pipeline.defs.automation import RetrainPolicy
    from s2l_pipeline.defs.sensors import proxy_retrain_sensor

    root, instance, resources, first = pipeline
    policy = meta(first, "proxy_checkpoints")["retrain_policy"]
    assert policy["new_data_share"] == 0.25 and policy["sensor"] == "proxy_retrain_sensor"
    assert meta(first, "proxy_checkpoints")["trained_on"]["shards"] == {}
    if not instance.get_dynamic_partitions("data_shards"):  # run alone: add one shard first
        test_new_shard_is_scored_incrementally_and_joins_the_pool(pipeline)

    def tick(share: float):
        res = {
            "retrain_policy": RetrainPolicy(new_data_share=share),
            "artifact_store": resources["artifact_store"],
        }
        with dg.build_sensor_context(instance=instance, resources=res) as ctx:
            return proxy_retrain_sensor(ctx)

    # The shard added ~40 rows to a pool of ~360: 10%, under the default 25%.
    skipped = tick(0.25)
    assert isinstance(skipped, dg.SkipReason) and "not due" in skipped.skip_message
    due = tick(0.05)
    assert isinstance(due, dg.RunRequest) and due.run_key.startswith("proxy-retrain:")
    assert "due" in due.tags["s2l/retrain_reason"]
    assert not due.run_config  # the deployment's scale comes from the config defaults
    assert tick(0.05).run_key == due.run_key  # same pool, same key: never two retrains
