"""Chat records (OpenAI/HF messages, ShareGPT conversations): read with no mapping, every
assistant turn in the loss and nothing else, the last reply generated and judged."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.data.chat import PLAIN_PREFIX
from s2l_pipeline.core.data.ingest import DatasetSpec, FileSource, load_dataset
from s2l_pipeline.core.lm.chat_template import ChatTemplateError
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = FIXTURES / "chat_sample.jsonl"
SHAREGPT = FIXTURES / "sharegpt_sample.json"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load(path: Path, **kw) -> object:
    return load_dataset(
        DatasetSpec(embedded=None, files=(FileSource(str(path), **kw),), max_rejected_share=1.0)
    )


@pytest.fixture(scope="module")
def chat_rows() -> pl.DataFrame:
    return load(CHAT).train


@pytest.fixture(scope="module")
def tok(chat_rows):
    return train_bpe_tokenizer(tokenizer_texts(chat_rows), 400)


def test_chat_jsonl_and_sharegpt_array_load_with_no_mapping(chat_rows) -> None:
    records = [json.loads(line) for line in CHAT.read_text().splitlines()]
    assert chat_rows.height == len(records) == 12
    assert set(chat_rows["source"]) == {"messages"} and set(chat_rows["task"]) == {"summarization"}
    for row, rec in zip(chat_rows.iter_rows(named=True), records, strict=True):
        turns = json.loads(row["messages"])
        assert [t["content"] for t in turns] == [m["content"] for m in rec["messages"]]
        assert row["response"] == rec["messages"][-1]["content"]  # the reply evaluation generates
        assert row["prompt"].startswith(PLAIN_PREFIX["system"])
        assert row["prompt"].endswith(rec["messages"][-2]["content"])
    assert chat_rows["answer"].null_count() == 0  # every last reply ends in '#### N'

    shared = load(SHAREGPT)
    array = json.loads(SHAREGPT.read_text())
    assert shared.train.height == len(array) and shared.rejected.height == 0
    assert set(shared.train["source"]) == {"gsm8k_chat"}  # the record's own source
    roles = [[t["role"] for t in json.loads(m)] for m in shared.train["messages"]]
    assert {tuple(r) for r in roles} == {("system", "user", "assistant"), ("user", "assistant")}


def test_extra_fields_are_kept_with_each_row(chat_rows) -> None:
    origins = load(CHAT).origins
    originals = [json.loads(line) for line in CHAT.read_text().splitlines()]
    kept = [json.loads(r) for r in origins.sort("line")["record"]]
    assert kept == originals  # ids and labels, exactly as written
    assert origins["example_id"].to_list() == chat_rows["example_id"].to_list()


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        ({"messages": []}, "messages", "empty list"),
        ({"messages": "hi"}, "messages", "a str"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant turn"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]},
            "messages[1].role",
            "unknown role 'wizard'",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]},
            "messages[1].content",
            "no text",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "messages[2]",
            "ends with a user turn",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                    {"role": "assistant", "content": "b"},
                ]
            },
            "messages[0].content",
            "type 'image_url'",
        ),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " "}]},
            "conversations[1].value",
            "assistant turn is empty",
        ),
    ],
)
def test_a_bad_turn_is_rejected_naming_its_field(tmp_path, record, field, reason) -> None:
    good = {
        "messages" if "messages" in record else "conversations": (
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
            if "messages" in record
            else [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
        )
    }
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    loaded = load(path)
    assert loaded.train.height == 1 and loaded.rejected.height == 1
    bad = loaded.rejected.row(0, named=True)
    assert (bad["line"], bad["field"]) == (2, field) and reason in bad["reason"], bad
    assert json.loads(bad["raw"]) == record  # the row is kept as written


def test_openai_text_parts_and_sharegpt_speaker_names(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    recs = [
        {
            "messages": [
                {"role": "developer", "content": "Be short."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}],
                },
                {"role": "assistant", "content": "4"},
            ]
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in recs))
    row = load(path).train.row(0, named=True)
    assert row["prompt"] == "System: Be short.\nUser: 2+2?" and row["response"] == "4"
    sg = tmp_path / "sg.json"
    conv = [{"from": "human", "value": "hi"}, {"from": "chatgpt", "value": "hello"}]
    sg.write_text(json.dumps({"data": [{"conversations": conv}]}))  # an object holding the list
    assert load(sg).train["response"].to_list() == ["hello"]
    with pytest.raises(ValueError, match="assistant_turns applies to chat files"):
        load(FIXTURES / "gsm8k_train_sample.jsonl", assistant_turns="last")


def _span_texts(enc, tok, i: int) -> list[str]:
    ids = enc.input_ids[i]
    return [tok.decode(ids[a:b]) for a, b in enc.loss_spans(i)]


def test_every_assistant_turn_is_in_the_loss_and_nothing_else(chat_rows, tok) -> None:
    enc = encode(chat_rows, tok, 4096)
    for i, row in enumerate(chat_rows.iter_rows(named=True)):
        replies = [t["content"] for t in json.loads(row["messages"]) if t["role"] == "assistant"]
        assert _span_texts(enc, tok, i) == [r + tok.eos_token for r in replies]
        labels = np.array(enc.labels(i))
        assert (
            (labels != -100).sum()
            == enc.n_response_tokens[i]
            == sum(b - a for a, b in enc.loss_spans(i))
        )
        context = tok.decode(enc.context(i))  # what generation continues: up to the last reply
        assert context.endswith(row["prompt"].split("\n")[-1] + "\nAssistant: ")
    multi = [i for i, m in enumerate(chat_rows["messages"]) if m.count('"assistant"') == 2]
    assert multi and all(len(enc.loss_spans(i)) == 2 for i in multi)

    last = encode(load(CHAT, assistant_turns="last").train, tok, 4096)
    for i in range(len(last)):
        assert _span_texts(last, tok, i) == [chat_rows["response"][i] + tok.eos_token]
        assert last.input_ids[i] == enc.input_ids[i]  # same tokens, fewer in the loss


def test_a_cut_conversation_keeps_only_the_turns_inside_the_limit(chat_rows, tok) -> None:
    full = encode(chat_rows, tok, 4096)
    i = next(i for i in range(len(full)) if len(full.loss_spans(i)) == 2)
    (a1, b1), (a2, _) = full.loss_spans(i)
    cut = encode(chat_rows, tok, a2 - 2)  # past the first reply, before the second
    assert cut.loss_spans(i) == ((a1, b1),) and cut.truncated[i]
    early = encode(chat_rows, tok, a1)  # before any reply: nothing to score, never a 0 loss
    assert early.loss_spans(i) == () and early.n_response_tokens[i] == 0


def test_a_tokenizers_chat_template_is_used(chat_rows, tok) -> None:
    tok.chat_template = CHATML
    try:
        enc = encode(chat_rows, tok, 4096)
        row = chat_rows.row(0, named=True)
        replies = [t["content"] for t in json.loads(row["messages"]) if t["role"] == "assistant"]
        assert _span_texts(enc, tok, 0) == [r + "<|im_end|>\n" for r in replies]
        assert tok.decode(enc.input_ids[0]).startswith("<|im_start|>system\n")
        assert tok.decode(enc.context(0)).endswith("<|im_start|>assistant\n")
        tok.chat_template = "{{ messages[-1]['content'] }}"  # drops every turn but the last
        with pytest.raises(ChatTemplateError, match="not in the chat template's rendering"):
            encode(chat_rows, tok, 4096)
        tok.chat_template = (
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no') }}{% endif %}"
        )
        with pytest.raises(ChatTemplateError, match="fails on a conversation with roles"):
            encode(chat_rows, tok, 4096)
    finally:
        tok.chat_template = None


def test_batched_losses_match_the_models_own_loss_on_chat_rows(chat_rows, tok) -> None:
    """score_losses reads the spans itself; HF's loss over the labels is the reference."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from s2l_pipeline.core.lm.losses import reference_losses, score_losses

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    model = GPTNeoXForCausalLM(cfg)
    enc = encode(chat_rows, tok, 200)  # some rows cut inside a reply, some before any
    assert enc.truncated.any() and (enc.n_response_tokens > 0).sum() >= 6
    batched, reference = score_losses(model, enc), reference_losses(model, enc)
    np.testing.assert_array_equal(np.isfinite(batched), enc.n_response_tokens > 0)
    np.testing.assert_allclose(batched, reference, rtol=1e-4)


def _chat_file(path: Path, n: int, seed: int) -> list[dict]:
    """Reasoning-gym problems as a user's chat export: a system turn, every third
    conversation a second exchange, ids and labels beside the turns."""
    from .helpers import new_rows

    records = []
    for i, row in enumerate(new_rows(n, seed).iter_rows(named=True)):
        turns = [
            {"role": "system", "content": "Answer with the number only."},
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["response"]},
        ]
        if i % 3 == 0:
            turns += [
                {"role": "user", "content": "Are you sure?"},
                {"role": "assistant", "content": f"Yes: {row['response']}"},
            ]
        records.append({"id": f"conv-{seed}-{i}", "messages": turns, "labels": [row["source"]]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@pytest.mark.slow
def test_s2l_run_trains_selects_and_exports_a_chat_file(tmp_path: Path) -> None:
    """`s2l run --data chat.jsonl --eval sharegpt.json`, then `s2l export`: no mapping given."""
    import shutil
    import subprocess

    from .conftest import PROJECT_ROOT, s2l_cmd, s2l_env

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    train = tmp_path / "mine" / "chats.jsonl"
    originals = {r["id"]: r for r in _chat_file(train, 80, 5)}
    env = s2l_env(tmp_path)
    cmd = [*s2l_cmd(), "run", "--data", str(train), "--eval", str(SHAREGPT)]
    cmd += ["--budget", "24", "--method", "s2l"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 80
    assert summary["metric_by_set"]["fixtures_sharegpt_sample"] == "ROUGE-L"

    # The target generated each eval conversation's last reply from the turns before it.
    art = tmp_path / "art"
    preds = pl.read_parquet(next(art.glob("target_evaluation/**/predictions.parquet")))
    shared = {r["conversations"][-1]["value"]: r for r in json.loads(SHAREGPT.read_text())}
    assert preds.height == len(shared) and set(preds["reference"]) == set(shared)
    for row in preds.iter_rows(named=True):
        question = shared[row["reference"]]["conversations"][-2]["value"]
        assert row["prompt"].endswith("User: " + question)
    assert preds["prediction"].str.len_chars().sum() > 0  # it generated text

    out = tmp_path / "export"
    res = subprocess.run(
        [*s2l_cmd(), "export", "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in (out / "subset.jsonl").read_text().splitlines()]
    assert len(records) == 24 and all(r == originals[r["id"]] for r in records)


def test_a_hub_chat_dataset_saved_to_disk_loads_as_chat(tmp_path, chat_rows) -> None:
    """`hf: [{name: HuggingFaceH4/...}]` reads through datasets; a saved folder is the same path."""
    import datasets

    from s2l_pipeline.core.data.ingest import HFSource

    records = [json.loads(line) for line in CHAT.read_text().splitlines()]
    datasets.Dataset.from_list(
        [{"id": r["id"], "messages": r["messages"]} for r in records]
    ).save_to_disk(str(tmp_path / "ultrachat_like"))
    loaded = load_dataset(
        DatasetSpec(
            embedded=None,
            hf=(HFSource(str(tmp_path / "ultrachat_like"), assistant_turns="last"),),
        )
    )
    assert loaded.train["example_id"].to_list() == chat_rows["example_id"].to_list()
    assert all('"train": false' in m for m in loaded.train["messages"] if m.count("assistant") > 1)


PHI3_LIKE = (  # the eos only after the last turn: earlier renderings are no prefix of later ones
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"
)


def test_a_template_that_rewrites_earlier_turns_is_read_by_locating_each_turn(
    chat_rows, tok
) -> None:
    tok.chat_template = PHI3_LIKE
    try:
        enc = encode(chat_rows, tok, 4096)
        for i, row in enumerate(chat_rows.iter_rows(named=True)):
            turns = json.loads(row["messages"])
            replies = [t["content"] for t in turns if t["role"] == "assistant"]
            ends = ["<|end|>"] * (len(replies) - 1) + ["<|end|>\n" + tok.eos_token]
            assert _span_texts(enc, tok, i) == [r + e for r, e in zip(replies, ends, strict=True)]
            assert tok.decode(enc.context(i)).endswith(
                turns[-2]["content"] + "<|end|>\n<|assistant|>\n"
            )
    finally:
        tok.chat_template = None


def test_generation_stops_at_the_templates_end_of_turn(chat_rows) -> None:
    from s2l_pipeline.core.lm.chat_template import stop_token_ids

    tok = train_bpe_tokenizer(tokenizer_texts(chat_rows), 300)
    assert stop_token_ids(tok) == [tok.eos_token_id]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tok) == sorted({tok.eos_token_id, end})


def test_eval_nll_of_a_long_chat_keeps_its_last_reply(chat_rows, tok) -> None:
    whole = encode(chat_rows, tok, 1 << 30)
    i = next(i for i in range(len(whole)) if len(whole.loss_spans(i)) == 2)
    n = len(whole.input_ids[i])
    last_a, last_b = whole.loss_spans(i)[-1]
    limit = n - last_a + 3  # the last reply and three tokens before it
    right_cut = encode(chat_rows, tok, limit).loss_spans(i)
    assert all(b < last_b for _, b in right_cut)  # a right cut loses the reply it ends with
    kept = whole.cut(limit)
    assert kept.input_ids[i] == whole.input_ids[i][n - limit :]
    assert tok.decode(kept.input_ids[i][3:]) == chat_rows["response"][i] + tok.eos_token
    assert kept.loss_spans(i)[-1] == (3, limit) and kept.truncated[i]
    plain = encode(chat_rows.with_columns(messages=None), tok, 1 << 30).cut(40)
    right = encode(chat_rows.with_columns(messages=None), tok, 40)
    assert [plain.input_ids[k] for k in range(len(plain))] == [
        right.input_ids[k] for k in range(len(right))
    ]
    assert (plain.n_response_tokens == right.n_response_tokens).all()


def test_record_system_prompt_turn_weights_and_tool_calls(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    recs = [
        {
            "system": "Be terse.",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
        },
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "draft", "weight": 0},
                {"role": "user", "content": "again"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "c1", "type": "function"}],
                },
            ]
        },
        {"conversations": [{"from": "human", "value": "q"}, {"from": "GPT", "value": ""}]},
    ]
    path.write_text(json.dumps(recs[1]))
    (tmp_path / "sg.jsonl").write_text("\n".join(json.dumps(r) for r in (recs[0], recs[2])))
    sg = load(tmp_path / "sg.jsonl")
    assert sg.train["prompt"].to_list() == ["System: Be terse.\nUser: hi"]
    assert sg.rejected["reason"].to_list() == ["an assistant turn is empty"]
    msgs = load(path).train
    turns = json.loads(msgs["messages"][0])
    assert turns[1]["train"] is False and '"c1"' in turns[3]["content"]


def test_two_conversations_that_flatten_alike_stay_two_rows(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    one = [
        {"role": "user", "content": "a\nAssistant: b\nUser: c"},
        {"role": "assistant", "content": "d"},
    ]
    two = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    path.write_text(json.dumps({"messages": one}) + "\n" + json.dumps({"messages": two}))
    loaded = load(path)
    assert loaded.train["prompt"].n_unique() == 1 and loaded.train.height == 2


@pytest.mark.slow
def test_one_command_for_a_chat_training_file_and_a_mapped_test_file(tmp_path: Path) -> None:
    """Mixed schemas in one command: the chat file needs no mapping, `--eval-fields` maps the
    multiple-choice test file; with `--fields` instead, the mapping would reach the chat file
    and reject its rows (what a user met). `--until eval_sets` reads both and stops."""
    import shutil
    import subprocess

    from .conftest import PROJECT_ROOT, s2l_cmd, s2l_env
    from .helpers import MC, MC_FIELDS

    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    train = tmp_path / "mine" / "chats.jsonl"
    _chat_file(train, 60, 7)
    env = s2l_env(tmp_path)
    cmd = [*s2l_cmd(), "run", "--data", str(train), "--eval", str(MC), "--until", "eval_sets"]
    res = subprocess.run(
        [*cmd, "--eval-fields", json.dumps(MC_FIELDS)],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["examples"] == 60 and "proxy_checkpoints" not in summary["assets"]
    art = tmp_path / "art" / "_manifests"
    evals = json.loads((art / "eval_sets" / "__unpartitioned__.json").read_text())
    table = pl.read_parquet(evals["eval"]["uri"])
    assert table.height == 48 and set(table["answer_type"]) == {"choice"}

    wrong = subprocess.run(
        [*cmd, "--fields", json.dumps(MC_FIELDS)], capture_output=True, text=True, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 1 and "rows rejected" in wrong.stderr
