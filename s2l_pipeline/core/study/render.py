"""A study's report as a person reads it: Markdown tables and a plot of score and NLL
against budget."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..support.plots import _figure, _png
from .cells import CellResult
from .report import FULL, MIN_SEEDS, StudyReport, _pct
from .spec import ENDPOINTS, StudySpec


def costs(cells: list[CellResult]) -> list[dict]:
    """Per method and budget: the selector's own cost beside the training it saves against
    full data (means over seeds)."""
    groups: dict[tuple[str, float], list[CellResult]] = defaultdict(list)
    for c in cells:
        groups[(c.method, c.budget)].append(c)
    full = [c for c in cells if c.method == FULL]
    full_s = float(np.mean([c.train_seconds for c in full])) if full else None
    full_f = float(np.mean([c.train_flops for c in full])) if full else None
    out = []
    for (method, budget), group in sorted(groups.items()):
        train_s = float(np.mean([c.train_seconds for c in group]))
        train_f = float(np.mean([c.train_flops for c in group]))
        out.append(
            {
                "method": method,
                "budget": budget,
                "rows": int(np.mean([c.rows for c in group])),
                "selection_cpu_seconds": float(np.mean([c.selection_cpu_seconds for c in group])),
                "selection_flops": float(np.mean([c.selection_flops for c in group])),
                "converted": all(c.converted_from for c in group),
                "train_seconds": train_s,
                "train_seconds_saved": None if full_s is None else full_s - train_s,
                "train_flops": train_f,
                "train_flops_saved": None if full_f is None else full_f - train_f,
            }
        )
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]


def _ci(p) -> str:
    """The difference and its interval; from fewer than MIN_SEEDS seeds no interval, and why."""
    if p.seeds < MIN_SEEDS:
        return f"{p.difference:+.1f} (no interval from {p.seeds} seeds; {MIN_SEEDS} needed)"
    if p.high - p.low < 1e-9:  # a constant score (a collapsed target, most likely)
        return f"{p.difference:+.1f} (every seed gave this difference: an interval of no width)"
    return f"{p.difference:+.1f} [{p.low:+.1f}, {p.high:+.1f}]"


def _low(p) -> str:
    return f"{p.one_sided_low:+.1f}" if p.seeds >= MIN_SEEDS else "(too few seeds)"


# Methods that read no proxy: they skip its training and scoring (the rest share that cost).
NO_PROXY = ("random", "stratified_random", "longest", "zip", "embedding_cluster_random", FULL)


def judge_text(judge: str, rows: int, where: dict, validation_rows: int,
               tuning: dict | None = None) -> str:  # fmt: skip
    """Which judge the report's numbers come from, and where choices were made."""
    made = "carved per source from the training data" if where.get(judge) != "files" else (
        "from files held out of the pool")  # fmt: skip
    if judge == "validation":
        return f"a validation split of {rows} rows {made} (never a test set)"
    text = f"a held-out test split of {rows} rows {made}, read once per cell"
    if tuning:
        chosen = ", ".join(f"{k} {v:g}" for k, v in tuning["chosen"].items())
        text += (
            f"; {chosen} chosen on the validation split ({validation_rows} rows) alone, "
            f"by {tuning['arm']} at {tuning['budget']:.0%} over {tuning['seeds']} seed(s)"
        )
    else:
        text += f"; the validation split ({validation_rows} rows) judged no number here"
    return text


def report_markdown(
    r: StudyReport,
    cells: list[CellResult],
    study_id: str,
    judged_on: str,
    proxy_flops: float | None = None,
    draws: int = 0,
) -> str:
    """The whole report: recommendation first, then every table it rests on. ``judged_on``
    names the judge its numbers come from (see :func:`judge_text`)."""
    metric = cells[0].metric if cells else "score"
    described = metric
    if r.endpoint != "score":
        metric, described = r.endpoint, f"{r.endpoint} ({ENDPOINTS[r.endpoint]})"
    seeds = sorted({c.seed for c in cells})
    converted = sorted({c.converted_from.split(":")[0] for c in cells if c.converted_from})
    out = [
        f"# Selection study {study_id}",
        "",
        f"{len(cells)} cells judged on {judged_on}; score: {described}, each set weighing "
        f"the same, in points. "
        + (
            f"Unit of replication: the data draw ({draws} draws, each its own split and pool, "
            f"with seeds {seeds} nested in every draw); every interval is a t interval over the "
            "draws of each draw's mean paired difference (95%), every p an exact sign-flip p "
            "over the draws, and a 'seeds' column counts draws."
            if draws
            else f"Unit of replication: the seed ({len(seeds)}: {seeds}); every interval is a "
            "per-seed paired t interval (95%), every p an exact sign-flip p over the seeds."
        )
        + (
            f" Cells converted from another engine's records ({', '.join(converted)}) carry "
            "what those held: no selection cost, most-common-answer floor or checkpoint (n/a)."
            if converted
            else ""
        ),
        "",
        "## Recommendation",
        "",
        *[f"- {s}" for s in r.recommendation],
        "",
        "## Score and NLL against budget",
        "",
    ]
    out += _table(
        ["method", "budget", "seeds", metric, "NLL", "most-common-answer floor"],
        [
            [p.method, _pct(p.budget), p.seeds, f"{100 * p.mean:.1f}",
             "" if p.nll is None else f"{p.nll:.3f}",
             "" if p.floor is None else f"{100 * p.floor:.1f}"]
            for p in r.curve
        ],
    )  # fmt: skip
    out += ["", "## Against random at the same budget (points)", ""]
    out += _table(
        ["method", "budget", "minus random [95%]", "seeds", "smallest detectable", "sign-flip p"],
        [[p.method, _pct(p.budget), _ci(p), p.seeds, f"{p.minimum_detectable:.1f}", f"{p.p:.3f}"]
         for p in r.vs_random],
    ) if r.vs_random else ["Not measured: fewer than two shared seeds."]  # fmt: skip
    out += ["", f"## Against full data (points; within epsilon = {r.epsilon:g})", ""]
    out += _table(
        ["method", "budget", "minus full [95%]", "one-sided 95% low", "seeds"],
        [[p.method, _pct(p.budget), _ci(p), _low(p), p.seeds]
         for p in r.vs_full],
    ) if r.vs_full else ["Not measured: no full-data cells with two shared seeds."]  # fmt: skip
    out += ["", "## Registered comparisons (Holm across all of them)", ""]
    out += _table(
        ["comparison", "difference [95%]", "seeds", "smallest detectable", "sign-flip p",
         "Holm p"],
        [[c.name, _ci(c), c.seeds,
          f"{c.minimum_detectable:.1f}", f"{c.p:.3f}", f"{c.p_holm:.3f}"]
         for c in r.registered],
    ) if r.registered else ["None measured: fewer than two shared seeds."]  # fmt: skip
    out += ["", "Smallest budget within epsilon of full data, per method:", ""]
    out += [
        f"- {m}: {_pct(b) if b is not None else 'none studied'}"
        for m, b in sorted(r.smallest_budget_within_epsilon.items())
    ]
    out += ["", "## Best method at each budget (named when it beats the runner-up, paired)", ""]
    out += [f"- {_pct(b)}: {m}" for b, m in sorted(r.best_by_budget.items())]
    out += ["", "## Where a curve is not monotone", ""]
    out += [f"- {n}" for n in r.not_monotone] or [
        "- nowhere: no method scores lower at a larger budget (which says nothing of how far "
        "apart its points are)"
    ]
    out += ["", "## Cost: what selection takes, and the training it saves", ""]
    out += _table(
        ["method", "budget", "rows", "selection CPU s", "selection FLOPs", "training s",
         "training s saved vs full", "training FLOPs", "training FLOPs saved vs full"],
        [[c["method"], _pct(c["budget"]), c["rows"],
          "n/a" if c["converted"] else f"{c['selection_cpu_seconds']:.2f}",
          "n/a" if c["converted"] else
          f"{c['selection_flops']:.3g}" if c["selection_flops"] else "0 (no model)",
          f"{c['train_seconds']:.1f}",
          "" if c["train_seconds_saved"] is None else f"{c['train_seconds_saved']:.1f}",
          f"{c['train_flops']:.3g}",
          "" if c["train_flops_saved"] is None else f"{c['train_flops_saved']:.3g}"]
         for c in costs(cells)],
    )  # fmt: skip
    uses_proxy = sorted({c.method for c in cells} - set(NO_PROXY))
    if proxy_flops is not None and uses_proxy:
        out += [
            "",
            f"Besides their own cost, {', '.join(uses_proxy)} "
            f"{'needs' if len(uses_proxy) == 1 else 'need'} the proxy trained and its "
            f"trajectories scored: about {proxy_flops:.3g} FLOPs (6 x parameters x tokens to "
            "train, 2 x parameters x tokens per scored checkpoint), paid once for every method "
            "and every budget. Training FLOPs are 6 x parameters x tokens x epochs.",
        ]
    return "\n".join(out) + "\n"


def study_plot_png(r: StudyReport, cells: list[CellResult]) -> bytes:
    """Score (each seed a dot, the mean a line) and NLL against budget per method; full data
    as a band across."""
    from matplotlib.ticker import PercentFormatter

    fig, _ = _figure((10, 4))
    fig.clf()
    ax_score, ax_nll = fig.subplots(1, 2)
    methods = sorted({p.method for p in r.curve if p.method != FULL})
    full = [c for c in cells if c.method == FULL]
    for i, method in enumerate(methods):
        color = f"C{i}"
        pts = sorted((p for p in r.curve if p.method == method), key=lambda p: p.budget)
        xs = [p.budget for p in pts]
        ax_score.plot(xs, [100 * p.mean for p in pts], "-o", color=color, label=method)
        mine = [c for c in cells if c.method == method]
        values = [100 * c.endpoint_score(r.endpoint) for c in mine]
        ax_score.scatter([c.budget for c in mine], values, s=10,
                         color=color, alpha=0.4)  # fmt: skip
        if all(p.nll is not None for p in pts):
            ax_nll.plot(xs, [p.nll for p in pts], "-o", color=color, label=method)
    if r.floor is not None:
        ax_score.axhline(100 * r.floor, color="red", ls=":", lw=1, label="most common answer")
    if full:
        scores = [100 * c.endpoint_score(r.endpoint) for c in full]
        ax_score.axhspan(min(scores), max(scores), color="grey", alpha=0.2, label="full data")
        ax_score.axhline(float(np.mean(scores)), color="grey", lw=1)
        ax_nll.axhline(float(np.mean([c.nll for c in full])), color="grey", lw=1, label="full")
    for ax, label in ((ax_score, f"{cells[0].metric if cells else 'score'} (points)"),
                      (ax_nll, f"{cells[0].judge if cells else 'validation'} NLL")):  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.xaxis.set_minor_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("budget (fraction of the training rows)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax_score.set_title("Score against budget (dots: seeds)")
    ax_nll.set_title("NLL against budget")
    return _png(fig)


def spec_yaml(spec: StudySpec) -> str:
    import yaml

    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def spec_markdown(spec: StudySpec, registration: dict | None) -> str:
    """The spec the report follows, and whether it was fixed before any result was seen."""
    if registration is None:
        when = "It was not registered before its cells ran (no record in the store)."
    elif registration["cells_finished_before"] == 0:
        when = (f"Registered {registration['registered_at']}, before any cell of this data "
                "had finished: the endpoint, arms and comparisons were fixed before any result "
                "was seen.")  # fmt: skip
    else:
        n = registration["cells_finished_before"]
        when = (f"Registered {registration['registered_at']}, after {n} cell"
                f"{'s' if n != 1 else ''} of this data had finished (under other specs): its "
                "endpoint, arms and comparisons may have been chosen after seeing results, so "
                "read it as exploratory.")  # fmt: skip
    return "\n".join([
        "", f"## The spec ({spec.spec_id})", "", when, "",
        f"Primary endpoint: {spec.endpoint}, {ENDPOINTS[spec.endpoint]}.", "",
        "```yaml", spec_yaml(spec).rstrip(), "```", "",
    ])  # fmt: skip
