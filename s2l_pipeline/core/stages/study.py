"""Study stages: the judges (validation and test splits), one cell (select, train the study
target, judge it), and the report over every finished cell."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from ..evaluation.endpoints import collapse_answers, off_mode_scores
from ..evaluation.sanity import answer_floor, collapsed_sets, modal_answers, summary_floor
from ..evaluation.stats import pack_correct
from ..lm.fit import TrainRun
from ..lm.numerics import DEFAULT as DEFAULT_NUMERICS
from ..lm.numerics import Numerics
from ..lm.numerics import using as using_numerics
from ..lm.train_config import TrainHooks
from ..selection import MODEL_METHODS, SelectionOptions
from ..study.cells import CellResult, CellSpec, parse_cell_key, validation_score
from ..study.render import (
    costs,
    judge_text,
    report_markdown,
    spec_markdown,
    spec_yaml,
    study_plot_png,
)
from ..study.report import FULL, StudyReport, build_report
from ..study.spec import StudySpec
from ..study.split import HoldOut, carve_split
from ..support.hashing import table_hash
from ..support.storage import ArtifactStore
from ..support.tables import read_table, write_table
from .manifests import (
    ModelManifest,
    PoolManifest,
    StudyCellManifest,
    StudyReportManifest,
    StudySplitManifest,
)
from .models import EvalOptions, TrainingRows, evaluate_model, fit_target
from .selection import choose_subset


def make_study_split(
    pool: PoolManifest,
    share: float,
    max_rows: int,
    seed: int,
    store: ArtifactStore,
    test: HoldOut | pl.DataFrame | None = None,
    validation: pl.DataFrame | None = None,
    judges: dict | None = None,
) -> tuple[StudySplitManifest, pl.DataFrame]:
    """The pool's rows less its judges: a validation split per source (or the ``validation``
    file's rows) and, given ``test``, a held-out test split; (manifest, validation table)."""
    split = carve_split(
        read_table(pool.train, store), read_table(pool.trajectories, store), seed,
        validation if validation is not None else HoldOut(share, max_rows), test,
    )  # fmt: skip
    train_hash, val_hash = table_hash(split.train), table_hash(split.validation)
    traj_hash = table_hash(split.trajectories)
    parts = [train_hash, traj_hash, val_hash]
    test_hash = table_hash(split.test) if split.test is not None else None
    if test_hash is not None:  # a study without a test split keeps the id it always had
        parts.append(test_hash)
    study_id = _digest(parts)[:16]
    prefix = f"study_split/{study_id}"
    test_ref = (
        write_table(split.test, store, f"{prefix}/test.parquet", test_hash)
        if split.test is not None
        else None
    )
    lineage = {"study_id": study_id, "validation": val_hash}
    if test_hash is not None:
        lineage["test"] = test_hash
    manifest = StudySplitManifest(
        train=write_table(split.train, store, f"{prefix}/train.parquet", train_hash),
        trajectories=write_table(split.trajectories, store, f"{prefix}/traj.parquet", traj_hash),
        validation=write_table(split.validation, store, f"{prefix}/validation.parquet", val_hash),
        study_id=study_id,
        validation_share=share,
        seed=seed,
        lineage={**pool.lineage, "study_split": lineage},
        test=test_ref,
        judges={**(judges or {}), "dropped_as_judged": split.dropped_as_judged},
    )
    return manifest, split.validation


def _digest(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cell_run(run: TrainRun, seed: int) -> TrainRun:
    """The study target's recipe with the cell's seed (initialisation and data order)."""
    model = dataclasses.replace(run.model, seed=seed)
    return dataclasses.replace(run, model=model, train=dataclasses.replace(run.train, seed=seed))


def recipe_id(
    run: TrainRun, opts: SelectionOptions, eval_opts: EvalOptions, judge: str = "validation",
    numerics: Numerics = DEFAULT_NUMERICS,
) -> str:  # fmt: skip
    """The settings every cell of one study shares (the seed aside), its judge and numerics,
    hashed."""
    parts = [dataclasses.asdict(cell_run(run, 0)), dataclasses.asdict(opts),
             dataclasses.asdict(eval_opts)]  # fmt: skip
    if judge != "validation":  # validation-judged cells keep the ids they always had
        parts.append({"judge": judge})
    if numerics.identity():  # so do cells without numerics of their own
        parts.append({"numerics": numerics.identity()})
    return _digest(parts)[:12]


def arm_digest(arm_options: dict | None) -> str:
    """An arm's own selector options, hashed ('' for a plain method)."""
    return _digest(sorted((arm_options or {}).items()))[:8] if arm_options else ""


def record_key(study_id: str, recipe: str, key: str, arm: dict | None) -> str:
    """Where a finished cell's durable record is kept in the artifact store."""
    suffix = f".{arm_digest(arm)}" if arm else ""  # an arm renamed or reset is another cell
    return f"study_cells/{study_id}/{recipe}/{key}{suffix}.json"


def _result_key(split: StudySplitManifest, recipe: str, key: str, arm: dict | None) -> str:
    return record_key(split.study_id, recipe, key, arm)


def study_records(study_id: str, store: ArtifactStore) -> list[StudyCellManifest]:
    """Every finished cell of the study, from its durable records (whatever made them: this
    instance, another machine's, or records converted from elsewhere)."""
    return [
        StudyCellManifest.from_dict(json.loads(store.read_text(key)))
        for key in store.keys(f"study_cells/{study_id}")
        if key.endswith(".json")
    ]


def cached_cell(
    split: StudySplitManifest, recipe: str, key: str, store: ArtifactStore,
    arm_options: dict | None = None,
) -> StudyCellManifest | None:  # fmt: skip
    """A cell finished before with the same split, settings and arm: its result, reused."""
    path = _result_key(split, recipe, key, arm_options)
    if not store.exists(path):
        return None
    return StudyCellManifest.from_dict(json.loads(store.read_text(path)))


def run_study_cell(
    key: str,
    split: StudySplitManifest,
    proxy: ModelManifest,
    opts: SelectionOptions,
    run: TrainRun,
    eval_opts: EvalOptions,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
    progress: Callable[[str], None] | None = None,
    selector: str | None = None,
    arm_options: dict | None = None,
    judge: str = "validation",
    numerics: Numerics = DEFAULT_NUMERICS,
) -> StudyCellManifest:
    """Select the cell's rows, train the study target on them, score it on its judge (the
    validation split, or the held-out test split, read once); the result is kept in the store,
    so the cell is never run twice. ``selector`` and ``arm_options``: a named arm's method and
    its own selector options (the key names the arm)."""
    spec = parse_cell_key(key)
    selector = selector or spec.method
    arm_options = dict(arm_options or {})
    split.judge_table(judge)  # before any training: no test split is an error now
    recipe = recipe_id(run, opts, eval_opts, judge, numerics)  # every arm's: the report's group
    found = cached_cell(split, recipe, key, store, arm_options)
    if found is not None:
        return found
    with using_numerics(numerics):
        result = _run_cell(spec, key, split, proxy, opts, run, eval_opts, store, work_root,
                           hooks, progress, selector, arm_options, judge, recipe)  # fmt: skip
    result = dataclasses.replace(result, numerics=numerics.identity())
    store.write_text(
        _result_key(split, recipe, key, arm_options),
        json.dumps(result.to_dict(), indent=1, sort_keys=True),
    )
    return result


def _run_cell(spec, key, split, proxy, opts, run, eval_opts, store, work_root, hooks, progress,
              selector, arm_options, judge, recipe) -> StudyCellManifest:  # fmt: skip
    """Select, train and judge one cell (run_study_cell keeps its result)."""
    judged_on = split.judge_table(judge)
    data = read_table(split.train, store)
    traj = read_table(split.trajectories, store)
    arm_opts = dataclasses.replace(opts, **arm_options)
    rows, cost = _cell_rows(spec, selector, data, traj, arm_opts, proxy, store)
    rows_hash = table_hash(rows)
    ids_uri = write_table(
        rows.select("example_id"), store, f"study_cells/training_ids/{rows_hash[:16]}.parquet"
    ).uri
    tokenizer_dir = store.fetch_dir(proxy.checkpoints[0].uri)
    t0 = time.perf_counter()
    trained = fit_target(
        TrainingRows(rows, rows_hash), cell_run(run, spec.seed), store, work_root, hooks,
        tokenizer_dir,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    judged = read_table(judged_on, store)
    t0 = time.perf_counter()
    preds, metrics = evaluate_model(trained.final.uri, judged, eval_opts, store, progress)
    eval_s = time.perf_counter() - t0
    floors = dict(
        answer_floor(judged, modal_answers(rows)).select("eval_set", "floor_accuracy").iter_rows()
    )
    floors.update(summary_floor(judged, rows))  # each set's constant answer, scored
    floor = pl.Series([v for v in floors.values() if v is not None], dtype=pl.Float64)
    score, nll, metric, per_set = validation_score(metrics)
    collapsed = {k: [p, round(share, 4)] for k, (p, share) in collapsed_sets(preds, judged).items()}
    off_mode = _off_mode(preds, data)
    version = table_hash(preds)
    pred_ref = write_table(preds, store, f"study_cells/predictions/{version[:16]}.parquet", version)
    result = StudyCellManifest(
        **dataclasses.asdict(
            CellResult(
                key=key,
                method=spec.method,
                budget=spec.budget,
                seed=spec.seed,
                study_id=split.study_id,
                recipe=recipe,
                rows=rows.height,
                score=score,
                nll=nll,
                metric=metric,
                per_set=per_set,
                floor=float(floor.mean()) if floor.len() else None,
                collapsed=collapsed,
                nested=arm_opts.nested,
                train_seconds=round(train_s, 3),
                eval_seconds=round(eval_s, 3),
                train_tokens=trained.train_tokens,
                epochs=float(trained.train.epochs),
                target_parameters=trained.n_parameters,
                checkpoint_uri=trained.final.uri,
                predictions_uri=pred_ref.uri,
                training_ids_uri=ids_uri,
                rows_hash=rows_hash,
                selector=selector,
                arm_options=arm_options,
                correct=_packed_correct(preds),
                judge=judge,
                off_mode=off_mode,
                **cost,
            )
        )
    )
    return result


def _off_mode(preds: pl.DataFrame, pool: pl.DataFrame) -> dict:
    """Per judged math set ('<judge>:<source>'): accuracy without the items whose answer is one
    of its source's collapse answers in the pool the cells select from."""
    if "correct" not in preds.columns or "answer" not in preds.columns:
        return {}
    math = preds.filter(pl.col("correct").is_not_null())
    if math.is_empty():
        return {}
    modes = collapse_answers(pool)
    by_set = {
        name: modes[name.split(":", 1)[-1]]
        for name in math["eval_set"].unique().to_list()
        if name.split(":", 1)[-1] in modes
    }
    return {k: v.to_dict() for k, v in sorted(off_mode_scores(math, by_set).items())}


def _packed_correct(preds: pl.DataFrame) -> str:
    """Each judged row's correctness, in the stored predictions' order ('' for summaries,
    judged by ROUGE): the record alone can be re-analysed item by item."""
    if "correct" not in preds.columns or preds["correct"].null_count() == preds.height:
        return ""
    return pack_correct(preds["correct"].fill_null(False).to_list())


def _cell_rows(
    spec: CellSpec,
    method: str,
    data: pl.DataFrame,
    traj: pl.DataFrame,
    opts: SelectionOptions,
    proxy: ModelManifest,
    store: ArtifactStore,
) -> tuple[pl.DataFrame, dict]:
    """The rows the cell's method chooses (all of them for full data), and the selection's
    own cost."""
    if method == FULL:
        return data.join(traj.select("example_id"), on="example_id", how="semi"), {}
    proxy_dir = store.fetch_dir(proxy.final.uri) if method in MODEL_METHODS else None
    chosen = choose_subset(
        method, traj, data, spec.budget, spec.seed, opts, None, None, proxy_dir,
        proxy.train.max_length,
    )  # fmt: skip
    info = chosen.info
    parts = ("selection_cpu_seconds", "model_cpu_seconds", "clustering_cpu_seconds")
    cpu = sum(info.get(k, 0.0) for k in parts)
    cost = {"selection_cpu_seconds": round(cpu, 3)}
    cost["selection_flops"] = float(info.get("selection_flops", 0.0))
    return chosen.rows.drop("cluster", strict=False), cost


def study_report(cells: list[CellResult], epsilon: float, spec: StudySpec | None = None
                 ) -> StudyReport:  # fmt: skip
    """The report over finished cells of one study (one split, one recipe), on the spec's
    endpoint and comparisons."""
    endpoint = spec.endpoint if spec else "score"
    comparisons = spec.comparisons if spec else None
    return build_report([c.study_cell(endpoint) for c in cells], epsilon, comparisons, endpoint)


def _spec_path(split: StudySplitManifest, spec_id: str) -> str:
    return f"study_specs/{split.study_id}/{spec_id}.json"


def register_spec(spec: StudySpec, split: StudySplitManifest, store: ArtifactStore,
                  finished_before: int) -> dict:  # fmt: skip
    """The spec as first registered for this data (kept, never overwritten): when, and how
    many cells of the same data had finished by then (0: fixed before any result was seen)."""
    path = _spec_path(split, spec.spec_id)
    if store.exists(path):
        return json.loads(store.read_text(path))
    record = {
        "spec_id": spec.spec_id,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cells_finished_before": finished_before,
        "spec": spec.to_dict(),
    }
    store.write_text(path, json.dumps(record, indent=1, sort_keys=True))
    return record


def record_tuning(split: StudySplitManifest, spec_id: str, tuned: dict, store: ArtifactStore
                  ) -> None:  # fmt: skip
    """What the spec's grid chose on validation, beside the spec: the report names it."""
    store.write_text(_spec_path(split, spec_id).replace(".json", ".tuning.json"),
                     json.dumps(tuned, indent=1, sort_keys=True))  # fmt: skip


def tuning_record(split: StudySplitManifest, spec_id: str, store: ArtifactStore) -> dict | None:
    path = _spec_path(split, spec_id).replace(".json", ".tuning.json")
    return json.loads(store.read_text(path)) if store.exists(path) else None


def registration(split: StudySplitManifest, spec_id: str, store: ArtifactStore) -> dict | None:
    path = _spec_path(split, spec_id)
    return json.loads(store.read_text(path)) if store.exists(path) else None


def _grid_keys(spec: StudySpec) -> frozenset[str]:
    return frozenset(c.key for c in spec.grid())


def _of_spec(cell: CellResult, spec: StudySpec | None) -> bool:
    """A cell of the spec's grid (its arms, budgets and seeds; full data for its full
    seeds), with its arm's options."""
    if spec is None:
        return True
    if cell.key not in _grid_keys(spec):
        return False
    if cell.method == FULL:
        return True
    arm = spec.arm(cell.method)
    return (
        arm is not None
        and arm.method == (cell.selector or cell.method)
        and (arm_digest(arm.options) == arm_digest(cell.arm_options))
    )


@dataclass(frozen=True)
class Report:
    manifest: StudyReportManifest
    report: StudyReport
    text: str  # Markdown
    png: bytes
    left_out: dict[str, int]  # cells of other settings (recipe -> count), not reported


def _record_of_spec(cell: CellResult, spec: StudySpec | None, split: StudySplitManifest,
                    store: ArtifactStore) -> CellResult:  # fmt: skip
    """The cell's record under the spec's options for its arm, when its key's latest
    materialization was the same arm name with other options (a spec changed, and back)."""
    if spec is None or _of_spec(cell, spec):
        return cell
    arm = spec.arm(cell.method)
    if arm is None:
        return cell
    return cached_cell(split, cell.recipe, cell.key, store, arm.options) or cell


def make_study_report(
    every: list[CellResult],
    epsilon: float,
    split: StudySplitManifest,
    proxy: ModelManifest,
    store: ArtifactStore,
    spec: StudySpec | None = None,
) -> Report:
    """The report over the cells of the settings most cells share (a study changed halfway
    is not mixed) and, given a spec, of its arms; written as report.md, report.json and
    plot.png (with the spec beside them)."""
    every = [_record_of_spec(c, spec, split, store) for c in every]
    recipes = Counter(c.recipe for c in every if _of_spec(c, spec))
    if not recipes:
        raise ValueError(f"study {split.study_id}: no finished cell of the spec's arms yet")
    recipe = max(recipes, key=lambda r: (recipes[r], r))
    cells = sorted(
        (c for c in every if c.recipe == recipe and _of_spec(c, spec)), key=lambda c: c.key
    )
    report = study_report(cells, epsilon, spec)
    registered = registration(split, spec.spec_id, store) if spec else None
    judge = cells[0].judge
    tuning = tuning_record(split, spec.spec_id, store) if spec else None
    judged_on = judge_text(
        judge, split.judge_table(judge).rows, split.judges, split.validation.rows, tuning
    )
    text = report_markdown(report, cells, split.study_id, judged_on, proxy_flops(proxy))
    if spec is not None:
        text += spec_markdown(spec, registered)
    png = study_plot_png(report, cells)
    prefix = f"study_report/{split.study_id}/{recipe}" + (f"/{spec.spec_id}" if spec else "")
    body = {**report.to_dict(), "judge": judge, "judged_on": judged_on, "tuning": tuning,
            "costs": costs(cells), "cells": [asdict(c) for c in cells]}  # fmt: skip
    if spec is not None:
        body["spec"] = {"spec_id": spec.spec_id, "registration": registered, **spec.to_dict()}
    manifest = _write_report(store, prefix, report, body, text, png, spec, split.study_id)
    left_out = {r: n for r, n in recipes.items() if r != recipe}
    others = sum(1 for c in every if not _of_spec(c, spec))
    if others:
        left_out["not of the spec's arms"] = others
    return Report(manifest, report, text, png, left_out)


def make_draws_report(
    draws: list[tuple[StudySplitManifest, list[CellResult]]],
    epsilon: float,
    proxy: ModelManifest,
    store: ArtifactStore,
    spec: StudySpec,
) -> Report:
    """One report over every draw's cells (each draw its own split, its seeds nested in it):
    the draw is the unit every interval is made over."""
    cells, nested = [], []
    for d, (split, every) in enumerate(draws):
        every = [_record_of_spec(c, spec, split, store) for c in every]
        recipes = Counter(c.recipe for c in every if _of_spec(c, spec))
        if not recipes:
            raise ValueError(f"draw {d} (study {split.study_id}): no finished cell of the spec")
        recipe = max(recipes, key=lambda r: (recipes[r], r))
        mine = sorted((c for c in every if c.recipe == recipe and _of_spec(c, spec)),
                      key=lambda c: c.key)  # fmt: skip
        cells += mine
        nested += [dataclasses.replace(c.study_cell(spec.endpoint), draw=d) for c in mine]
    report = build_report(nested, epsilon, spec.comparisons, spec.endpoint)
    first = draws[0][0]
    ids = [split.study_id for split, _ in draws]
    judge = cells[0].judge
    rows = first.judge_table(judge).rows
    judged_on = judge_text(judge, rows, first.judges, first.validation.rows)
    judged_on += " (draw 0's; every draw has its own)"
    text = report_markdown(report, cells, " + ".join(ids), judged_on, proxy_flops(proxy),
                           draws=len(draws))  # fmt: skip
    text += spec_markdown(spec, registration(first, spec.spec_id, store))
    png = study_plot_png(report, cells)
    prefix = f"study_report/draws/{_digest(ids)[:16]}/{spec.spec_id}"
    body = {**report.to_dict(), "draws": ids, "judge": judge, "judged_on": judged_on,
            "cells": [{**asdict(c), "draw": n.draw} for c, n in zip(cells, nested, strict=True)],
            "spec": {"spec_id": spec.spec_id, **spec.to_dict()}}  # fmt: skip
    manifest = _write_report(store, prefix, report, body, text, png, spec, " + ".join(ids))
    return Report(manifest, report, text, png, {})


def _write_report(
    store: ArtifactStore,
    prefix: str,
    report: StudyReport,
    body: dict,
    text: str,
    png: bytes,
    spec: StudySpec | None,
    study_id: str,
) -> StudyReportManifest:
    """A report's files under ``prefix`` (the spec beside them when there is one), and their
    manifest: one layout for a draw's report and the report over draws."""
    if spec is not None:
        store.write_text(f"{prefix}/spec.yaml", spec_yaml(spec))
    json_uri = store.write_text(f"{prefix}/report.json", json.dumps(body, indent=1, default=str))
    md_uri = store.write_text(f"{prefix}/report.md", text)
    with store.writing(f"{prefix}/plot.png") as path:
        path.write_bytes(png)
    curve = pl.DataFrame([asdict(p) for p in report.curve])
    return StudyReportManifest(
        report=write_table(curve, store, f"{prefix}/curve.parquet"),
        report_json=json_uri,
        report_md=md_uri,
        plot=store.uri(f"{prefix}/plot.png"),
        study_id=study_id,
        cells=len(body["cells"]),
        recommendation=report.recommendation,
        spec_id=spec.spec_id if spec else "",
    )


def proxy_flops(proxy: ModelManifest) -> float:
    """The proxy's training (6 x parameters x tokens x epochs) and its scoring of every
    checkpoint (2 x parameters x tokens each): the cost trajectory selectors share."""
    n, tokens = proxy.n_parameters, proxy.train_tokens
    return 6.0 * n * tokens * proxy.train.epochs + 2.0 * n * tokens * len(proxy.checkpoints)
