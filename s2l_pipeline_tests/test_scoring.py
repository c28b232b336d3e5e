"""Our batched scorer against the official one-row-at-a-time loop, on real GSM8K rows."""

import numpy as np
import polars as pl
import pytest

from s2l_pipeline.core.data.ingest import DatasetSpec, FileSource, load_dataset
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.losses import length_batches, reference_losses, score_losses
from s2l_pipeline.core.lm.models import NeoXSize, build_gpt_neox
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def gsm8k() -> pl.DataFrame:
    files = tuple(
        FileSource(str(FIXTURES / n))
        for n in ("gsm8k_train_sample.jsonl", "gsm8k_test_sample.jsonl")
    )
    return load_dataset(DatasetSpec(embedded=None, files=files)).train


@pytest.fixture(scope="module")
def model_and_tokenizer(gsm8k):
    tok = train_bpe_tokenizer(tokenizer_texts(gsm8k), 400)
    return build_gpt_neox(NeoXSize(64, 2, 4, 256, max_positions=1024), tok, seed=1), tok


def test_encoding_masks_prompt_and_flags_truncation(gsm8k, model_and_tokenizer) -> None:
    _, tok = model_and_tokenizer
    full = encode(gsm8k, tok, 1024)
    assert not full.truncated.any()
    row = full.input_ids[0]
    assert row[-1] == tok.eos_token_id
    labels = full.labels(0)
    p = int(full.prompt_lens[0])
    assert labels[:p] == [-100] * p and labels[p:] == row[p:]
    assert tok.decode(row[p:-1]) == gsm8k["response"][0]

    short = encode(gsm8k, tok, 160)
    assert (short.lengths <= 160).all()
    fills = short.prompt_lens >= 160
    assert fills.any(), "some GSM8K prompts must fill a 160-token limit for this test"
    partly = short.truncated & ~fills
    assert partly.any() and (short.n_response_tokens[partly] > 0).all()
    assert (short.n_response_tokens[fills] == 0).all() and short.truncated[fills].all()


@pytest.mark.parametrize("max_length", [1024, 160])
def test_batched_losses_equal_the_reference_loop(gsm8k, model_and_tokenizer, max_length) -> None:
    model, tok = model_and_tokenizer
    enc = encode(gsm8k, tok, max_length)
    ours = score_losses(model, enc, token_budget=4096)
    ref = reference_losses(model, enc)
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    assert ok.sum() >= 30  # 40 rows; at 160 tokens 8 prompts fill the limit
    np.testing.assert_allclose(ours[ok], ref[ok], atol=1e-4, rtol=0)
    # Rows whose prompt fills the limit have no response token: NaN, never a silent 0.
    assert np.isnan(ours[enc.n_response_tokens == 0]).all()


def test_batching_does_not_change_losses(gsm8k, model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    enc = encode(gsm8k, tok, 512)
    a = score_losses(model, enc, token_budget=600)  # about one row per batch
    b = score_losses(model, enc, token_budget=1 << 16)  # everything in one batch
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_length_batches_respect_the_budget() -> None:
    lengths = np.array([5, 50, 7, 30, 30, 2, 49])
    batches = length_batches(lengths, 100)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    for b in batches:
        assert len(b) * lengths[b].max() <= 100 or len(b) == 1
    assert lengths[batches[0][0]] == 50  # longest first


def test_rows_that_cannot_be_scored_are_reported_before_scoring() -> None:
    import polars as pl
    import pytest

    from s2l_pipeline.core.stages.models import training_set_rows
    from s2l_pipeline.core.trajectories import TooManyUnscorable, check_unscorable

    base = pl.DataFrame(
        {"example_id": list("abcdefghij"), "n_response_tokens": [0, 0, 3, 4, 5, 6, 7, 8, 9, 1]}
    )
    assert check_unscorable(base, 0.25, 96) == 2
    with pytest.raises(TooManyUnscorable, match=r"2 of 10 rows \(20.0%\).*Raise max_length"):
        check_unscorable(base, 0.1, 96)

    data = pl.DataFrame({"example_id": list("abcdefghij"), "prompt": list("0123456789")})
    usable = base.filter(pl.col("n_response_tokens") > 0)["example_id"]
    full = training_set_rows("full", data, data.head(0), 4, 0, usable)
    assert full.height == 8 and not {"a", "b"} & set(full["example_id"])
    for seed in range(20):  # random draws only from usable rows, whatever the seed
        rnd = training_set_rows("random", data, data.head(0), 4, seed, usable)
        assert rnd.height == 4 and not {"a", "b"} & set(rnd["example_id"])
