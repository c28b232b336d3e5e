"""max_length: auto fits the data (99th percentile, a multiple of 8, capped); numbers stay."""

import polars as pl
import pytest

from s2l_pipeline.core.lm.encoding import encode
from s2l_pipeline.core.lm.fit import resolve_max_length
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer
from s2l_pipeline.core.lm.train_config import TrainConfig
from s2l_pipeline.defs.lm_config import LMTrainingConfig


@pytest.fixture(scope="module")
def rows():
    # 200 rows: most short, two very long (the 1% that auto lets go)
    prompts = [f"what is {i} plus {i}?" for i in range(198)] + ["long " * 300, "longer " * 400]
    df = pl.DataFrame(
        {
            "prompt": prompts,
            "response": [str(2 * i) for i in range(200)],
            "task": ["math"] * 200,
        }
    )
    tok = train_bpe_tokenizer(df["prompt"].to_list() + df["response"].to_list(), 300)
    return df, tok


def test_auto_covers_the_99th_percentile(rows) -> None:
    df, tok = rows
    full = encode(df, tok, 1_000_000).lengths
    chosen, said = resolve_max_length(df, tok, TrainConfig())
    assert chosen % 8 == 0 and chosen < 64  # not stretched to the two long outliers
    assert (full <= chosen).mean() >= 0.99
    assert "max_length auto" in said and "1.0% of rows longer" in said
    capped, _ = resolve_max_length(df, tok, TrainConfig(max_length_cap=8))
    assert capped == 8


def test_a_number_is_kept_and_nonsense_refused(rows) -> None:
    df, tok = rows
    assert resolve_max_length(df, tok, TrainConfig(max_length=96)) == (96, "")
    assert LMTrainingConfig(max_length=512).train_config().max_length == 512
    assert LMTrainingConfig().train_config().max_length == "auto"
    with pytest.raises(ValueError, match="'auto' or a count of at least 8 tokens"):
        LMTrainingConfig(max_length="long").train_config()


def test_a_row_whose_prompt_fills_the_cap_does_not_drive_auto(rows) -> None:
    """One huge row in 20 is the 99th percentile; its prompt alone fills the cap, so no length
    would train on it (it is flagged unscorable): it is left out, said, and auto stays short."""
    df, tok = rows
    small = pl.concat([df.head(19), df.tail(1).with_columns(prompt=pl.lit("longer " * 5000))])
    chosen, said = resolve_max_length(small, tok, TrainConfig(max_length_cap=1024))
    assert chosen < 64, said
    assert "1 rows whose prompt alone fills the cap left out (unscorable)" in said
