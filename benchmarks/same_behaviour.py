"""Does a change leave the pipeline's results alone? Run `s2l run` from fresh instances at two
revisions and compare what they made.

    python benchmarks/same_behaviour.py run REV OUT [--profiles tiny default]
    python benchmarks/same_behaviour.py compare OUT_A OUT_B

``run`` checks REV out into a temporary worktree and runs ``s2l run --profile P`` for each
profile with its own DAGSTER_HOME, artifact root and MLflow store under OUT/P, importing the
package from that worktree (this checkout's virtual environment supplies the dependencies).
``compare`` sets the two runs side by side: the summary line `s2l run` prints (subset hash,
every headline metric), and every content-addressed artifact (checkpoint folders by training
fingerprint, trajectory units, tables by content hash) with the safetensors' own sha256. It
prints one row per profile and exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Named by the run that made them (Dagster run ids, MLflow run ids), not by what they hold:
# left out. Everything else in the store is named by content or training fingerprint.
SKIP = ("_manifests", "_ops", "mlflow", "work")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def run(rev: str, out: Path, profiles: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-f", "--detach", str(tree), rev], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
        try:
            for profile in profiles:
                home = out / profile
                home.mkdir(parents=True, exist_ok=True)
                env = {
                    **os.environ,
                    "PYTHONPATH": str(tree),
                    "DAGSTER_HOME": str(home),
                    "S2L_ARTIFACT_ROOT": str(home / "artifacts"),
                    "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
                }
                cmd = [sys.executable, "-m", "s2l_pipeline.cli", "run", "--profile", profile]
                with (home / "run.log").open("w") as log:
                    rc = subprocess.run(cmd, cwd=home, env=env, stdout=log, stderr=log).returncode
                print(f"{rev} {profile}: rc {rc}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip


def summary(home: Path) -> dict:
    """The JSON line `s2l run` ends with, less what names the run rather than its results."""
    lines = [ln for ln in (home / "run.log").read_text().splitlines() if ln.startswith('{"run_id"')]
    if not lines:
        raise SystemExit(f"{home}/run.log: no summary line (did the run finish?)")
    out = json.loads(lines[-1])
    for key in ("run_id", "failed_checks"):
        out.pop(key, None)
    out["subset"] = Path(out["subset"]).parent.name  # the subset's content hash
    return out


def artifacts(home: Path) -> dict[str, str]:
    """Every stored file by its path under the artifact root, with its bytes' sha256; the
    root's own path inside a file (a manifest's uris) reads as '<root>', since the two runs
    store under two folders."""
    root = home / "artifacts"
    found = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        top = rel.split("/")[0]
        if not p.is_file() or top in SKIP or RUN_ID.match(top):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = data.replace(str(root.resolve()).encode(), b"<root>")
        found[rel] = hashlib.sha256(data).hexdigest()
    return found


def compare(a: Path, b: Path) -> int:
    profiles = sorted(p.name for p in a.iterdir() if (p / "run.log").exists())
    print("| profile | subset | headline metrics | artifacts | same bytes (weights) |")
    print("|---|---|---|---|---|")
    differ = False
    for profile in profiles:
        sa, sb = summary(a / profile), summary(b / profile)
        fa, fb = artifacts(a / profile), artifacts(b / profile)
        metrics = [k for k in sorted(set(sa) | set(sb)) if k != "subset"]
        moved = [k for k in metrics if sa.get(k) != sb.get(k)]
        paths = sorted(set(fa) ^ set(fb))
        weights = [k for k in fa if k.endswith(".safetensors")]
        changed = [k for k in fa if k in fb and fa[k] != fb[k]]
        changed_weights = [k for k in changed if k.endswith(".safetensors")]
        same_subset = sa["subset"] == sb["subset"]
        print(
            f"| {profile} | {sa['subset']} {'=' if same_subset else '!= ' + sb['subset']} | "
            f"{len(metrics) - len(moved)} of {len(metrics)} equal{': ' + ', '.join(moved) if moved else ''} | "  # noqa: E501
            f"{len(fa)} vs {len(fb)} files, {len(paths)} not in both | "
            f"{len(fa) - len(changed)} of {len(fa)} files "
            f"({len(weights) - len(changed_weights)} of {len(weights)} weights) |"
        )
        for k in moved:
            print(f"  {k}: {sa.get(k)} -> {sb.get(k)}")
        for k in changed[:10]:
            print(f"  other bytes: {k}")
        for k in paths[:10]:
            print(f"  only in {'A' if k in fa else 'B'}: {k}")
        differ |= bool(moved or paths or changed or not same_subset)
    print("DIFFERENT" if differ else "IDENTICAL")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("rev")
    r.add_argument("out", type=Path)
    r.add_argument("--profiles", nargs="+", default=["tiny", "default"])
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args(argv)
    if args.command == "run":
        run(args.rev, args.out.resolve(), args.profiles)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
