"""The whole graph so far, materialized in process on the tiny profile."""

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from s2l_pipeline.defs.profiles import run_config

from .helpers import make_resources, meta


@pytest.fixture(scope="module")
def tiny_run(tiny_graph):
    """The session's tiny graph (conftest): materialized once for every module that reads it."""
    return tiny_graph.root, tiny_graph.resources, tiny_graph.result


def test_every_asset_materializes_and_checks_pass(tiny_run) -> None:
    _, _, result = tiny_run
    assert result.success
    done = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert done == {
        "raw_dataset",
        "eval_sets",
        "proxy_checkpoints",
        "loss_trajectories",
        "training_pool",
        "trajectory_clusters",
        "selected_subset",
        "target_model",
        "target_evaluation",
    }
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "raw_dataset_rows_valid": True,
        "inputs_fit_the_run": True,
        "eval_sets_not_in_training": True,
        "trajectories_cover_dataset": True,
        "trajectories_finite": True,
        "trajectories_loss_decreases": True,
        "clusters_group_similar_gradients": True,
        "references_score_as_correct": True,
        # The tiny target (8 steps) answers one string to everything: the check says so.
        "predictions_not_constant": False,
    }
    [collapsed] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "predictions_not_constant"
    ]
    assert collapsed.severity == dg.AssetCheckSeverity.WARN
    assert collapsed.metadata["max_modal_share"].value > 0.5
    modal = collapsed.metadata["modal_prediction"].value
    assert modal in collapsed.description
    [refs] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "references_score_as_correct"
    ]
    shares = refs.metadata["reference_accuracy"].value
    assert len(shares) == 16 and min(shares.values()) == 1.0
    evaluation = meta(result, "target_evaluation")
    # the floor beside accuracy; each set names its metric
    assert 0 <= evaluation["in_domain_floor_accuracy"] <= 1
    assert evaluation["metric_by_set"]["gcd"] == "accuracy (reasoning_gym)"
    proxy = meta(result, "proxy_checkpoints")
    resolved = proxy["train_config"]["max_length"]  # 'auto', resolved on the data
    assert isinstance(resolved, int) and resolved % 8 == 0 and resolved < 128
    assert proxy["training_order"] == "shuffle"
    assert proxy["longest_single_source_run"] == proxy["longest_single_source_run_shuffle"]


def test_trajectory_table_layout(tiny_run) -> None:
    _, _, result = tiny_run
    traj = pl.read_parquet(meta(result, "loss_trajectories")["trajectories_path"])
    proxy = meta(result, "proxy_checkpoints")
    steps = [int(c.rsplit("_", 1)[1]) for c in traj.columns if c.startswith("loss_step_")]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) == 5  # step 0 + 4
    assert traj.columns == [
        "example_id",
        *[f"loss_step_{s}" for s in steps],
        "n_response_tokens",
        "truncated",
    ]
    assert all(traj[c].dtype == pl.Float32 for c in traj.columns if c.startswith("loss_"))
    assert traj.height == 400 and proxy["num_checkpoints"] == 5
    # The proxy's training loss is a plot on its asset page, and its last value a number.
    assert proxy["training_loss"].startswith("![training loss](data:image/png;base64,")
    assert 0 < proxy["final_training_loss"] < traj["loss_step_0"].mean()
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


@pytest.mark.slow  # the whole graph a second time
def test_rematerializing_reuses_checkpoints_and_scores(tiny_run) -> None:
    from s2l_pipeline.definitions import MAIN_ASSETS

    _, resources, first = tiny_run
    again = dg.materialize(
        MAIN_ASSETS, resources=resources, run_config=run_config("tiny"), partition_key="selected"
    )
    m = meta(again, "loss_trajectories")
    assert m["units_scored"] == 0 and m["units_reused"] == 5 * 3  # 5 checkpoints x 3 shards
    assert m["content_hash"] == meta(first, "loss_trajectories")["content_hash"]
    # Same inputs and seed: the same subset, byte for byte.
    a, b = (meta(r, "selected_subset") for r in (first, again))
    assert a["content_hash"] == b["content_hash"]
    assert Path(a["subset_path"]).read_bytes() == Path(b["subset_path"]).read_bytes()


@pytest.mark.slow  # beyond the fast loop
def test_failed_scoring_steps_rerun_alone(tmp_path: Path) -> None:
    """A unit that fails leaves the finished ones stored; the rerun scores only what failed."""
    from s2l_pipeline.definitions import MAIN_ASSETS

    resources = make_resources(str(tmp_path / "art"))
    upstream = [a for a in MAIN_ASSETS if a.key.path[0] in ("raw_dataset", "proxy_checkpoints")]
    traj = [a for a in MAIN_ASSETS if a.key.path[0] == "loss_trajectories"]
    up_cfg = run_config("tiny", assets=[a.key.path[0] for a in upstream])
    base = dg.materialize(upstream, resources=resources, run_config=up_cfg)
    ckpts = base.output_for_node("proxy_checkpoints").checkpoints
    weights = Path(ckpts[2].uri) / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"\0" * 8)  # a corrupted checkpoint: its hash changes

    cfg = run_config("tiny", assets=["loss_trajectories"])
    failed = dg.materialize(
        [*traj, *upstream],
        selection=traj,
        resources=resources,
        run_config=cfg,
        raise_on_error=False,
    )
    assert not failed.success
    failures = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert {e.step_key.split("[")[1].rstrip("]") for e in failures} == {
        f"step_{ckpts[2].step}_rows_{a}_{b}" for a, b in ((0, 150), (150, 300), (300, 400))
    }
    text = failures[0].step_failure_data.user_failure_data.description
    assert "does not match the manifest" in text

    weights.write_bytes(original)
    again = dg.materialize([*traj, *upstream], selection=traj, resources=resources, run_config=cfg)
    m = meta(again, "loss_trajectories")
    assert m["units_scored"] == 3 and m["units_reused"] == 12


@pytest.mark.slow  # beyond the fast loop
def test_pretrained_model_path_from_a_local_folder(tmp_path: Path) -> None:
    """The real path (from_pretrained by name) exercised on a Pythia-architecture folder."""
    from s2l_pipeline.core.lm.models import NeoXSize, build_gpt_neox, save_model
    from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer
    from s2l_pipeline.definitions import MAIN_ASSETS

    tok = train_bpe_tokenizer(["Calculate 12 + 7.\nAnswer: 19", "gcd of 4 and 6 is 2"] * 50, 300)
    pretrained = save_model(
        build_gpt_neox(NeoXSize(32, 1, 2, 64), tok, seed=3), tok, tmp_path / "pythia-local"
    )
    cfg = run_config(
        "tiny",
        overrides={
            "proxy_checkpoints": {
                "model": str(pretrained),
                "learning_rate": 2e-5,
                "warmup_ratio": 0.03,
                "epochs": 1.0,
                "checkpoint_every": 5,
            },
            # its tokenizer knows two sentences: a quarter of the prompts fill 96 tokens
            "loss_trajectories.plan_scoring": {"max_unscorable_share": 0.5},
        },
    )
    upto = [a for a in MAIN_ASSETS if a.key.path[0] not in ("target_model", "target_evaluation")]
    cfg["ops"] = {k: v for k, v in cfg["ops"].items() if not k.startswith("target_")}
    result = dg.materialize(upto, resources=make_resources(str(tmp_path / "art")), run_config=cfg)
    proxy = result.output_for_node("proxy_checkpoints")
    assert proxy.model.name == str(pretrained)
    assert [c.step for c in proxy.checkpoints] == [0, 5, 10, 13]  # 400 rows / 32 = 13
    assert proxy.n_parameters < 30_000  # the saved model, not an embedded-size one
    traj = pl.read_parquet(meta(result, "loss_trajectories")["trajectories_path"])
    assert [c for c in traj.columns if c.startswith("loss_")] == [
        f"loss_step_{s}" for s in (0, 5, 10, 13)
    ]


def test_selected_subset_holds_raw_rows_and_clusters(tiny_run) -> None:
    _, _, result = tiny_run
    sub_meta = meta(result, "selected_subset")
    subset = pl.read_parquet(sub_meta["subset_path"])
    raw = pl.read_parquet(meta(result, "raw_dataset")["train_path"])
    clusters = pl.read_parquet(meta(result, "trajectory_clusters")["clusters_path"])
    assert subset.columns == [*raw.columns, "cluster"] and subset.height == 120  # 30% of 400
    assert (
        subset.drop("cluster").join(raw, on=raw.columns, how="anti", nulls_equal=True).height == 0
    )
    assert clusters["cluster"].n_unique() == 8 and clusters.height == 400
    for key in ("per_source", "per_cluster", "per_source_chart", "content_hash"):
        assert key in sub_meta
    assert "basic_arithmetic" in sub_meta["per_source"]
    clusters_meta = meta(result, "trajectory_clusters")
    assert clusters_meta["trained_on_points"] == 400 and len(clusters_meta["centroids"]) == 8


@pytest.mark.parametrize(
    "method",
    [pytest.param("learning_percentage", marks=pytest.mark.slow), "facility_location", "random"],
)
def test_baselines_through_the_asset(tiny_run, method) -> None:
    from s2l_pipeline.definitions import MAIN_ASSETS

    _, resources, _ = tiny_run
    sel = [a for a in MAIN_ASSETS if a.key.path[0] == "selected_subset"]
    cfg = run_config(
        "tiny", {"selected_subset": {"method": method, "budget": "50"}}, assets=["selected_subset"]
    )
    result = dg.materialize([*MAIN_ASSETS], selection=sel, resources=resources, run_config=cfg)
    m = meta(result, "selected_subset")
    assert m["method"] == method and m["dagster/row_count"] == 50


def test_target_trained_on_the_subset_and_evaluated(tiny_run) -> None:
    _, resources, result = tiny_run
    target = result.output_for_node("target_model")
    assert target.training_set == "selected" and target.n_examples == 120
    assert target.checkpoints[0].step == 0
    ev = meta(result, "target_evaluation")
    for key in ("in_domain_accuracy", "out_of_domain_accuracy", "in_domain_mean_nll", "mean_nll"):
        assert 0.0 <= ev[key] < 100.0
    preds = pl.read_parquet(ev["predictions_path"])
    assert preds.height == 12 * 10 + 4 * 10
    assert {"prediction", "correct", "nll", "reference"} <= set(preds.columns)
    assert preds["nll"].is_finite().all()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(resources["mlflow"].resolved_uri())
    exp = client.get_experiment_by_name("s2l_pipeline")
    runs = {r.data.tags["dagster.asset_key"]: r for r in client.search_runs([exp.experiment_id])}
    tr = runs["target_model"]
    assert tr.data.tags["training_set"] == "selected"
    assert tr.data.tags["dagster.partition"] == "selected"
    assert (
        tr.data.tags["upstream.selected_subset.data_version"]
        == meta(result, "selected_subset")["content_hash"]
    )
    evr = runs["target_evaluation"]
    assert "in_domain_accuracy" in evr.data.metrics
    arts = {a.path for a in client.list_artifacts(evr.info.run_id, "evaluation")}
    assert "evaluation/predictions.parquet" in arts


@pytest.mark.slow  # beyond the fast loop
@pytest.mark.parametrize("partition", ["random", "full"])
def test_comparison_targets_on_random_and_full(tiny_run, partition) -> None:
    import json

    from s2l_pipeline.definitions import MAIN_ASSETS

    _, resources, _ = tiny_run
    store = resources["artifact_store"].store()
    subset = json.loads(store.read_text("_manifests/selected_subset/__unpartitioned__.json"))
    rows = {"random": subset["budget"], "full": 400}[partition]
    target = [a for a in MAIN_ASSETS if a.key.path[0] == "target_model"]
    cfg = run_config("tiny", assets=["target_model"])
    result = dg.materialize(
        MAIN_ASSETS, selection=target, resources=resources, run_config=cfg, partition_key=partition
    )
    out = result.output_for_node("target_model")
    assert out.training_set == partition and out.n_examples == rows


@pytest.mark.slow  # beyond the fast loop
def test_pretrained_lora_target_and_summarization_eval(tiny_run, tmp_path: Path) -> None:
    """A locally saved HF model as target (LoRA via peft), evaluated on a radiology file too."""
    from s2l_pipeline.core.lm.models import NeoXSize, build_gpt_neox, save_model
    from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer
    from s2l_pipeline.definitions import MAIN_ASSETS

    from .conftest import FIXTURES

    _, resources, _ = tiny_run
    tok = train_bpe_tokenizer(
        ["Findings: lungs clear.\nImpression: normal.", "1 + 2 = 3"] * 40, 300
    )
    local = save_model(
        build_gpt_neox(NeoXSize(32, 1, 2, 64), tok, seed=5), tok, tmp_path / "local-target"
    )
    picked = [
        a
        for a in MAIN_ASSETS
        if a.key.path[0] in ("eval_sets", "target_model", "target_evaluation")
    ]
    cfg = run_config(
        "tiny",
        {
            "eval_sets": {
                "files": [{"path": str(FIXTURES / "radiology_sample.jsonl"), "name": "radiology"}]
            },
            "target_model": {"model": str(local), "lora_r": 4, "learning_rate": 1e-3},
            "target_evaluation": {"max_new_tokens": 12},
        },
        assets=["eval_sets", "target_model", "target_evaluation"],
    )
    result = dg.materialize(
        MAIN_ASSETS, selection=picked, resources=resources, run_config=cfg, partition_key="selected"
    )
    target = result.output_for_node("target_model")
    assert target.model.name == str(local) and target.lora_r == 4
    final = Path(target.final.uri)
    assert (final / "model.safetensors").exists() and not (final / "adapter_config.json").exists()
    per_set = pl.read_parquet(result.output_for_node("target_evaluation").metrics.uri).filter(
        pl.col("eval_set") == "radiology"
    )
    assert per_set.height == 1 and per_set["task"][0] == "summarization"
    for col in ("rougeL", "bleu", "embedding_similarity", "mean_nll"):
        assert per_set[col][0] is not None and per_set[col][0] >= 0


@pytest.mark.slow  # beyond the fast loop
def test_too_many_unscorable_rows_fail_before_scoring(tmp_path: Path) -> None:
    """GSM8K prompts fill a 24-token limit: the run stops before scoring, saying what to do."""
    from s2l_pipeline.definitions import MAIN_ASSETS

    from .conftest import FIXTURES

    names = ("raw_dataset", "proxy_checkpoints", "loss_trajectories")
    cfg = run_config(
        "tiny",
        overrides={
            "raw_dataset": {
                "embedded": {"enabled": False},
                "files": [{"path": str(FIXTURES / "gsm8k_train_sample.jsonl")}],
            },
            "proxy_checkpoints": {"max_length": 24},
        },
        assets=names,
    )
    picked = [a for a in MAIN_ASSETS if a.key.path[0] in names]
    result = dg.materialize(
        picked,
        resources=make_resources(str(tmp_path / "art")),
        run_config=cfg,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key.endswith("plan_scoring")
    text = failure.step_failure_data.user_failure_data.description
    assert "no response token within max_length 24" in text and "Raise max_length" in text


def _premise_inputs(tiny_run) -> tuple:
    """What the gradient check reads from the tiny run: trajectories, rows, clusters, the
    proxy's last checkpoint and its max_length."""
    from s2l_pipeline.core.support.tables import read_table

    _, resources, result = tiny_run
    store = resources["artifact_store"].store()
    pool = result.output_for_node("training_pool")
    proxy = result.output_for_node("proxy_checkpoints")
    clusters = read_table(result.output_for_node("trajectory_clusters").clusters, store)
    traj, data = read_table(pool.trajectories, store), read_table(pool.train, store)
    return traj, data, clusters, store.fetch_dir(proxy.final.uri), proxy.train.max_length


def test_premise_diagnostic_encodes_only_the_rows_it_sketches(tiny_run, monkeypatch) -> None:
    """The gradient check encodes only the rows it samples (encoding all 1M rows of a pool
    peaked at 8.15 GiB), and reports what encoding every row gives, number for number."""
    from s2l_pipeline.core.lm import encoding
    from s2l_pipeline.core.lm.models import load_causal_lm
    from s2l_pipeline.core.selection.common import matrix, pick_steps
    from s2l_pipeline.core.selection.diagnostics import premise_on_pool, premise_report

    traj, data, clusters, model_dir, max_length = _premise_inputs(tiny_run)
    # Two rows lose every response token, as a prompt filling max_length does: their losses
    # are NaN and the check must leave them out without encoding them to find out.
    cut = traj["example_id"].head(2)
    gone = pl.col("example_id").is_in(cut.implode())
    traj = traj.with_columns(
        pl.when(gone).then(float("nan")).otherwise(pl.col(c)).alias(c)
        for c in traj.columns
        if c.startswith("loss_step_")
    ).with_columns(
        pl.when(gone).then(0).otherwise(pl.col("n_response_tokens")).alias("n_response_tokens")
    )

    encode, encoded = encoding.encode, []

    def counting_encode(df, tokenizer, length):
        encoded.extend(df["example_id"].to_list())
        return encode(df, tokenizer, length)

    monkeypatch.setattr(encoding, "encode", counting_encode)
    report = premise_on_pool(traj, data, clusters, model_dir, max_length)

    # The way it was: join every row's text, encode every row, keep those with a response.
    rows = clusters.join(traj, on="example_id", maintain_order="left").join(
        data, on="example_id", maintain_order="left"
    )
    rows = rows.filter(~gone)
    model, tokenizer = load_causal_lm(model_dir)
    everything = encode(rows, tokenizer, max_length)
    assert (everything.n_response_tokens > 0).all()
    reference = premise_report(
        model,
        everything.subset,
        rows["cluster"].to_numpy(),
        matrix(rows, pick_steps(rows, None, "trained")),
        sources=rows["source"].to_numpy(),
        answers=rows["answer"].to_numpy(),
    )
    assert report == reference and report.within_pairs > 0
    # At most 20 clusters x 8, 160 uniform, 20 answers x 8 rows; never the rows left out.
    assert len(encoded) <= 480 and len(set(encoded)) < rows.height
    assert not set(cut) & set(encoded)


@pytest.mark.slow  # beyond the fast loop
def test_premise_diagnostic_tells_real_clusters_from_shuffled_ones(tiny_run) -> None:
    """The gradient diagnostic: clusters of the tiny run group alike gradients; the same
    cluster sizes with shuffled members do not (the check can fail)."""
    from s2l_pipeline.core.selection.diagnostics import premise_on_pool

    _, _, result = tiny_run
    traj, data, clusters, model_dir, max_length = _premise_inputs(tiny_run)

    real = premise_on_pool(traj, data, clusters, model_dir, max_length)
    shuffled = clusters.with_columns(pl.col("cluster").shuffle(seed=1))
    fake = premise_on_pool(traj, data, shuffled, model_dir, max_length)
    assert real.gap > 0.05 and real.within_pairs > 100 and real.silhouette > 0.2
    # Clusters group more alike gradients than the source alone does.
    assert real.within_cluster_cosine > real.same_source_cosine > real.random_pair_cosine - 0.05
    # The same-answer control is measured: pairs of one answer, and in-cluster pairs of two.
    assert -1 <= real.same_answer_cosine <= 1 and real.same_answer_cosine != real.gap
    other = real.within_cluster_other_answer_cosine
    assert other is None or -1 <= other <= 1
    assert abs(fake.gap) < real.gap / 2 and fake.silhouette < 0.05
    # One row per cluster: no pair to compare within a cluster, said as None (not NaN).
    alone = clusters.with_columns(pl.int_range(pl.len()).alias("cluster"))
    lonely = premise_on_pool(traj, data, alone.head(40), model_dir, max_length)
    assert lonely.within_pairs == 0 and lonely.within_cluster_cosine is None
    assert lonely.gap is None and lonely.random_pair_cosine == lonely.random_pair_cosine
    [check] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "clusters_group_similar_gradients"
    ]
    assert check.metadata["gap"].value == pytest.approx(real.gap)  # the check runs this


def test_the_premise_check_keeps_its_report_for_the_same_inputs(tiny_run, monkeypatch) -> None:
    """The check's report is stored by its inputs: asked again for the same clusters, pool
    and proxy it is read back, equal to what the check reported, without a gradient."""
    import dataclasses

    from s2l_pipeline.core.stages import selection as stage

    _, resources, result = tiny_run
    store = resources["artifact_store"].store()
    clusters, pool, proxy = (
        result.output_for_node(n)
        for n in ("trajectory_clusters", "training_pool", "proxy_checkpoints")
    )
    monkeypatch.setattr(stage, "premise_on_pool", None)  # a stored report must not recompute
    report = stage.premise_of_clusters(clusters, pool, proxy, store)
    [check] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "clusters_group_similar_gradients"
    ]
    assert check.metadata["gap"].value == report.gap and report.within_pairs > 0
    other_seed = dataclasses.replace(clusters, seed=clusters.seed + 1)
    with pytest.raises(TypeError):  # other inputs: not the stored report, so it would compute
        stage.premise_of_clusters(other_seed, pool, proxy, store)


def test_per_cluster_names_rows_without_a_cluster() -> None:
    import polars as pl

    from s2l_pipeline.defs.selection import labelled_clusters

    table = pl.DataFrame({"cluster": [0, 1, None], "full_rows": [5, 4, 2]})
    assert labelled_clusters(table)["cluster"].to_list() == ["0", "1", "unscorable"]


def test_lineage_link_opens_every_group_of_the_code_location() -> None:
    """The README's and `infra/stack up`'s asset graph link names every asset group the
    definitions have (the UI opens them collapsed otherwise)."""
    from s2l_pipeline.definitions import defs
    from s2l_pipeline.deploy.ui_links import ASSET_GROUPS, lineage_url

    from .conftest import PROJECT_ROOT

    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert set(ASSET_GROUPS) == groups
    assert lineage_url("http://127.0.0.1:3000") in (PROJECT_ROOT / "README.md").read_text()


def test_sentences_fit_the_asset_pages_value_column() -> None:
    from s2l_pipeline.defs.metadata import VALUE_COLUMN_CHARS, sentences

    said = ["Every cell's target answers one string to most rows of a validation set.", "Short."]
    text = sentences(said).value
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= VALUE_COLUMN_CHARS
    assert " ".join(lines).split() == " ".join(said).split()  # every word, in order
