"""A data-efficiency run's page (docs/results_learns.md): tables over seeds, plot, claims.

Only the part between the generated markers is rewritten; the discussion around it is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from s2l_pipeline.core.evaluation.stats import paired_bootstrap, unpack_correct

START = "<!-- generated:start (benchmarks/data_efficiency.py rewrites this part) -->"
END = "<!-- generated:end -->"
PLOT = "results_accuracy_vs_budget.png"
# The methods the benchmark compares, in the order the report lists them.
METHODS = (
    "s2l",
    "s2l_paper",
    "random",
    "learning_percentage",
    "least_confidence",
    "middle_perplexity",
    "cartography",
    "facility_location",
)
METRICS = (
    ("in_domain_accuracy", "in-domain accuracy", 100.0),
    ("out_of_domain_accuracy", "out-of-domain accuracy", 100.0),
    ("in_domain_mean_nll", "in-domain response NLL (lower is better)", 1.0),
    ("out_of_domain_mean_nll", "out-of-domain response NLL (lower is better)", 1.0),
)
PAPER_CLAIMS = (
    (
        "S2L matches full-data accuracy with 11% of MathInstruct",
        "262K examples, Pythia-160M proxy, Pythia-410M / Phi-2 targets, 3 epochs",
        "the 10% column against the full-data line",
    ),
    (
        "S2L beats the other selectors at equal budget (+4.7% average over 6 math sets)",
        "30K-100K examples",
        "the S2L rows against the baselines; the paired S2L - random table",
    ),
    (
        "50% of MIMIC-III radiology beats the full set",
        "clinical summarization, ROUGE",
        "not run here (no clinical data on this machine)",
    ),
    (
        "a proxy far smaller than the target works as well",
        "Pythia-70M/160M proxies for 410M-2.8B targets",
        "the proxy-size ablation",
    ),
)
PAPER = "| claim in the S2L paper (Yang et al., 2024) | their setting | where to look here |\n"
PAPER += "|---|---|---|\n" + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in PAPER_CLAIMS)


def _mean_std(values: list[float], scale: float) -> str:
    if not values:
        return "-"
    a = np.asarray(values, dtype=float) * scale
    digits = 2 if scale > 1 else 4
    std = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():.{digits}f} +- {std:.{digits}f}"


def _matching(results: list[dict], **match) -> list[dict]:
    """The results whose cell has every given field value."""
    return [r for r in results if all(r["cell"].get(k) == v for k, v in match.items())]


def _values(results: list[dict], metric: str, **match) -> list[float]:
    return [r["metrics"][metric] for r in _matching(results, **match) if metric in r["metrics"]]


def main_table(
    results: list[dict], budgets: list[float], methods: list[str], metric: str, scale: float
) -> str:
    head = "| method | " + " | ".join(f"{b:.0%}" for b in budgets) + " |\n"
    head += "|---|" + "---|" * len(budgets) + "\n"
    base = {"mixture": "embedded", "variant": "main", "judge": "test"}
    seeds = len({r["cell"]["seed"] for r in results if r["cell"]["judge"] == "test"})

    def stat(**match) -> str:
        """mean +- std, with the number of seeds where a cell has fewer than the run."""
        values = _values(results, metric, **base, **match)
        shown = _mean_std(values, scale)
        return shown if not values or len(values) == seeds else f"{shown} (n={len(values)})"

    rows = []
    for m in methods:
        rows.append(f"| {m} | " + " | ".join(stat(method=m, budget=b) for b in budgets) + " |")
    same = [stat(method="full_same_steps", budget=b) for b in budgets]
    if any(x != "-" for x in same):
        rows.append("| full data, same steps as the budget | " + " | ".join(same) + " |")
    full = stat(method="full")
    rows.append(
        f"| **full data (100%, all epochs)** | {full} (reference) |" + " |" * (len(budgets) - 1)
    )
    return head + "\n".join(rows) + "\n"


def paired_table(results: list[dict], budgets: list[float], metric: str, scale: float) -> str:
    """S2L minus random with the same seed: the noise of a seed cancels in the difference."""
    by = {}
    for r in results:
        c = r["cell"]
        if c["mixture"] == "embedded" and c["variant"] == "main" and c["judge"] == "test":
            by[(c["method"], c["budget"], c["seed"])] = r["metrics"].get(metric)
    lines = [
        "| budget | S2L - random, per seed | mean +- std | S2L ahead in |",
        "|---|---|---|---|",
    ]
    for b in budgets:
        diffs = [
            by[("s2l", b, s)] - by[("random", b, s)]
            for (m, bb, s) in sorted(by)
            if m == "s2l" and bb == b and ("random", b, s) in by
        ]
        if not diffs:
            continue
        sign = -1 if "nll" in metric else 1
        wins = sum(1 for d in diffs if sign * d > 0)
        shown = ", ".join(f"{d * scale:+.2f}" for d in diffs)
        lines.append(
            f"| {b:.0%} | {shown} | {_mean_std(diffs, scale)} | {wins} of {len(diffs)} seeds |"
        )
    return "\n".join(lines) + "\n"


def bootstrap_table(
    results: list[dict],
    budgets: list[float],
    domain: str = "in_domain",
    methods: tuple[str, ...] = ("s2l", "s2l_paper"),
    against: str = "random",
) -> str:
    """Each method - ``against`` (a method at the same budget, or ``full``) per budget: paired
    bootstrap 95% CI over test items and seeds, and the smallest difference this design
    detects (80% power). Needs per-item results."""
    by = {}
    for r in results:
        c = r["cell"]
        if c["mixture"] == "embedded" and c["variant"] == "main" and c["judge"] == "test":
            by[(c["method"], c["budget"], c["seed"])] = r.get("correct")
    lines = [
        f"| method | budget | - {against} (points) | 95% CI | smallest detectable "
        "| items x seeds |",
        "|---|---|---|---|---|---|",
    ]
    for method in methods:
        for b in budgets:
            ref = 1.0 if against == "full" else b
            seeds = sorted(
                s for (m, bb, s) in by if m == method and bb == b and by.get((against, ref, s))
            )
            if not seeds or not all(by[(method, b, s)] for s in seeds):
                continue
            names = sorted(n for n in by[(method, b, seeds[0])] if n.startswith(f"{domain}/"))

            def items(m: str, bb: float, names=names, seeds=seeds) -> np.ndarray:
                return np.stack(
                    [np.concatenate([unpack_correct(by[(m, bb, s)][n]) for n in names])
                     for s in seeds]
                )  # fmt: skip

            out = paired_bootstrap(items(method, b), items(against, ref))
            lines.append(
                f"| {method} | {b:.0%} | {out.difference * 100:+.2f} | [{out.low * 100:+.2f}, "
                f"{out.high * 100:+.2f}] | {out.minimum_detectable * 100:.2f} | "
                f"{out.items} x {out.seeds} |"
            )
    if len(lines) == 2:
        return "(no cell with per-item results yet: rerun the benchmark to fill this table)\n"
    return "\n".join(lines) + "\n"


def ablation_table(results: list[dict], budget: float) -> str:
    base = {"mixture": "embedded", "budget": budget, "judge": "test"}
    variants = sorted(
        {
            r["cell"]["variant"]
            for r in results
            if r["cell"]["mixture"] == "embedded"
            and r["cell"]["variant"] != "main"
            and r["cell"]["judge"] == "test"
        }
    )
    if not variants:
        return "No ablation in this run's plan.\n"
    lines = [
        f"| variant (S2L at {budget:.0%}) | in-domain acc | out-of-domain acc | in-domain NLL "
        "| out-of-domain NLL |",
        "|---|---|---|---|---|",
    ]
    rows = [
        (
            "S2L, main settings (K=100, all checkpoints, main proxy)",
            {"variant": "main", "method": "s2l"},
        )
    ]
    rows += [(f"S2L, {v}", {"variant": v, "method": "s2l"}) for v in variants]
    rows.append(("random (reference)", {"variant": "main", "method": "random"}))
    for name, match in rows:
        vals = [_mean_std(_values(results, m, **base, **match), s) for m, _, s in METRICS]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def gsm8k_table(results: list[dict]) -> str:
    part = [r for r in results if r["cell"]["mixture"] == "embedded+gsm8k"]
    if not part:
        return "Not in this run (its scale has no GSM8K mixture, or GSM8K was not found).\n"
    lines = [
        "| method | budget | seeds | GSM8K test NLL | in-domain NLL | in-domain acc |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["cell"]["method"], r["cell"]["budget"]) for r in part}, key=lambda k: (k[1], k[0])
    )
    for method, budget in keys:
        rs = [r for r in part if r["cell"]["method"] == method and r["cell"]["budget"] == budget]
        g = [
            r["per_set"].get("gsm8k_test.mean_nll")
            for r in rs
            if "gsm8k_test.mean_nll" in r["per_set"]
        ]
        ind = [
            r["metrics"]["in_domain_mean_nll"] for r in rs if "in_domain_mean_nll" in r["metrics"]
        ]
        acc = [
            r["metrics"]["in_domain_accuracy"] for r in rs if "in_domain_accuracy" in r["metrics"]
        ]
        stats = " | ".join((_mean_std(g, 1), _mean_std(ind, 1), _mean_std(acc, 100)))
        lines.append(f"| {method} | {budget:.0%} | {len(rs)} | {stats} |")
    return "\n".join(lines) + "\n"


def tuning_table(results: list[dict], lr: float | None) -> str:
    rs = sorted(
        (r for r in results if r["cell"]["judge"] == "validation"), key=lambda r: r["cell"]["lr"]
    )
    lines = [
        "| learning rate | validation accuracy | validation NLL | chosen |",
        "|---|---|---|---|",
    ]
    for r in rs:
        m = r["metrics"]
        chosen = "yes" if lr is not None and r["cell"]["lr"] == lr else ""
        acc = 100 * m.get("in_domain_accuracy", 0)
        lines.append(f"| {r['cell']['lr']:g} | {acc:.2f} | {m['mean_nll']:.4f} | {chosen} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], budgets: list[float], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = {"mixture": "embedded", "variant": "main", "judge": "test"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4.2))
    for ax, (metric, label, scale) in zip(axes, METRICS, strict=True):
        for m in methods:
            means, stds, xs = [], [], []
            for b in budgets:
                v = np.asarray(_values(results, metric, method=m, budget=b, **base)) * scale
                if len(v):
                    xs.append(100 * b)
                    means.append(v.mean())
                    stds.append(v.std(ddof=1) if len(v) > 1 else 0.0)
            if xs:
                style = {
                    "s2l": dict(lw=2.5, color="black"),
                    "s2l_paper": dict(lw=2.0, color="black", ls=":"),
                }.get(m, dict(lw=1.2))
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=m, **style)
        full = np.asarray(_values(results, metric, method="full", **base)) * scale
        if len(full):
            ax.axhline(full.mean(), ls="--", color="gray", label="full data")
        ax.set_xlabel("budget (% of training pool)")
        ax.set_title(label)
        ax.set_xticks([100 * b for b in budgets])
    axes[0].legend(fontsize=7)
    fig.suptitle("Target trained on each method's subset (mean +- std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _families(sc: dict) -> str:
    if not sc.get("families"):
        return "the 12 families of the embedded mixture"
    changed = "".join(f", {f}.{k}={v}" for f, k, v in sc.get("family_settings", ()))
    return (
        f"{len(sc['families'])} families, equally weighted ({', '.join(sc['families'])}{changed})"
    )


def compute_line(results: list[dict], meta: dict) -> str:
    """CPU time summed over every cell and proxy, and the sittings it took."""
    cpu = sum(r.get("cpu_seconds", 0.0) for r in results)
    cpu += sum(p.get("cpu_seconds", 0.0) for p in meta.get("proxies", {}).values())
    missing = sum(1 for r in results if "cpu_seconds" not in r)
    ttrain = sum(r["seconds"]["train"] for r in results)
    teval = sum(r["seconds"]["eval"] for r in results)
    sittings = meta.get("sittings", [])
    wall = sum(x["wall_seconds"] for x in sittings)
    where = f"{sittings[-1]['cpus']} cores, {sittings[-1]['workers']} workers" if sittings else ""
    return (
        f"Compute: **{cpu / 3600:.2f} h of CPU time** in total (proxies and every target cell"
        f"{f'; {missing} cells without a CPU figure' if missing else ''}); {ttrain / 60:.1f} min "
        f"of target training and {teval / 60:.1f} min of evaluation (wall, summed over cells); "
        f"{len(sittings)} sitting(s), {wall / 60:.1f} min of wall time ({where})."
    )


def composition_table(results: list[dict], budget: float, methods: list[str]) -> str:
    """Each selector's share of every family divided by the pool's share, averaged over seeds:
    above 1 over-samples the family, below 1 under-samples it."""
    base = {"mixture": "embedded", "variant": "main", "judge": "test"}
    pool = next((r.get("composition") for r in _matching(results, method="full", **base)), None)
    if not pool:
        return "(no composition recorded yet)\n"
    total = sum(pool.values())
    families = sorted(pool)
    lines = [
        f"| method at {budget:.0%} | " + " | ".join(families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for m in methods:
        rs = [
            r["composition"]
            for r in _matching(results, method=m, budget=budget, **base)
            if r.get("composition")
        ]
        if not rs:
            continue
        ratios = []
        for f in families:
            shares = [c.get(f, 0) / sum(c.values()) for c in rs]
            ratios.append(f"{np.mean(shares) / (pool[f] / total):.2f}")
        lines.append(f"| {m} | " + " | ".join(ratios) + " |")
    return "\n".join(lines) + "\n"


def family_table(results: list[dict], budget: float, methods: list[str]) -> str:
    """In-domain exact match per family (mean over seeds), so a gain can be traced to families."""
    base = {"mixture": "embedded", "variant": "main", "judge": "test"}
    sets = sorted(
        {
            name.split("/", 1)[1]
            for r in results
            for name in r.get("correct", {})
            if name.startswith("in_domain/")
        }
    )
    if not sets:
        return "(no per-family results yet)\n"
    lines = [
        "| method | " + " | ".join(sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    rows = [(f"{m} at {budget:.0%}", {"method": m, "budget": budget}) for m in methods]
    rows.append(("full data", {"method": "full"}))
    for name, match in rows:
        rs = _matching(results, **base, **match)
        if not rs:
            continue
        vals = [f"{100 * np.mean([r['per_set'][f'{x}.accuracy'] for r in rs]):.1f}" for x in sets]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def floor_line(meta: dict) -> str:
    f = meta.get("floor")
    if not f:
        return ""
    return (
        f"Floor: answering `{f['answer']}` (the pool's most common answer) to every problem "
        f"scores {100 * f.get('in_domain', 0):.2f}% in domain and "
        f"{100 * f.get('out_of_domain', 0):.2f}% out of domain; a target that has collapsed to "
        "one answer sits exactly there."
    )


def collapsed_line(results: list[dict], meta: dict) -> str:
    """Which trained targets sit exactly on the floor (one answer for everything)."""
    f = meta.get("floor")
    if not f:
        return ""
    hits = [
        f"{r['cell']['method']} {r['cell']['budget']:.0%} seed {r['cell']['seed']}"
        for r in results
        if r["cell"]["judge"] == "test"
        and abs(r["metrics"].get("in_domain_accuracy", -1) - f.get("in_domain", -2)) < 1e-9
        and abs(r["metrics"].get("out_of_domain_accuracy", -1) - f.get("out_of_domain", -2)) < 1e-9
    ]
    n = sum(1 for r in results if r["cell"]["judge"] == "test")
    return f"Targets exactly on the floor: {len(hits)} of {n} ({'; '.join(hits) or 'none'})."


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def premise_table(meta: dict) -> str:
    """The trajectory_clusters diagnostic on this benchmark's pool, for both S2L forms."""
    found = meta.get("premise") or {}
    if not found:
        return "(not computed yet)\n"
    lines = [
        "| clustering | clusters | gradient cosine within clusters | random pairs | gap "
        "| random pairs of one family | silhouette (sample) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in found.items():
        sil = _num(r["silhouette"])
        lines.append(
            f"| {name} | {r.get('clusters', '?')} | {_num(r['within_cluster_cosine'])} "
            f"({r['within_pairs']} pairs) | {r['random_pair_cosine']:.3f} ({r['random_pairs']} "
            f"pairs) | {_num(r['gap'])} | {_num(r.get('same_source_cosine'))} "
            f"| {sil} ({r['silhouette_sample']}) |"
        )
    return "\n".join(lines) + "\n"


def setup(sc: dict, meta: dict, first: dict | None) -> str:
    proxy = meta.get("proxies", {}).get(f"embedded/{sc.get('proxy')}", {})
    return (
        f"Setup: embedded mixture of {sc.get('size')} examples over {_families(sc)} "
        f"({sc.get('heldout_per_family')} per family held out as the test set, "
        + (
            f"of which the first {sc['test_rows_per_set']} of every set are evaluated; "
            if sc.get("test_rows_per_set")
            else "all of them evaluated; "
        )
        + f"{sc.get('ood_per_family')} per out-of-domain family; "
        f"{sc.get('val_per_source')} per family carved off the training data as validation); "
        f"proxy `{sc.get('proxy')}` ({proxy.get('n_parameters')} parameters, "
        f"{sc.get('proxy_epochs')} epochs, {sc.get('checkpoints')} checkpoints); target "
        f"`{sc.get('target')}` ({first['n_parameters'] if first else '?'} parameters), "
        f"{sc.get('target_epochs')} epochs for every training set, batch {sc.get('batch_size')}."
    )


def _load(results_path: Path, meta_path: Path) -> tuple[list[dict], dict]:
    results = [json.loads(x) for x in results_path.read_text().splitlines() if x.strip()]
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return results, meta


def generated(results_path: Path, meta_path: Path, scale_name: str, image: str) -> str:
    results, meta = _load(results_path, meta_path)
    sc = meta.get("scale", {})
    budgets = sorted(
        {
            r["cell"]["budget"]
            for r in results
            if r["cell"]["method"] not in ("full",)
            and r["cell"]["variant"] == "main"
            and r["cell"]["judge"] == "test"
            and r["cell"]["mixture"] == "embedded"
        }
    )
    present = {r["cell"]["method"] for r in results}
    methods = [m for m in METHODS if m in present]
    seeds = sorted({r["cell"]["seed"] for r in results if r["cell"]["judge"] == "test"})
    first = next((r for r in results if r["cell"]["judge"] == "test"), None)
    parts = [
        START,
        f"Scale `{scale_name}`; {len(results)} target trainings; seeds {seeds}; "
        f"learning rate {meta.get('lr', '?')} (chosen on validation, below).",
        "",
        setup(sc, meta, first),
        compute_line(results, meta),
        "",
        floor_line(meta),
        collapsed_line(results, meta),
        "",
        f"![accuracy vs budget]({image})",
        "",
    ]
    for metric, label, scale in METRICS:
        parts += [
            f"### Main table: {label}",
            "",
            main_table(results, budgets, methods, metric, scale),
        ]
    parts += [
        "### S2L against random, paired by seed (in-domain accuracy, points)",
        "",
        paired_table(results, budgets, "in_domain_accuracy", 100.0),
        "Paired bootstrap over test items and seeds, every selector against random at the same "
        "budget and seed (in-domain exact match; every in-domain item of every seed with its "
        "own result):",
        "",
        bootstrap_table(
            results, budgets, domain="in_domain", methods=tuple(m for m in methods if m != "random")
        ),
        "Against full data (all epochs), same seed: how far each subset stays below it, and "
        "the compute-matched full run (full data for the subset's steps):",
        "",
        bootstrap_table(
            results,
            budgets,
            methods=("random", "s2l", "s2l_paper", "full_same_steps"),
            against="full",
        ),
        "Same, in-domain NLL (negative = S2L better):",
        "",
        paired_table(results, budgets, "in_domain_mean_nll", 1.0),
        "### Does the premise hold? (proxy's last checkpoint, gradients sketched to 2,048 numbers)",
        "",
        premise_table(meta),
        "### What each selector over- and under-samples",
        "",
        "A family's share of the subset divided by its share of the pool (1.00: as in the "
        "pool), mean over seeds:",
        "",
        *(composition_table(results, b, methods) for b in budgets),
        "### In-domain exact match per family (%)",
        "",
        *(family_table(results, b, methods) for b in budgets),
        f"### Ablations at {sc.get('ablation_budget', 0.2):.0%}",
        "",
        ablation_table(results, sc.get("ablation_budget", 0.2)),
        "### Second mixture: embedded + GSM8K train (judged on held-out NLL)",
        "",
        gsm8k_table(results),
        "### Learning-rate tuning (random 20%, seed 0, validation split only)",
        "",
        tuning_table(results, meta.get("lr")),
        "### The paper's claims beside ours",
        "",
        PAPER,
        END,
    ]
    return "\n".join(parts)


def write_report(results_path: Path, meta_path: Path, report: Path, scale_name: str) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    image = report.with_name(PLOT if report.name == "results.md" else report.stem + ".png")
    results, _ = _load(results_path, meta_path)
    budgets = sorted({r["cell"]["budget"] for r in results if r["cell"]["method"] != "full"})
    methods = [
        m for m in dict.fromkeys(r["cell"]["method"] for r in results) if not m.startswith("full")
    ]
    plot(results, budgets, methods, image)
    body = generated(results_path, meta_path, scale_name, image.name)
    old = report.read_text() if report.exists() else f"# Results\n\n{START}\n{END}\n"
    if START in old and END in old:
        before, rest = old.split(START, 1)
        after = rest.split(END, 1)[1]
        report.write_text(before + body + after)
    else:
        report.write_text(old.rstrip() + "\n\n" + body + "\n")
