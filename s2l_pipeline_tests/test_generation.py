"""Greedy generation batched across prompt lengths equals one prompt at a time."""

import numpy as np
import pytest

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.generation import greedy_generate, length_batches
from s2l_pipeline.core.lm.models import SIZES, build_gpt_neox
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def model_and_prompts():
    import torch

    torch.manual_seed(0)
    rows, _ = generate_mixture(48, seed=3, heldout_per_family=0)
    tok = train_bpe_tokenizer(tokenizer_texts(rows), 300)
    model = build_gpt_neox(SIZES["proxy-tiny"], tok, seed=1)
    with torch.no_grad():  # large random weights: varied continuations, not one token for all
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    enc = encode(rows, tok, 256)
    prompts = [enc.context(i) for i in range(len(enc))]
    return model, tok, prompts


def test_batches_mix_lengths_and_keep_every_row_once() -> None:
    lengths = np.array([5, 9, 5, 7, 12, 9, 3])
    batches = length_batches(lengths, 3)
    assert [lengths[b].tolist() for b in batches] == [[3, 5, 5], [7, 9, 9], [12]]
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))


def test_batched_generation_equals_one_prompt_at_a_time(model_and_prompts) -> None:
    """Left padding with a mask, positions from the mask: the same greedy tokens as each prompt
    alone, also when the pad token is the eos token (as in many pretrained models)."""
    model, tok, prompts = model_and_prompts
    assert len({len(p) for p in prompts}) > 10  # real mixing: many lengths per batch
    alone = [greedy_generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert len(set(alone)) > 5  # not one string for everything: the comparison can fail
    assert greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=16) == alone
    pad, tok.pad_token = tok.pad_token, tok.eos_token
    try:
        assert greedy_generate(model, tok, prompts, max_new_tokens=8, batch_size=16) == alone
    finally:
        tok.pad_token = pad
