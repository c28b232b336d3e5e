"""Wall time and peak RSS of every step of `s2l run` as the training file grows.

    python benchmarks/scale_curve.py --sizes 20000,100000,262144 --work /tmp/scale
    python benchmarks/scale_curve.py --sizes 20000,100000,262144 --work /tmp/scale --short
    python benchmarks/scale_curve.py --sizes 20000,262144,1000000 --work /tmp/scale --data-only
    python benchmarks/scale_curve.py --sizes 262144 --work /work/scale --keep --kill-after 6000
    python benchmarks/scale_curve.py --sizes 1000000 --work /tmp/scale --epochs 0.02

The full run at 262K rows takes about 10 hours on 2 cores. ``--keep`` reuses the size's
instance, so a run killed earlier resumes (as a user's `s2l run` does after a kill -9);
``--kill-after S`` sends SIGKILL to the run's process group after S seconds, so the full run
can go in parts that each fit a working session. Step times then sum over every run in the
instance (a killed step counts until the run's last event); the steps before training run again
in each part, which the per-run lines show.

Each size is a MathInstruct-shaped file (benchmarks/mathinstruct_sized.py) run by the real
command, `s2l run --data FILE --eval gsm8k_test_sample`, in a fresh Dagster instance, on the
default profile. ``--short`` trains the proxy and the target a fifth of an epoch, with 2
checkpoints, so a curve fits in an hour on 2 cores: the per-row work of every step is the same,
there is less of it; ``--epochs E`` is the same with E epochs (a memory check: a step's memory
does not depend on how long it trains). ``--data-only`` materializes only the data end
(raw_dataset, eval_sets and their checks, the preflight check included) with `dagster asset
materialize`. Step times come from the instance's step stats; peak RSS from sampling the
run's process tree every 0.25 s inside each step's window. Printed per step: seconds, ms per
1K rows, the growth of time per row against the smallest size, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "s2l_pipeline_tests/fixtures/gsm8k_test_sample.jsonl"
SHORT = """\
ops:
  raw_dataset: {config: {duplicates: drop}}
  proxy_checkpoints: {config: {epochs: 0.2, num_checkpoints: 2}}
  target_model: {config: {epochs: 0.2}}
"""
FULL = "ops:\n  raw_dataset: {config: {duplicates: drop}}\n"


class RssSampler(threading.Thread):
    """(time, bytes) of a process and its children, every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.proc, self.every, self.samples = psutil.Process(pid), every, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                break
            self.samples.append((time.time(), rss))
            time.sleep(self.every)

    def peak(self, start: float, end: float) -> int:
        inside = [r for t, r in self.samples if start - self.every <= t <= end + self.every]
        return max(inside, default=0)


def make_file(rows: int, work: Path) -> Path:
    path = work / f"mi_{rows}.json"
    if not path.exists():
        gen = [sys.executable, str(ROOT / "benchmarks/mathinstruct_sized.py")]
        subprocess.run([*gen, "--rows", str(rows), "--out", str(path)], check=True)
    return path


def data_only_command(data: Path, home: Path) -> list[str]:
    """The data end of the graph through Dagster's own CLI, with the files s2l run would pass."""
    config = {
        "ops": {
            "raw_dataset": {
                "config": {
                    "embedded": {"enabled": False},
                    "files": [{"path": str(data)}],
                    "duplicates": "drop",
                }
            },
            "eval_sets": {"config": {"files": [{"path": str(EVAL)}]}},
        }
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    return [
        dagster,
        "asset",
        "materialize",
        "-m",
        "s2l_pipeline.definitions",
        "--select",
        "raw_dataset,eval_sets",
        "--config-json",
        json.dumps(config),
    ]


def run_size(
    rows: int, work: Path, config: str | None, keep: bool = False, kill_after: float | None = None
) -> dict:
    data = make_file(rows, work)
    home = work / f"home_{rows}"
    if not keep:
        shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "config.yaml").write_text(config or "")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "S2L_PROFILE": "default",
        "S2L_ARTIFACT_ROOT": str(home / "art"),
        "S2L_DATA_DIR": str(home / "data"),
    }
    s2l = str(Path(sys.executable).parent / "s2l")
    cmd = [s2l, "run", "--data", str(data), "--eval", str(EVAL)]
    cmd += ["--config", str(home / "config.yaml")]
    if config is None:
        cmd = data_only_command(data, home)
    start = time.time()
    with open(home / "stderr.log", "a" if keep else "w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True
        )
        sampler = RssSampler(proc.pid)
        sampler.start()
        try:
            out, _ = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:  # a kill -9 of the whole run, as a crash would
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        sampler.done.set()
    wall = time.time() - start
    killed = proc.returncode == -signal.SIGKILL
    if proc.returncode != 0 and not killed:
        tail = (home / "stderr.log").read_text()[-3000:]
        raise SystemExit(f"{rows} rows: s2l run failed ({proc.returncode}):\n{tail}")
    summary = json.loads(out.strip().splitlines()[-1]) if config and not killed else {}
    run_id = summary.get("run_id") or latest_run_id(home)
    return {
        "rows": rows,
        "wall_s": wall,
        "peak_rss": max(r for _, r in sampler.samples),
        "summary": summary,
        "killed": killed,
        "run_id": run_id,
        "steps": step_times(home, run_id, sampler),
    }


def latest_run_id(home: Path) -> str:
    import dagster as dg

    return dg.DagsterInstance.from_config(str(home)).get_runs(limit=1)[0].run_id


def step_times(home: Path, run_id: str, sampler: RssSampler) -> dict[str, dict]:
    """Seconds and peak RSS per op (a graph's mapped steps summed under one name); a step a
    kill cut short counts until its run's last event."""
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home))
    out: dict[str, dict] = {}
    last = None
    for s in instance.get_run_step_stats(run_id):
        if s.start_time is None:
            continue
        if s.end_time is None:
            last = last or instance.all_logs(run_id)[-1].timestamp
        end = s.end_time or last
        name = re.sub(r"\[.*\]$", "", s.step_key)
        entry = out.setdefault(name, {"seconds": 0.0, "peak_rss": 0, "steps": 0})
        entry["seconds"] += end - s.start_time
        entry["peak_rss"] = max(entry["peak_rss"], sampler.peak(s.start_time, end))
        entry["steps"] += 1
    return out


def all_parts(parts: list[dict]) -> dict:
    """One size's runs in a kept instance as one: times summed, the highest peaks."""
    steps: dict[str, dict] = {}
    for part in parts:
        for name, s in part["steps"].items():
            entry = steps.setdefault(name, {"seconds": 0.0, "peak_rss": 0, "steps": 0})
            entry["seconds"] += s["seconds"]
            entry["peak_rss"] = max(entry["peak_rss"], s["peak_rss"])
            entry["steps"] += s["steps"]
    return {
        "rows": parts[-1]["rows"],
        "wall_s": sum(p["wall_s"] for p in parts),
        "peak_rss": max(p["peak_rss"] for p in parts),
        "summary": parts[-1]["summary"],
        "killed": parts[-1]["killed"],
        "parts": len(parts),
        "steps": steps,
    }


def report(results: list[dict]) -> str:
    base = results[0]
    names = sorted(
        {n for r in results for n in r["steps"]},
        key=lambda n: -max(r["steps"].get(n, {}).get("seconds", 0) for r in results),
    )
    sizes = " | ".join(f"{r['rows']:,} rows: s / ms per 1K / growth / peak MiB" for r in results)
    lines = [f"| step | {sizes} |", "|---|" + "---|" * len(results)]
    for n in names:
        cells = []
        b = base["steps"].get(n)
        for r in results:
            s = r["steps"].get(n)
            if s is None:
                cells.append("-")
                continue
            per = s["seconds"] / r["rows"] * 1e6
            growth = (
                per / (b["seconds"] / base["rows"] * 1e6) if b and b["seconds"] else float("nan")
            )
            cells.append(
                f"{s['seconds']:.1f} / {per:.2f} / {growth:.2f}x / {s['peak_rss'] / 2**20:.0f}"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    walls = " | ".join(
        f"{r['wall_s']:.0f} s / {r['wall_s'] / r['rows'] * 1e6:.2f} / "
        f"{(r['wall_s'] / r['rows']) / (base['wall_s'] / base['rows']):.2f}x / "
        f"{r['peak_rss'] / 2**20:.0f}"
        for r in results
    )
    lines.append(f"| **whole run** | {walls} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000,100000,262144")
    p.add_argument("--work", default="/tmp/s2l_scale")
    p.add_argument("--short", action="store_true", help="a fifth of an epoch, 2 checkpoints")
    p.add_argument("--data-only", action="store_true", help="raw_dataset, eval_sets, checks")
    p.add_argument(
        "--epochs",
        type=float,
        help="like --short with this many epochs: a memory check at a size already timed",
    )
    p.add_argument("--keep", action="store_true", help="resume in the size's earlier instance")
    p.add_argument("--kill-after", type=float, help="SIGKILL the run after this many seconds")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    short = SHORT.replace("epochs: 0.2", f"epochs: {args.epochs}") if args.epochs else SHORT
    name = "data_only" if args.data_only else "short" if args.short else "full"
    name = f"epochs_{args.epochs}" if args.epochs else name
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        config = None if args.data_only else short if args.short or args.epochs else FULL
        parts_file = work / f"scale_curve_{name}_{rows}_parts.json"
        parts = json.loads(parts_file.read_text()) if args.keep and parts_file.exists() else []
        part = run_size(rows, work, config, args.keep, args.kill_after)
        parts.append(part)
        parts_file.write_text(json.dumps(parts, indent=1))
        for i, q in enumerate(parts, 1):
            end = "killed" if q["killed"] else "finished"
            print(f"{rows:,} rows, part {i}: {q['wall_s']:.0f} s, {end}", flush=True)
        result = all_parts(parts) if len(parts) > 1 else part
        results.append(result)
        (work / f"scale_curve_{name}.json").write_text(json.dumps(results, indent=1))
        print(
            f"{rows:,} rows: {result['wall_s']:.0f} s, peak RSS "
            f"{result['peak_rss'] / 2**30:.2f} GiB",
            flush=True,
        )
    print(report(results))


if __name__ == "__main__":
    main()
