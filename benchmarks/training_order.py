"""How long training runs on one source at a time, and how much padding it carries, under each
data order: HF's length grouping (the old default), length windows (the option), a shuffle.

    python benchmarks/training_order.py                       # the embedded default data
    python benchmarks/training_order.py --train T.parquet --tokenizer DIR

Prints, per order, the longest run of consecutive batches of one source in epoch 0 and the
padding share, with the same figures for a uniform shuffle of the same rows beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2l_pipeline.core.data.generator import generate_mixture  # noqa: E402
from s2l_pipeline.core.lm.encoding import encode, render_prompts  # noqa: E402
from s2l_pipeline.core.lm.order import (  # noqa: E402
    _padding_share,
    epoch_order,
    longest_single_source_run,
)
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", help="raw_dataset train.parquet (default: the embedded data)")
    p.add_argument("--tokenizer", help="a checkpoint folder with tokenizer.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    df = pl.read_parquet(args.train) if args.train else generate_mixture(20_000, 0, 300)[0]
    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        texts = render_prompts(df["prompt"].to_list(), df["task"].to_list())
        tok = train_bpe_tokenizer(texts + df["response"].to_list(), 512)
    lengths = encode(df, tok, args.max_length).lengths
    sources = df["source"].to_list()
    b = args.batch_size

    # The old default: HF's length-grouped indices, seeded as its sampler was (seed, epoch 0).
    g = torch.Generator().manual_seed(args.seed * 100_003)
    hf = np.asarray(get_length_grouped_indices(lengths.tolist(), b, generator=g))
    orders = {
        "HF length grouping (old default)": hf,
        "length windows of 4 batches (option)": epoch_order(lengths, b, args.seed, 0, True, 4),
        "length windows of 16 batches": epoch_order(lengths, b, args.seed, 0, True, 16),
        "uniform shuffle (default)": epoch_order(lengths, b, args.seed, 0, False),
    }
    shuffle = orders["uniform shuffle (default)"]
    base_run = longest_single_source_run(shuffle, sources, b)
    base_pad = _padding_share(shuffle, lengths, b)
    print(f"{len(df)} rows, {df['source'].n_unique()} sources, batch {b}")
    print("| order | longest single-source run | shuffle's | padding share | shuffle's |")
    print("|---|---:|---:|---:|---:|")
    for name, order in orders.items():
        run = longest_single_source_run(order, sources, b)
        pad = _padding_share(order, lengths, b)
        print(f"| {name} | {run} | {base_run} | {pad:.3f} | {base_pad:.3f} |")


if __name__ == "__main__":
    main()
