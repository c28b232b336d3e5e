"""Proxy training: checkpoint schedule, safetensors exports, and resume after a crash."""

import json
import os
from pathlib import Path

import pytest
from transformers import TrainerCallback

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.models import SIZES, build_gpt_neox, save_model
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer
from s2l_pipeline.core.lm.train_config import (
    CheckpointSchedule,
    RunCanceled,
    TrainConfig,
    TrainHooks,
    in_micro_batches,
    total_steps,
)
from s2l_pipeline.core.lm.trainer import last_complete_checkpoint, train_with_checkpoints
from s2l_pipeline.core.support.hashing import file_hash


def test_schedule_evenly_spaced_or_every_n() -> None:
    assert CheckpointSchedule(count=4).steps(16) == [4, 8, 12, 16]
    assert CheckpointSchedule(count=3).steps(10) == [3, 7, 10]
    assert CheckpointSchedule(count=50).steps(5) == [1, 2, 3, 4, 5]
    assert CheckpointSchedule(every=500).steps(1200) == [500, 1000, 1200]
    assert total_steps(100, TrainConfig(batch_size=32, epochs=3)) == 12
    assert total_steps(100, TrainConfig(batch_size=32, epochs=2.5)) == 10


class Crash(RuntimeError):
    pass


class CrashAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise Crash(f"simulated crash at step {self.step}")


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)


@pytest.fixture(scope="module")
def data():
    train, _ = generate_mixture(256, seed=5, heldout_per_family=1)
    tok = train_bpe_tokenizer(tokenizer_texts(train), 300)
    return tok, encode(train, tok, 64)


def _exporter(root: Path):
    def export(model, tokenizer, step):
        out = save_model(model, tokenizer, root / f"step_{step}")
        return {"step": step, "uri": str(out), "sha256": file_hash(out / "model.safetensors")}

    return export


def _train(tmp: Path, data, callbacks=None) -> list[dict]:
    tok, enc = data
    model = build_gpt_neox(SIZES["proxy-tiny"], tok, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=32, learning_rate=3e-3)
    return train_with_checkpoints(
        model,
        tok,
        enc,
        cfg,
        CheckpointSchedule(count=4),
        tmp / "work",
        _exporter(tmp / "out"),
        extra_callbacks=callbacks,
    ).records


@pytest.mark.slow  # beyond the fast loop
def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, data) -> None:
    clean = _train(tmp_path / "clean", data)
    assert [r["step"] for r in clean] == [0, 4, 8, 12, 16]
    for r in clean:
        files = {p.name for p in Path(r["uri"]).iterdir()}
        assert "model.safetensors" in files and "tokenizer.json" in files

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        _train(crashed, data, [CrashAt(14)])
    assert last_complete_checkpoint(crashed / "work").name == "checkpoint-12"
    exported = json.loads((crashed / "work" / "exports.json").read_text())
    assert sorted(int(k) for k in exported) == [0, 4, 8, 12]

    counter = CountSteps()
    resumed = _train(crashed, data, [counter])
    assert counter.steps == [13, 14, 15, 16]  # steps 1-12 were not redone (mid-epoch 2)
    assert [r["sha256"] for r in resumed] == [r["sha256"] for r in clean]


def test_partial_checkpoint_is_not_trusted(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for step, files in (
        (
            4,
            [
                "model.safetensors",
                "trainer_state.json",
                "optimizer.pt",
                "scheduler.pt",
                "rng_state.pth",
            ],
        ),
        (8, ["model.safetensors"]),
    ):
        d = work / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("x")
    assert last_complete_checkpoint(work).name == "checkpoint-4"


def test_finished_training_is_not_repeated(tmp_path: Path, data) -> None:
    first = _train(tmp_path, data)
    counter = CountSteps()
    again = _train(tmp_path, data, [counter])
    assert counter.steps == [] and again == first


@pytest.mark.slow  # beyond the fast loop
def test_records_of_a_lost_store_are_redone(tmp_path: Path, data) -> None:
    """Resume records are checked against the store: emptied, the checkpoints are made again
    (same bytes); a moved store root never gets the old root's uris."""
    import shutil

    from s2l_pipeline.core.lm.fit import StoreExporter
    from s2l_pipeline.core.support.storage import ArtifactStore

    tok, enc = data
    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=3e-3)
    messages: list[str] = []

    def train(root: Path) -> list[dict]:
        model = build_gpt_neox(SIZES["proxy-tiny"], tok, seed=0)
        export = StoreExporter(ArtifactStore(str(root)), "proxy_checkpoints/fp")
        hooks = TrainHooks(on_message=messages.append)
        return train_with_checkpoints(
            model, tok, enc, cfg, CheckpointSchedule(count=2), tmp_path / "work", export, hooks
        ).records

    first = train(tmp_path / "store")
    shutil.rmtree(tmp_path / "store")
    again = train(tmp_path / "store")
    assert [r["sha256"] for r in again] == [r["sha256"] for r in first]
    assert all(Path(r["uri"], "model.safetensors").exists() for r in again)
    assert any("not in the store any more" in m for m in messages)

    moved = train(tmp_path / "elsewhere")
    assert all(r["uri"].startswith(str(tmp_path / "elsewhere")) for r in moved)
    assert [r["sha256"] for r in moved] == [r["sha256"] for r in first]


def test_should_stop_cancels_training_as_an_interrupt(tmp_path: Path, data) -> None:
    tok, enc = data
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    model = build_gpt_neox(SIZES["proxy-tiny"], tok, seed=0)
    with pytest.raises(RunCanceled, match="canceled at step 3"):
        train_with_checkpoints(
            model,
            tok,
            enc,
            TrainConfig(epochs=2, batch_size=32),
            CheckpointSchedule(count=4),
            tmp_path / "work",
            _exporter(tmp_path / "out"),
            TrainHooks(should_stop=stop),
        )
    assert issubclass(RunCanceled, KeyboardInterrupt)  # Dagster stops on it, never retries


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """A real SIGKILL in epoch 2 (8 steps an epoch, checkpoints every 4): the rerun says where
    it resumed and every later checkpoint equals an uninterrupted run's, byte for byte."""
    import subprocess
    import sys

    script = Path(__file__).with_name("kill_during_training.py")

    def run(root: Path, kill_at: int, *every: str, in_save: bool = False):
        cmd = [sys.executable, str(script), str(root), str(kill_at), *every]
        env = {**os.environ, "KILL_IN_SAVE": "1" if in_save else "0"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    clean = run(tmp_path / "clean", 0)
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = json.loads(clean.stdout.strip().splitlines()[-1])
    killed = run(tmp_path / "killed", 14)
    assert killed.returncode == -9
    resumed = run(tmp_path / "killed", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 12 of 24" in resumed.stdout
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == expected

    # Resume-only saves (here after every step: 0 s apart) lose one step, not the time since
    # the last kept checkpoint, and change neither the kept checkpoints nor their bytes.
    killed = run(tmp_path / "often", 14, "0")
    assert killed.returncode == -9
    kept = sorted(p.name for p in (tmp_path / "often" / "out").iterdir())
    resumed = run(tmp_path / "often", 0, "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 13 of 24" in resumed.stdout
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == expected
    assert kept == ["step_0", "step_12", "step_4", "step_8"]  # nothing exported but kept steps
    assert len(list((tmp_path / "often" / "work").glob("checkpoint-*"))) <= 2

    # Killed inside the first kept step's save, its weights written but not its trainer state:
    # the rerun exports those weights and trains again from step 0 with step 0's weights (it
    # once went on from the exported step's weights: another final checkpoint, seen on Ray).
    killed = run(tmp_path / "in_save", 4, in_save=True)
    assert killed.returncode == -9
    left = tmp_path / "in_save" / "work" / "checkpoint-4"
    assert (left / "rng_state.pth").exists() and not (left / "trainer_state.json").exists()
    resumed = run(tmp_path / "in_save", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" not in resumed.stdout
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.slow  # two trainings and a tokenizer: beyond the fast loop
def test_a_finished_run_comes_back_from_its_record_until_a_checkpoint_is_lost(
    tmp_path: Path, monkeypatch
) -> None:
    """train_model again on the same rows and settings: the stored record, equal to the first
    run's, with no model built; a checkpoint gone from the store sends it back to training,
    which makes the same bytes."""
    import shutil

    import polars as pl

    from s2l_pipeline.core.lm import fit
    from s2l_pipeline.core.support.storage import ArtifactStore

    rows = generate_mixture(48, seed=3, heldout_per_family=0)[0]
    run = fit.TrainRun(
        fit.ModelSpec(size="proxy-tiny"),
        TrainConfig(epochs=1, batch_size=16, learning_rate=3e-3),
        CheckpointSchedule(count=2),
    )
    store = ArtifactStore(str(tmp_path / "store"))
    said: list[str] = []
    hooks = TrainHooks(on_message=said.append)
    digest = str(pl.DataFrame(rows).hash_rows().sum())

    def train():
        return fit.train_model("proxy_checkpoints", rows, digest, run, store, tmp_path / "w", hooks)

    first = train()
    with monkeypatch.context() as m:
        m.setattr(fit, "training_model", None)  # the record path must not build a model
        again = train()
    assert again == first and "nothing to train" in said[-1]
    assert again.n_parameters > 0 and again.order is not None

    shutil.rmtree(Path(first.checkpoints[1].uri))
    redone = train()
    assert [c.sha256 for c in redone.checkpoints] == [c.sha256 for c in first.checkpoints]
    assert any("not in the store any more" in m for m in said)


def test_micro_batches_split_only_what_exceeds_the_cap() -> None:
    cfg = TrainConfig(batch_size=8, grad_accum=1)
    assert in_micro_batches(cfg, 608, 2560) == TrainConfig(batch_size=4, grad_accum=2)
    assert in_micro_batches(cfg, 608, 1000) == TrainConfig(batch_size=1, grad_accum=8)
    assert in_micro_batches(cfg, 320, 2560) is cfg  # 8 x 320 fits: one pass
    odd = in_micro_batches(TrainConfig(batch_size=6, grad_accum=2), 600, 2000)
    assert (odd.batch_size, odd.grad_accum) == (3, 4)  # equal parts: 6 rows are 2 x 3, not 4 + 2


def test_micro_batches_train_the_weights_whole_batches_train(tmp_path: Path, data) -> None:
    """A batch run as micro-batches (gradients accumulated, the loss averaged over the whole
    batch's response tokens, the head at labels as a pretrained model trains) reaches the
    weights of the same batches run whole: the split buys memory, not another run."""
    import torch
    from safetensors.torch import load_file

    tok, enc = data
    whole = TrainConfig(epochs=1, batch_size=16, learning_rate=3e-3, warmup_ratio=0.0)
    weights = {}
    for name, cfg in {"whole": whole, "micro": in_micro_batches(whole, 64, 256)}.items():
        model = build_gpt_neox(SIZES["proxy-tiny"], tok, seed=0)
        [*_, last] = train_with_checkpoints(
            model, tok, enc, cfg, CheckpointSchedule(count=1), tmp_path / name / "work",
            _exporter(tmp_path / name / "out"), head_at_labels=True,
        ).records  # fmt: skip
        weights[name] = load_file(Path(last["uri"]) / "model.safetensors")
    assert (in_micro_batches(whole, 64, 256).batch_size, last["step"]) == (4, 16)
    for key, value in weights["whole"].items():
        assert torch.allclose(value, weights["micro"][key], atol=2e-5), key


def test_numerics_are_set_per_block_and_join_a_runs_id_only_when_given() -> None:
    """Threads, micro-batches and the loss path hold inside the block and are undone after it;
    a run without numerics keeps the fingerprint it always had."""
    import torch

    from s2l_pipeline.core.lm import fit
    from s2l_pipeline.core.lm.numerics import Numerics, using

    run = fit.TrainRun(model=fit.ModelSpec("some/pretrained"),
                       train=TrainConfig(batch_size=64, max_length=96))  # fmt: skip
    plain_id, threads = run.fingerprint("d"), torch.get_num_threads()
    with using(Numerics()):
        assert run.fingerprint("d") == plain_id
    assert fit.as_trained(run, 96).batch_size < 64  # pretrained on CPU: micro-batches
    assert fit.head_at_labels(run)
    with using(Numerics(threads=1, micro_batch_tokens=0, loss_at_labels=False)):
        assert torch.get_num_threads() == 1
        assert fit.as_trained(run, 96) == run.train  # whole batches
        assert not fit.head_at_labels(run)
        assert run.fingerprint("d") != plain_id  # another run's state is never resumed
    assert torch.get_num_threads() == threads and run.fingerprint("d") == plain_id
    with using(Numerics(micro_batch_tokens=2048)):
        assert fit.as_trained(run, 96).batch_size == 16
