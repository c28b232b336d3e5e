"""The durations table of docs/benchmarks.md from a pytest log run with ``--durations=0``.

    .venv/bin/pytest -n 2 --durations=0 > /tmp/tests.log
    .venv/bin/python benchmarks/test_durations.py /tmp/tests.log [--over 5] [--rev REV]

Each test over the threshold (setup, call and teardown summed) with its markers and the first
sentence of its docstring (else its module's), which says what it proves.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)", re.M)


def seconds_by_test(log: str) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for secs, _phase, nodeid in LINE.findall(log):
        total[nodeid] += float(secs)
    return dict(total)


def _first_sentence(text: str | None) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return re.split(r"(?<=[.:])\s", flat, maxsplit=1)[0].rstrip(":")


def source(path: str, rev: str | None) -> str:
    if rev is None:
        return (ROOT / path).read_text()
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def described(nodeid: str, rev: str | None = None) -> tuple[str, str]:
    """(markers, what the test proves) read from its source, without importing it."""
    path, _, name = nodeid.partition("::")
    func = name.split("[", 1)[0]
    tree = ast.parse(source(path, rev))
    marks = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            marks |= set(re.findall(r"mark\.(\w+)", ast.unparse(node.value)))
        if isinstance(node, ast.FunctionDef) and node.name == func:
            for dec in node.decorator_list:
                marks |= set(re.findall(r"mark\.(live|slow)", ast.unparse(dec)))
            doc = ast.get_docstring(node) or ast.get_docstring(tree)
            return ", ".join(sorted(marks & {"live", "slow"})), _first_sentence(doc)
    return ", ".join(sorted(marks & {"live", "slow"})), _first_sentence(ast.get_docstring(tree))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--over", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--rev", help="read the tests at this git revision (a log of an old one)")
    args = parser.parse_args()
    times = seconds_by_test(args.log.read_text())
    print("| seconds | test | markers | what it proves |")
    print("|---:|---|---|---|")
    for nodeid, secs in sorted(times.items(), key=lambda kv: -kv[1]):
        if secs <= args.over:
            break
        marks, what = described(nodeid, args.rev)
        short = nodeid.removeprefix("s2l_pipeline_tests/")
        print(f"| {secs:.1f} | `{short}` | {marks} | {what} |")
    print(f"\n{len(times)} tests timed, {sum(times.values()):.0f} s of test time in all")


if __name__ == "__main__":
    main()
