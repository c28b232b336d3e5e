"""A MathInstruct-sized file in its schema (JSON array of instruction, output, source), to run
the pipeline at real sizes without the hub.

    python benchmarks/mathinstruct_sized.py --rows 262144 --out /tmp/mi_262k.json

Questions are distinct reasoning-gym problems over ten families at wider settings than the
embedded data (so a million are distinct); outputs follow MathInstruct's two styles in its
proportions (about half chain of thought, half program of thought): a GSM8K worked solution
as the rationale's text (read from ../shared/data when present, else the fixture sample; it
gives the lengths of real rationales, not a derivation of this problem) then "The answer is X",
or a short Python program. The content is a stand-in for size and shape, not for learning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2l_pipeline.core.data.generator import Family, generate_mixture  # noqa: E402

WIDE_FAMILIES: tuple[Family, ...] = (
    Family(
        "basic_arithmetic",
        0.18,
        dict(min_terms=2, max_terms=4, min_digits=1, max_digits=4, allow_negation=False),
    ),
    Family(
        "chain_sum",
        0.14,
        dict(min_terms=2, max_terms=5, min_digits=1, max_digits=4, allow_negation=False),
    ),
    Family(
        "simple_equations",
        0.12,
        dict(min_terms=2, max_terms=3, min_value=1, max_value=500, operators=("+", "-", "*")),
    ),
    Family("products", 0.11, dict(min_terms=2, max_terms=3, min_digits=1, max_digits=3)),
    Family("gcd", 0.09, dict(min_numbers=2, max_numbers=3, min_value=1, max_value=10_000)),
    Family("lcm", 0.08, dict(min_numbers=2, max_numbers=3, min_value=1, max_value=5_000)),
    Family(
        "leg_counting", 0.08, dict(min_animals=2, max_animals=5, min_instances=1, max_instances=60)
    ),
    Family(
        "fraction_simplification",
        0.07,
        dict(min_value=1, max_value=2_000, min_factor=1, max_factor=50, styles=("plain",)),
    ),
    Family("base_conversion", 0.06, dict(min_base=2, max_base=16, min_value=1, max_value=1 << 20)),
    Family("count_bits", 0.07, dict(min_n=1, max_n=1 << 30)),
)


def rationales() -> list[str]:
    """GSM8K worked solutions without their final line: real rationale lengths."""
    shared = ROOT.parent / "shared/data/gsm8k/train.jsonl"
    path = (
        shared if shared.exists() else ROOT / "s2l_pipeline_tests/fixtures/gsm8k_train_sample.jsonl"
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["answer"].rsplit("####", 1)[0].strip() for r in rows]


def records(rows: int, seed: int) -> list[dict]:
    train, _ = generate_mixture(rows, seed, 0, WIDE_FAMILIES)
    texts = rationales()
    out = []
    for i, r in enumerate(train.iter_rows(named=True)):
        family, answer = r["source"], r["response"]
        if i % 2:
            output = (
                "Let's write a Python program to solve it.\n"
                f"def solution():\n    # {r['prompt'].splitlines()[0][:80]}\n"
                f"    return {json.dumps(answer)}\n\nprint(solution())"
            )
            source = f"data/PoT/{family}.json"
        else:
            output = f"{texts[(i * 7919) % len(texts)]}\nThe answer is {answer}"
            source = f"data/CoT/{family}.json"
        out.append({"source": source, "output": output, "instruction": r["prompt"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=262_144)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    start = time.perf_counter()
    recs = records(args.rows, args.seed)
    Path(args.out).write_text(json.dumps(recs, ensure_ascii=False))
    size = Path(args.out).stat().st_size / 2**20
    took = time.perf_counter() - start
    print(f"wrote {len(recs)} records, {size:.0f} MiB, to {args.out} in {took:.0f} s")


if __name__ == "__main__":
    main()
