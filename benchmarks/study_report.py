"""The selection study's page (docs/results.md) from its committed results and meta file.

Only the part between the generated markers is rewritten; the summary and caveats around it
are written by hand from it (a test holds the summary's numbers to the generated part).
Every comparison is paired by seed, the unit of replication: per-seed differences, t intervals
on seeds - 1 degrees of freedom, exact sign-flip p-values, Holm across all selector-versus-
random comparisons of the page; the item-and-seed bootstrap is the second view.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2l_pipeline.core.evaluation.endpoints import primary_endpoint
from s2l_pipeline.core.evaluation.stats import (
    holm,
    paired_bootstrap,
    per_seed_difference,
    unpack_correct,
)

START = "<!-- study:start (benchmarks/study_report.py rewrites this part) -->"
END = "<!-- study:end -->"
PLOT = "results_study_differences.png"
BASELINE = "random"
COLLAPSE_SHARE = 0.5  # a cell whose commonest in-domain answer is this share or more
ARM_NOTES = {
    "random": "uniform over the pool",
    "stratified_random": "the paper's split over sources, uniform inside, no trajectories",
    "s2l": "S2L with our settings, K = 100 over the whole pool",
    "s2l_paper": "S2L as the paper runs it, per source, K = 100",
    "learning_percentage": (
        "the hardest rows inside each MiniLM cluster (training order is shuffled, as for every arm)"
    ),
    "embedding_cluster_random": "learning percentage's MiniLM clusters, random inside",
}


def load(results_path: Path, meta_path: Path) -> tuple[list[dict], dict]:
    results = [json.loads(x) for x in results_path.read_text().splitlines() if x.strip()]
    return results, json.loads(meta_path.read_text())


def cells(results: list[dict], **match) -> list[dict]:
    return [r for r in results if all(r["cell"].get(k) == v for k, v in match.items())]


def primary(result: dict) -> float:
    """In-domain accuracy without the collapse answers, each family weighing the same."""
    return primary_endpoint(result["off_mode"])


def floor(result: dict) -> float:
    """The best primary endpoint one answer per family can reach on the scored test items
    (an upper bound on any one-answer-per-family model)."""
    return float(np.mean([s["floor"] for s in result["off_mode"].values()]))


def current(results: list[dict], meta: dict) -> list[dict]:
    """The test cells trained with each pool's chosen settings (earlier choices' cells stay in
    the results file, counted on the page as superseded)."""
    sc, chosen = meta["scale"], meta.get("chosen", {})
    fixed = {
        "judge": "test",
        "variant": "study",
        "target": "pretrained",
        "proxy": sc["proxy"]["size"],
        "batch": sc["batch_size"],
        "clusters": sc["clusters"],
    }

    def settings_now(c: dict) -> bool:
        pick = chosen.get(c["mixture"], {})
        return (c["lr"], c["epochs"]) == (pick.get("lr"), pick.get("epochs"))

    return [
        r
        for r in results
        if all(r["cell"].get(k) == v for k, v in fixed.items()) and settings_now(r["cell"])
    ]


def by_seed(results: list[dict], pool: str, method: str, budget: float) -> dict[int, dict]:
    found = cells(results, mixture=pool, method=method, budget=budget, judge="test")
    out = {r["cell"]["seed"]: r for r in found}
    if len(out) != len(found):
        raise ValueError(f"{pool}/{method}/{budget:g}: two cells of one seed; filter first")
    return out


def item_scores(result: dict, masks: dict[str, str]) -> np.ndarray:
    """The primary endpoint's items of one cell, each weighted so that their plain mean is the
    mean over families of each family's accuracy (the bootstrap resamples these)."""
    parts, sizes = [], []
    for name, mask in sorted(masks.items()):
        keep = unpack_correct(mask).astype(bool)
        parts.append(unpack_correct(result["correct"][f"in_domain/{name}"])[keep].astype(float))
        sizes.append(int(keep.sum()))
    total = sum(sizes)
    return np.concatenate([p * total / (len(parts) * n) for p, n in zip(parts, sizes, strict=True)])


def paired_primary(arm: dict[int, dict], ref: dict[int, dict]):
    """(seeds, arm's and ref's primary endpoint in points, their per-seed difference) over the
    seeds both ran; None under two seeds."""
    seeds = sorted(set(arm) & set(ref))
    if len(seeds) < 2:
        return None
    a = np.array([primary(arm[s]) for s in seeds]) * 100
    b = np.array([primary(ref[s]) for s in seeds]) * 100
    return seeds, a, b, per_seed_difference(a, b)


def budgets_of(results: list[dict], pool: str) -> list[float]:
    """The subset budgets a pool's cells ran, full data left out."""
    return sorted({r["cell"]["budget"] for r in cells(results, mixture=pool)} - {1.0})


@dataclass(frozen=True)
class Comparison:
    """One selector against random on one pool and budget, paired by seed."""

    pool: str
    method: str
    budget: float
    seeds: list[int]
    mean: float  # primary endpoint, points
    baseline: float
    t: object  # SeedDifference, points
    nll: object  # SeedDifference of in-domain NLL (arm - random)
    boot: object  # PairedDifference over seeds and items, points
    p_holm: float = 1.0


def compare(results: list[dict], meta: dict, pool: str, method: str, budget: float):
    arm, base = by_seed(results, pool, method, budget), by_seed(results, pool, BASELINE, budget)
    if (found := paired_primary(arm, base)) is None:
        return None
    seeds, a, b, t = found
    nll_a = np.array([arm[s]["metrics"]["in_domain_mean_nll"] for s in seeds])
    nll_b = np.array([base[s]["metrics"]["in_domain_mean_nll"] for s in seeds])
    masks = meta["data"]["masks"][pool]
    items_a = np.stack([item_scores(arm[s], masks) for s in seeds]) * 100
    items_b = np.stack([item_scores(base[s], masks) for s in seeds]) * 100
    return Comparison(
        pool,
        method,
        budget,
        seeds,
        float(a.mean()),
        float(b.mean()),
        t,
        per_seed_difference(nll_a, nll_b),
        paired_bootstrap(items_a, items_b, resamples=2000),
    )


def comparisons(results: list[dict], meta: dict) -> list[Comparison]:
    """Every selector against random at every budget both ran, Holm-adjusted together."""
    scale = meta["scale"]
    found = []
    for pool, _ in scale["pools"]:
        budgets = sorted(
            {r["cell"]["budget"] for r in cells(results, mixture=pool, judge="test")} - {1.0}
        )
        for budget in budgets:
            for method in scale["arms"]:
                if method != BASELINE and (c := compare(results, meta, pool, method, budget)):
                    found.append(c)
    adjusted: dict[str, float] = {}
    for budget in {c.budget for c in found}:  # one family per budget: its seeds differ
        at = [c for c in found if c.budget == budget]
        adjusted |= holm({_label(c): c.t.p_sign_flip for c in at})
    return [_with(c, p_holm=adjusted[_label(c)]) for c in found]


def split_table(results: list[dict], meta: dict) -> str:
    """What trajectories add once the budget is split over sources: each S2L form minus
    stratified random (the same split, uniform inside), paired by seed; and how many rows of
    each family the arms train on, since the split itself changes the mix."""
    scale, lines = meta["scale"], []
    for pool, _ in scale["pools"]:
        for budget in budgets_of(results, pool):
            ref = by_seed(results, pool, "stratified_random", budget)
            for method in ("s2l_paper", "s2l"):
                found = paired_primary(by_seed(results, pool, method, budget), ref)
                if found is None:
                    continue
                seeds, _, _, d = found
                lines.append(
                    f"| {pool} | {100 * budget:g}% | {method} | {len(seeds)} | {_ci(d)} "
                    f"| {d.p_sign_flip:.3f} |\n"
                )
    mix = []
    for pool, _ in scale["pools"]:
        for budget in budgets_of(results, pool):
            for method in scale["arms"]:
                arm = by_seed(results, pool, method, budget)
                if not arm:
                    continue
                rows = {
                    f: np.mean([r["composition"].get(f, 0) for r in arm.values()])
                    for f in scale["families"]
                }
                counts = ", ".join(f"{f} {v:.0f}" for f, v in rows.items())
                mix.append(f"| {pool} | {100 * budget:g}% | {method} | {counts} |\n")
    return (
        "| pool | budget | S2L form | seeds | minus stratified random, points [95% t] "
        "| sign-flip p |\n|---|---|---|---|---|---|\n"
        + "".join(lines)
        + "\nRows per family in the subsets (mean over seeds):\n\n"
        "| pool | budget | selector | rows per family |\n|---|---|---|---|\n" + "".join(mix)
    )


def _label(c: Comparison) -> str:
    return f"{c.pool}/{c.method}/{c.budget:g}"


def _with(c: Comparison, **kw) -> Comparison:
    from dataclasses import replace

    return replace(c, **kw)


def _ci(d) -> str:
    return f"{d.difference:+.1f} [{d.low:+.1f}, {d.high:+.1f}]"


def comparison_table(found: list[Comparison], pool: str, budget: float) -> str:
    rows = [c for c in found if c.pool == pool and c.budget == budget]
    if not rows:
        return ""
    head = (
        "| selector | seeds | primary, % | minus random, points [95% t] | sign-flip p | Holm p "
        "| detectable | bootstrap [95%] | NLL minus random [95% t] |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    base = rows[0].baseline
    lines = [f"| random | {len(rows[0].seeds)} | {base:.1f} | | | | | | |\n"]
    for c in rows:
        nll = f"{c.nll.difference:+.3f} [{c.nll.low:+.3f}, {c.nll.high:+.3f}]"
        boot = f"[{c.boot.low:+.1f}, {c.boot.high:+.1f}]"
        lines.append(
            f"| {c.method} | {len(c.seeds)} | {c.mean:.1f} | {_ci(c.t)} | {c.t.p_sign_flip:.3f} "
            f"| {c.p_holm:.3f} | {c.t.minimum_detectable:.1f} | {boot} | {nll} |\n"
        )
    return head + "".join(lines)


def family_table(results: list[dict], meta: dict, pool: str, budget: float) -> str:
    """Each arm's off-mode accuracy per family (mean over seeds) beside the family's floor:
    where a difference comes from, and whether it only reaches what one answer would."""
    scale = meta["scale"]
    families = scale["families"]
    lines = []
    for method in scale["arms"]:
        found = list(by_seed(results, pool, method, budget).values())
        if not found:
            continue
        means = [100 * np.mean([r["off_mode"][f]["accuracy"] for r in found]) for f in families]
        lines.append(f"| {method} | " + " | ".join(f"{m:.1f}" for m in means) + " |\n")
    if not lines:
        return ""
    some = next(iter(by_seed(results, pool, BASELINE, budget).values()), None)
    if some:
        floors = [100 * some["off_mode"][f]["floor"] for f in families]
        lines.append(
            "| *floor: one answer per family* | " + " | ".join(f"{x:.1f}" for x in floors) + " |\n"
        )
    head = "| selector | " + " | ".join(families) + " |\n|---|" + "---|" * len(families) + "\n"
    return head + "".join(lines)


def full_table(results: list[dict], meta: dict) -> str:
    """Full data against random at the main budget, paired by the seeds both ran."""
    scale, lines = meta["scale"], []
    for pool, _ in scale["pools"]:
        full = by_seed(results, pool, "full", 1.0)
        found = paired_primary(full, by_seed(results, pool, BASELINE, scale["budget"]))
        if found is None:
            continue
        seeds, a, b, d = found
        lines.append(
            f"| {pool} | {len(seeds)} | {a.mean():.1f} | {b.mean():.1f} | {_ci(d)} "
            f"| {d.p_sign_flip:.3f} |\n"
        )
    if not lines:
        return "No full-data cells yet.\n"
    pct = f"{100 * scale['budget']:g}%"
    return (
        f"| pool | seeds | full data, % | random {pct}, % | full minus random [95% t] | "
        "sign-flip p |\n|---|---|---|---|---|---|\n" + "".join(lines)
    )


def collapsed(results: list[dict]) -> list[tuple[str, str, str, float]]:
    """(cell, family, its commonest answer, share) wherever a test cell gives one answer to
    COLLAPSE_SHARE or more of a family's items."""
    out = []
    for r in results:
        if r["cell"]["judge"] != "test":
            continue
        for name, top in r.get("top_prediction_by_set", {}).items():
            if top["share"] >= COLLAPSE_SHARE:
                out.append((r["key"], name, top["prediction"], top["share"]))
    return sorted(out)


def collapse_section(results: list[dict]) -> str:
    found = collapsed(results)
    tested = len([r for r in results if r["cell"]["judge"] == "test"])
    cells_hit = len({k for k, *_ in found})
    head = (
        f"{cells_hit} of {tested} test cells give one answer to at least {COLLAPSE_SHARE:.0%} "
        "of a family's in-domain items"
    )
    if not found:
        return head + ".\n"
    counts: dict[tuple[str, str, str], int] = {}
    for key, name, answer, _ in found:
        pool, _, method, budget = key.split("/")[:4]
        group = (f"{pool}/{method}/{budget}", name, answer)
        counts[group] = counts.get(group, 0) + 1
    lines = "".join(f"| {c} | {n} | `{a}` | {k} |\n" for (c, n, a), k in sorted(counts.items()))
    return (
        head + ":\n\n| pool/method/budget | family | answer | cells (seeds) |\n"
        "|---|---|---|---|\n" + lines
    )


def premise_table(meta: dict) -> str:
    lines = []
    for pool, by_clustering in meta.get("premise", {}).items():
        for name, r in by_clustering.items():
            vals = [
                r["within_cluster_cosine"],
                r["random_pair_cosine"],
                r.get("same_source_cosine"),
                r.get("same_answer_cosine"),
                r.get("within_cluster_other_answer_cosine"),
                r.get("silhouette"),
            ]
            cells_ = " | ".join("-" if v is None else f"{v:.3f}" for v in vals)
            lines.append(f"| {pool} | {name} (K = {r['clusters']}) | {cells_} |\n")
    return (
        "| pool | clustering | within a cluster | random pairs | one source | one answer "
        "| one cluster, two answers | silhouette |\n|---|---|---|---|---|---|---|---|\n"
        + "".join(lines)
    )


def data_table(meta: dict) -> str:
    lines = []
    for pool, d in meta["data"]["pools"].items():
        rows = ", ".join(f"{k} {v}" for k, v in d["rows"].items())
        modes = ", ".join(f"{k} {'/'.join(v)}" for k, v in d["modes"].items())
        shares = ", ".join(
            f"{k} {100 * d['mode_share_pool'][k]:.0f}/{100 * d['mode_share_test'][k]:.0f}"
            for k in d["modes"]
        )
        shared = d["rows_shared_with_test_or_validation"]
        lines.append(f"| {pool} | {rows} | {modes} | {shares} | {shared} |\n")
    return (
        "| pool | rows per family | collapse answers | their share, pool/test % | rows also in "
        "test or validation |\n|---|---|---|---|---|\n" + "".join(lines)
    )


def tuning_table(results: list[dict], meta: dict) -> str:
    lines = []
    for r in sorted(
        (r for r in results if r["cell"]["judge"] == "validation"),
        key=lambda r: (r["cell"]["mixture"], r["cell"]["lr"], r["cell"]["epochs"]),
    ):
        c, m = r["cell"], r["metrics"]
        chosen = meta.get("chosen", {}).get(c["mixture"], {})
        mark = (
            " (chosen)"
            if (chosen.get("lr"), chosen.get("epochs")) == (c["lr"], c["epochs"])
            else ""
        )
        lines.append(
            f"| {c['mixture']} | {c['lr']:g} | {c['epochs']:g}{mark} | "
            f"{m['in_domain_mean_nll']:.3f} | {100 * m['in_domain_accuracy']:.1f} "
            f"| {100 * primary(r):.1f} |\n"
        )
    return (
        "| pool | learning rate | epochs | validation NLL | validation accuracy, % "
        "| validation primary, % |\n|---|---|---|---|---|---|\n" + "".join(lines)
    )


def base_line(meta: dict) -> str:
    b = meta["base"]
    zero = {
        pool: 100 * float(np.mean([s["accuracy"] for s in sets.values()]))
        for pool, sets in b["test_off_mode"].items()
    }
    top = b["top_prediction"]
    return (
        f"The base: a {b['n_parameters']:,}-parameter GPT-NeoX pretrained for {b['train_steps']} "
        f"steps on {b['rows']:,} rows of {len(b['families'])} families the study never uses "
        f"({', '.join(b['families'])}); zero-shot on the primary endpoint "
        + ", ".join(f"{p} {v:.1f}%" for p, v in zero.items())
        + f" (its commonest answer `{top['prediction']}` on {top['share']:.0%} of the items).\n"
    )


def plot(found: list[Comparison], results: list[dict], meta: dict, path: Path) -> None:
    """Each selector minus random with its per-seed t interval, a panel per pool; zero and the
    floor (the best one-answer-per-family model) minus random marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pools = [p for p, _ in meta["scale"]["pools"]]
    budget = meta["scale"]["budget"]
    fig, axes = plt.subplots(1, len(pools), figsize=(6 * len(pools), 3.8), sharex=True)
    for ax, pool in zip(np.atleast_1d(axes), pools, strict=True):
        rows = [c for c in found if c.pool == pool and c.budget == budget]
        for y, c in enumerate(rows):
            ax.errorbar(
                c.t.difference,
                y,
                xerr=[[c.t.difference - c.t.low], [c.t.high - c.t.difference]],
                fmt="o",
                color="black",
                capsize=4,
            )
            ax.scatter(c.t.per_seed, [y + 0.18] * len(c.t.per_seed), s=8, color="gray")
        ax.axvline(0, color="black", lw=0.8)
        base = list(by_seed(results, pool, BASELINE, budget).values())
        title = f"{pool} pool, {100 * budget:g}% budget"
        if base and rows:
            gap = 100 * (np.mean([floor(r) for r in base]) - np.mean([primary(r) for r in base]))
            ax.axvline(gap, color="red", ls="--", lw=1)
            title += f"\nred: floor minus random, {gap:+.1f} points"
        ax.set_yticks(range(len(rows)), [c.method for c in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("primary endpoint minus random, points")
    fig.suptitle(
        "Each selector minus random, paired by seed: mean and 95% t interval (grey: each seed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def generated(results: list[dict], meta: dict, image: str) -> str:
    scale = meta["scale"]
    found = comparisons(results, meta)
    cpu = sum(r.get("cpu_seconds", 0) for r in results) / 3600
    wall = sum(s["wall_seconds"] for s in meta.get("sittings", [])) / 3600
    chosen = ", ".join(
        f"{p}: learning rate {v['lr']:g}, {v['epochs']:g} epochs" for p, v in meta["chosen"].items()
    )
    parts = [
        START,
        "",
        "### Design as run",
        "",
        f"- Families {', '.join(scale['families'])}; one draw per family (seed "
        f"{scale['draw_seed']}), deduplicated by problem, split at random into "
        f"{scale['test_per_family']} test, {scale['val_per_family']} validation and the pools "
        f"({scale['pool_size']:,} rows each).",
        f"- Arms at {100 * scale['budget']:g}%: "
        + "; ".join(f"`{a}`: {ARM_NOTES.get(a, '')}" for a in scale["arms"])
        + ".",
        "- " + base_line(meta).strip(),
        f"- Chosen on validation (best primary endpoint of a random {100 * scale['budget']:g}%, "
        f"seed 0; ties by NLL): {chosen}.",
        f"- {len(results)} cells so far, {cpu:.1f} CPU hours in cells, {wall:.1f} wall hours "
        f"over {len(meta.get('sittings', []))} sittings; {meta.get('superseded', 0)} test cells "
        "of an earlier choice of settings are kept in the results file and left out here.",
        "",
        "### The data",
        "",
        data_table(meta),
        "### Selectors against random (primary endpoint, paired by seed)",
        "",
        "Primary endpoint: in-domain accuracy on the items whose answer is neither the pool's "
        "commonest nor its family's, each family weighing the same. Differences in points; "
        "'detectable' is the smallest difference these seeds detect (two-sided 5%, power 0.8) "
        "from the per-seed SD; Holm adjusts across the selector-versus-random comparisons of "
        "one budget, both pools together.",
        "",
    ]
    for pool, _ in scale["pools"]:
        for budget in sorted({c.budget for c in found if c.pool == pool}):
            parts += [
                f"#### {pool} pool, {100 * budget:g}%",
                "",
                comparison_table(found, pool, budget),
                "Per family (off-mode accuracy, %, mean over seeds):",
                "",
                family_table(results, meta, pool, budget),
            ]
    parts += [
        f"![each selector minus random, by pool]({image})",
        "",
        "### What the trajectories add beyond the split over sources",
        "",
        split_table(results, meta),
        "",
        "### Full data against random",
        "",
        full_table(results, meta),
        "### Collapsed cells",
        "",
        collapse_section(results),
        "### Does the premise hold, beyond source and answer?",
        "",
        "Gradient cosine of the proxy's last checkpoint (CountSketch to 2,048 numbers): pairs "
        "inside one trajectory cluster against random pairs, pairs of one source, pairs of one "
        "answer, and pairs inside one cluster whose answers differ.",
        "",
        premise_table(meta),
        "### Tuning (validation split only)",
        "",
        tuning_table(results, meta),
        END,
    ]
    return "\n".join(parts)


def write_study_report(results_path: Path, meta_path: Path, report: Path) -> None:
    everything, meta = load(results_path, meta_path)
    tuning = [r for r in everything if r["cell"]["judge"] == "validation"]
    results = tuning + current(everything, meta)
    meta = {**meta, "superseded": len(everything) - len(results)}
    report.parent.mkdir(parents=True, exist_ok=True)
    image = report.with_name(PLOT if report.name == "results.md" else report.stem + ".png")
    found = comparisons(results, meta)
    plot(found, results, meta, image)
    body = generated(results, meta, image.name)
    old = report.read_text() if report.exists() else f"# The selection study\n\n{START}\n{END}\n"
    if START in old and END in old:
        before, rest = old.split(START, 1)
        report.write_text(before + body + rest.split(END, 1)[1])
    else:
        report.write_text(old.rstrip() + "\n\n" + body + "\n")
