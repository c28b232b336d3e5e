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
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts  # noqa: E402
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
    p.add_argument(
        "--time-steps", type=int, default=0, help="also time N training steps of --size per order"
    )
    p.add_argument("--size", default="target", help="embedded model size to time")
    args = p.parse_args()

    df = pl.read_parquet(args.train) if args.train else generate_mixture(20_000, 0, 300)[0]
    if args.tokenizer:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tok = train_bpe_tokenizer(tokenizer_texts(df), 512)
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
    if args.time_steps:
        enc = encode(df, tok, args.max_length)
        times = {name: time_steps(enc, tok, order, b, args) for name, order in orders.items()}
        base = times["uniform shuffle (default)"]
        threads = torch.get_num_threads()
        print(f"\n{args.time_steps} training steps of a {args.size} model, {threads} threads")
        print("| order | seconds | steps/s | time vs shuffle |")
        print("|---|---:|---:|---:|")
        for name, sec in times.items():
            print(f"| {name} | {sec:.1f} | {args.time_steps / sec:.1f} | {sec / base:.2f} |")


def time_steps(enc, tok, order: np.ndarray, batch: int, args) -> float:
    """Seconds for ``--time-steps`` AdamW steps over batches taken in ``order``."""
    import time

    from s2l_pipeline.core.lm.models import SIZES, build_gpt_neox
    from s2l_pipeline.core.lm.trainer import make_collator

    model = build_gpt_neox(SIZES[args.size], tok, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collate = make_collator(tok.pad_token_id)
    rows = [{"input_ids": enc.input_ids[i], "labels": enc.labels(i)} for i in range(len(enc))]
    start = time.perf_counter()
    for step in range(args.time_steps):
        at = (step * batch) % max(1, len(order) - batch)
        inputs = collate([rows[i] for i in order[at : at + batch]])
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
