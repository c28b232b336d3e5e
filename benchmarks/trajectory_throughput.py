"""Trajectory scoring throughput: our batched scorer vs the official S2L loop, in one run.

    python benchmarks/trajectory_throughput.py [--rows 2000] [--sizes proxy,target,pythia-70m]
        [--data embedded|gsm8k] [--reference-rows 400]

Both scorers see the same model and the same rows; the official-style loop (batch size 1, fp32,
one ``model(...).loss`` per row) is timed on ``--reference-rows`` rows and reported as tokens/s.
Prints tokens/s of both, their ratio, and the largest loss difference. On CUDA it also prints
model FLOP utilization (forward FLOPs ~ 2 x parameters x tokens, against the bf16 dense peak).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.core.data.ingest import DatasetSpec, FileSource, load_dataset
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.losses import reference_losses, score_losses
from s2l_pipeline.core.lm.models import SIZES, NeoXSize, build_gpt_neox, count_parameters
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer

SHAPES = {
    **SIZES,
    "pythia-70m": NeoXSize(hidden=512, layers=6, heads=8, ffn=2048, max_positions=2048),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def load_rows(kind: str, rows: int):
    if kind == "embedded":
        return generate_mixture(rows, seed=0, heldout_per_family=1)[0], 128
    path = Path(__file__).resolve().parents[1].parent / "shared/data/gsm8k/train.jsonl"
    df = load_dataset(DatasetSpec(embedded=None, files=(FileSource(str(path)),))).train
    return df.head(rows), 512


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def timed(fn, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--reference-rows", type=int, default=400)
    ap.add_argument("--sizes", default="proxy,target,pythia-70m")
    ap.add_argument("--data", choices=["embedded", "gsm8k"], default="embedded")
    ap.add_argument("--token-budget", type=int, default=None, help="default: the scorer's")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    df, max_length = load_rows(args.data, args.rows)
    tok = train_bpe_tokenizer(tokenizer_texts(df), 512)
    enc = encode(df, tok, max_length)
    ref_idx = np.arange(min(args.reference_rows, len(enc)))
    ref_enc = enc.subset(ref_idx)
    print(
        f"device={device} torch_threads={torch.get_num_threads()} data={args.data} "
        f"rows={len(enc)} tokens={int(enc.lengths.sum())} max_length={max_length}"
    )
    print(
        f"{'model':<12}{'params':>10}{'ours tok/s':>14}{'official tok/s':>16}{'ratio':>8}"
        f"{'max |diff|':>12}{'MFU':>8}"
    )
    for name in args.sizes.split(","):
        model = build_gpt_neox(SHAPES[name], tok, seed=0).to(device)
        n_params = count_parameters(model)
        score_losses(model, enc.subset(ref_idx[:64]), args.token_budget)  # warm-up
        ours, t_ours = timed(score_losses, model, enc, args.token_budget)
        ref, t_ref = timed(reference_losses, model, ref_enc)
        ours_tps = enc.lengths.sum() / t_ours
        ref_tps = ref_enc.lengths.sum() / t_ref
        ok = ~np.isnan(ref)
        diff = float(np.abs(ours[ref_idx][ok] - ref[ok]).max())
        peak = peak_flops()
        mfu = f"{2 * n_params * ours_tps / peak:.1%}" if peak else "-"
        print(
            f"{name:<12}{n_params:>10,}{ours_tps:>14,.0f}{ref_tps:>16,.0f}"
            f"{ours_tps / ref_tps:>7.1f}x{diff:>12.2e}{mfu:>8}"
        )


if __name__ == "__main__":
    main()
