"""docs/results.md's generated part, from the product's own reports of the published study.

    python benchmarks/studies/selection_study/prepare.py --check   # data and base, as committed
    python benchmarks/studies/selection_study/convert.py           # the committed records
    python benchmarks/studies/selection_study/publish.py           # s2l study per spec; the page

Each spec (both pools, the 10% arms and the 20% arms) is run by `s2l study --spec` in its pool's
folder, where convert.py left the committed records: every cell is reused, none trained. The
reports it writes go, headings demoted, between the page's markers.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from convert import HERE, ROOT, SPECS, s2l_study

PAGE = ROOT / "docs" / "results.md"
START = "<!-- study:start (benchmarks/studies/selection_study/publish.py rewrites this part) -->"
END = "<!-- study:end -->"
TITLES = {"balanced.yaml": "Balanced pool, 10%", "balanced_20.yaml": "Balanced pool, 20%",
          "imbalanced.yaml": "Imbalanced pool, 10%",
          "imbalanced_20.yaml": "Imbalanced pool, 20%"}  # fmt: skip


def demoted(report: str, title: str) -> str:
    """The product's report under a heading of the page: '#' becomes '###'."""
    body = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", report, flags=re.M)
    first, _, rest = body.partition("\n")
    return f"### {title} ({first.removeprefix('### ')})\n{rest}"


def generated(home: Path) -> tuple[str, list[dict]]:
    parts, summaries = [], []
    for pool, specs in SPECS.items():
        for name in specs:
            summary = s2l_study(HERE / name, home / pool)
            if summary["cells_run"]:
                raise SystemExit(f"{name}: {summary['cells_run']} cells trained; the published "
                                 "study reuses every record (run convert.py first)")  # fmt: skip
            summaries.append({"spec": name, **summary})
            parts.append(demoted(Path(summary["report"]).read_text().strip(), TITLES[name]))
    return "\n\n".join(parts), summaries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--home", type=Path, default=ROOT / "data" / "benchmarks" / "selection_study")
    args = p.parse_args(argv)
    text, summaries = generated(args.home)
    page = PAGE.read_text()
    head, found, rest = page.partition(START)
    if not found or END not in rest:
        raise SystemExit(f"{PAGE}: no {START} ... {END} markers")
    PAGE.write_text(f"{head}{START}\n\n{text}\n\n{END}{rest.split(END, 1)[1]}")
    for s in summaries:
        print(f"{s['spec']}: {s['cells']} cells, spec {s['spec_id']}, report {s['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
