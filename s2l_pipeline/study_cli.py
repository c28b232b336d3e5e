"""``s2l study``: the selection study's cells as Dagster runs, several at once, then its report.

The cells' upstream (proxy, trajectories, pool, validation split) runs first in this process;
each cell is then its own run of ``study_cells_job``: here, one at a time, on the in-process
executor; else ``dagster job execute`` on the deployment's executor, at most ``--parallel`` at a
time. The report runs last, here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .core.selection import METHODS
from .core.selection.budget import resolve_budget
from .core.study.cells import CellSpec, parse_cell_key
from .core.study.estimate import (
    IN_PROCESS_START_SECONDS,
    RUN_START_SECONDS,
    StepTimes,
    cell_seconds,
    study_seconds,
)
from .core.study.report import FULL
from .core.study.sequential import SeedPolicy, SequentialDesign
from .core.study.spec import StudySpec, from_flags, load_spec
from .defs.profiles import PROFILES
from .launch import (
    asset_config,
    config_mistakes,
    failure_reason,
    failures,
    run_config_file,
    use_profile_and_quiet_logs,
    with_log_level,
    with_overrides,
)

CELL_JOB = "study_cells_job"


def _say(text: str) -> None:
    print(f"s2l study: {text}", file=sys.stderr, flush=True)


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"--methods: unknown {unknown}; known: {', '.join(sorted(METHODS))}")
    return names


def _budgets(text: str) -> list[float]:
    try:
        return [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(
            f"--budgets: fractions separated by commas, e.g. 0.05,0.1; not {text!r}"
        ) from None


def default_parallel() -> int:
    """Cells at once: one per GPU the multiprocess executor shares out, else one."""
    from .defs.executors import active_executor, gpu_count

    return gpu_count() if active_executor() == "multiprocess" else 1


def _seeds(text: str) -> SeedPolicy | int:
    """--seeds N (every cell N seeds) or MIN:MAX:EVERY (group-sequential: look every EVERY
    seeds from MIN to MAX, and stop the arms whose comparisons are decided)."""
    parts = str(text).split(":")
    try:
        if len(parts) == 1:
            return int(parts[0])
        if len(parts) == 3:
            low, high, every = (int(x) for x in parts)
            return SeedPolicy(min=low, max=high, look_every=every)
    except ValueError as exc:
        if "seeds:" in str(exc):
            raise ValueError(f"--seeds {text}: {exc}") from None
    raise ValueError(f"--seeds: a count (3) or MIN:MAX:EVERY (5:30:5), not {text!r}")


FLAG_DEFAULTS = {"methods": "s2l,random", "budgets": "0.05,0.1,0.2,0.4", "seeds": "3",
                 "epsilon": 1.0}  # fmt: skip


def study_spec(args: argparse.Namespace) -> StudySpec:
    """The study's spec: the --spec file, or the one the flags stand for (not both)."""
    given = [f"--{k}" for k in FLAG_DEFAULTS if getattr(args, k, None) is not None]
    if getattr(args, "spec", None):
        if given:
            raise ValueError(
                f"--spec {args.spec} names the arms, budgets, seeds and epsilon; drop "
                f"{', '.join(given)} (or drop --spec and give them as flags)"
            )
        return load_spec(args.spec)
    value = {k: v if (v := getattr(args, k, None)) is not None else d
             for k, d in FLAG_DEFAULTS.items()}  # fmt: skip
    return from_flags(_methods(value["methods"]), _budgets(value["budgets"]),
                      _seeds(value["seeds"]), float(value["epsilon"]))  # fmt: skip


def with_spec(config: dict, spec: StudySpec, draw: int | None = None) -> dict:
    """The spec's data, target, split and arms as the assets' run config (over --config's);
    data files relative to the spec's folder. ``draw``: that draw's split seed (and the
    embedded generator's, when it makes the pool)."""
    ops = config.setdefault("ops", {})

    def asset(name: str) -> dict:
        return asset_config(ops, name)

    if spec.data:
        raw = asset("raw_dataset")
        data = dict(spec.data)
        if "files" in data:
            data["files"] = [_relative_to(spec.source, f) for f in data["files"]]
            raw.setdefault("embedded", {})["enabled"] = False
        raw.update(data)
    if spec.target:
        target = dict(spec.target)
        if "model" in target:  # a model folder beside the spec, as data files are
            target["model"] = _relative_to(spec.source, target["model"])
        asset("study_cells").update(target)
    if spec.arm_config():
        asset("study_cells")["arms"] = spec.arm_config()
    if spec.split:
        split = dict(spec.split)
        for key in ("validation_files", "test_files"):
            if key in split:  # judge files beside the spec, as data files are
                split[key] = [_relative_to(spec.source, f) for f in split[key]]
        asset("study_split").update(split)
    if spec.proxy:
        asset("proxy_checkpoints").update(spec.proxy)
    if draw is not None:
        split = asset("study_split")
        split["seed"] = int(split.get("seed", 0)) + draw
        raw = asset("raw_dataset")
        if not raw.get("files") and not raw.get("hf"):  # the pool is generated: draw it too
            embedded = raw.setdefault("embedded", {})
            if embedded.get("enabled", True):
                embedded["seed"] = int(embedded.get("seed", 0)) + draw
    return config


def _relative_to(spec_file: str, entry):
    """A data file named in a spec, found beside the spec when its path is relative."""
    folder = Path(spec_file).parent if spec_file else Path(".")
    path = entry.get("path") if isinstance(entry, dict) else entry
    if path and not Path(path).is_absolute() and (folder / path).exists():
        path = str(folder / path)
    return {**entry, "path": path} if isinstance(entry, dict) else path


def _study_draw(
    args: argparse.Namespace, spec: StudySpec, draw: int | None
) -> tuple[int, dict | None]:
    """One draw of the study (the only one without ``draws``): prep, cells, its report.
    (exit code, JSON summary; its '_split' and '_proxy' are for the draws' report)."""
    policy = spec.seeds if isinstance(spec.seeds, SeedPolicy) else None
    grid = spec.grid()
    if not os.environ.get("DAGSTER_HOME"):
        raise ValueError(
            "a study keeps its cells in the Dagster instance: set DAGSTER_HOME (e.g. "
            "DAGSTER_HOME=$PWD), so a rerun reuses the finished cells and the UI shows them"
        )
    use_profile_and_quiet_logs(args)
    import dagster as dg

    from .definitions import defs
    from .defs.recovery import owner_tags, sweep_dead_runs

    instance = dg.DagsterInstance.get()
    mlflow = defs.resources["mlflow"]
    sweep_dead_runs(instance, on_dead=mlflow.end_orphaned_runs, say=_say)
    config = with_spec(with_overrides(run_config_file(args.config), args), spec, draw)
    config = with_log_level(config, args)
    ops = config.get("ops", {})
    cell_ops = {k: v for k, v in ops.items() if k == "study_cells"}
    spec_config = json.loads(json.dumps(spec.to_dict()))  # plain lists and dicts
    report_ops = {"study_report": {"config": {"epsilon": spec.epsilon, "spec": spec_config}}}
    prep_config = {**config, "ops": {k: v for k, v in ops.items() if k not in ("study_cells",)}}
    prep = defs.resolve_job_def("study_prep_job")
    cell_job = defs.resolve_job_def(CELL_JOB)
    mistakes = config_mistakes(prep, prep_config) + config_mistakes(
        cell_job, {"ops": cell_ops} if cell_ops else {}
    )
    if mistakes:
        for line in mistakes:
            _say(f"config: {line}")
        return 2, None
    if not args.verbose:
        from .console import step_console

        prep = prep.with_logger_defs({"console": step_console})
    _say(f"{len(grid)} cells: {_grid_text(grid)}; first the proxy, its trajectories and the split")
    result = prep.execute_in_process(
        run_config=prep_config, instance=instance, raise_on_error=False, tags=owner_tags()
    )
    if not result.success:
        for step, reason in failures(result).items():
            _say(f"step {step} failed: {reason}")
        return 1, None
    split = result.output_for_node("study_split")
    proxy = result.output_for_node("proxy_checkpoints")
    store = defs.resources["artifact_store"].store()

    for budget in sorted({c.budget for c in grid}):  # before any cell: each budget has rows
        resolve_budget(budget, split.train.rows)
    if args.plan:  # what the cells would be, and where their records go; nothing runs
        return 0, _plan(spec, cell_ops, split, proxy, store, grid)
    from .core.stages.study import register_spec
    from .defs.study import finished_cells

    before = len(finished_cells(store, split.study_id))
    registered = register_spec(spec, split, store, before)  # before any result, tuning's too
    parallel = args.parallel or default_parallel()
    tuned = None
    if spec.tuning is not None:
        instance.add_dynamic_partitions("study_cells", _tuning_keys(spec))
        try:
            tuned = _tune(spec, cell_ops, split, proxy, store, parallel, instance, cell_job)
        except KeyboardInterrupt:
            _say("interrupted: every finished cell is kept; the same command resumes from them")
            return 130, None
        if tuned is None:
            return 1, None
        cell_ops = _with_settings(cell_ops, tuned["chosen"])
        from .core.stages.study import record_tuning

        record_tuning(split, spec.spec_id, tuned, store)
    settings = _cell_settings(cell_ops, split, proxy, store)  # run, selection, eval, numerics
    judge = _judge(cell_ops, split)
    find = _finder(split, settings, store, spec, judge)
    todo, done = _pending(grid, find)
    _say(
        f"spec {spec.spec_id} (endpoint {spec.endpoint}, {len(spec.comparisons)} comparisons): "
        + ("registered before any result of this data"
           if registered["cells_finished_before"] == 0 else
           f"registered {registered['registered_at']} after "
           f"{registered['cells_finished_before']} cells of this data had finished "
           "(exploratory)")
    )  # fmt: skip
    slots = instance.get_concurrency_config().pool_config.default_pool_limit
    if slots is not None and parallel > slots:
        _say(
            f"{parallel} cells at once, but this instance lets {slots} GPU step"
            f"{'s' if slots != 1 else ''} run at a time (dagster.yaml concurrency: pools: "
            "default_limit): the others wait for the gpu pool; set it to your GPU count"
        )
    lanes = min(parallel, slots) if slots is not None else parallel
    pool_rows, val_rows = split.train.rows, split.validation.rows
    if todo or policy:
        times = _measure(split, proxy, settings, store)
        start_s = IN_PROCESS_START_SECONDS if cells_here(parallel) else RUN_START_SECONDS
        seconds = {c.key: cell_seconds(c, pool_rows, val_rows, times, start_s) for c in todo}
        measured = (
            f" (measured here: a target step {times.train_step_s:.2f} s for "
            f"{times.rows_per_step} rows, a validation row {times.eval_row_s:.3f} s; "
            f"{pool_rows} rows to select from, {val_rows} validation rows)"
        )
    else:  # every cell reused: nothing to time (a target step costs seconds to measure)
        seconds, measured = {}, ""
    hours = study_seconds(list(seconds.values()), lanes) / 3600
    _say(
        f"{len(grid)} cells{' at most' if policy else ''}, {len(done)} finished before "
        f"(reused), {len(todo)} to run, {parallel} at a time: about {_hours(hours)}"
        f"{' if no look decides anything' if policy else ''}{measured}"
    )
    if hours > args.max_hours and not args.go_past_max_hours:
        _say(
            f"refused: the estimate ({_hours(hours)}) is past --max-hours {args.max_hours:g}; "
            "fewer cells (--methods, --budgets, --seeds), a cheaper study target (--config "
            "ops: study_cells: config: epochs/size), more --parallel, or --go-past-max-hours"
        )
        return 2, None
    instance.add_dynamic_partitions("study_cells", [c.key for c in grid])
    t0 = time.monotonic()
    run = functools.partial(
        _run_cells, cell_ops=cell_ops, parallel=parallel, seconds=seconds, instance=instance,
        find=find, split=split, cell_job=cell_job,
    )  # fmt: skip
    sequential = None
    try:
        if policy is None:
            failed, ran = run(todo), len(todo)
        else:
            failed, ran, sequential = _run_looks(grid, spec, run, todo, find)
    except KeyboardInterrupt:  # Ctrl-C: no further cell starts, the finished ones are kept
        _say("interrupted: every finished cell is kept; the same command resumes from them")
        return 130, None
    took = time.monotonic() - t0
    if ran:
        _say(f"{ran} cells ran in {_hours(took / 3600)} (estimated {_hours(hours)})")
    report = defs.resolve_job_def("study_report_job")
    if not args.verbose:
        from .console import step_console

        report = report.with_logger_defs({"console": step_console})
    out = report.execute_in_process(
        run_config=with_log_level({"ops": report_ops}, args),
        instance=instance,
        raise_on_error=False,
        tags=owner_tags(),
    )
    if not out.success:
        for step, reason in failures(out).items():
            _say(f"step {step} failed: {reason}")
        return 1, None
    m = out.output_for_node("study_report")
    _say(f"report: {m.report_md} (plot {m.plot}; {m.cells} cells)")
    for line in m.recommendation:
        print(f"  {line}", file=sys.stderr)
    summary = {
        "study_id": m.study_id,
        "cells": m.cells,
        "failed_cells": failed,
        "cells_run": ran,
        "cells_reused": len(done),
        "estimated_seconds": round(hours * 3600, 1),
        "cells_seconds": round(took, 1),
        "report": m.report_md,
        "report_json": m.report_json,
        "plot": m.plot,
        "recommendation": m.recommendation,
        "spec_id": m.spec_id,
        "endpoint": spec.endpoint,
        "registration": {k: v for k, v in registered.items() if k != "spec"},
    }
    if sequential is not None:
        summary["sequential"] = sequential
    if tuned is not None:
        summary["tuning"] = tuned
    summary["judge"] = judge
    return (1 if failed else 0), {**summary, "_split": split, "_proxy": proxy}


def cmd_study(args: argparse.Namespace) -> int:
    spec = study_spec(args)
    if spec.draws == 1:
        code, summary = _study_draw(args, spec, None)
        if summary is not None:
            print(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}))
        return code
    return _study_draws(args, spec)


def _study_draws(args: argparse.Namespace, spec: StudySpec) -> int:
    """``draws: N``: the study once per draw (its own split, and pool when generated), then
    one report whose every interval is made over the draws."""
    done = []
    for draw in range(spec.draws):
        _say(f"draw {draw + 1} of {spec.draws}")
        code, summary = _study_draw(args, spec, draw)
        if code != 0 or summary is None or args.plan:
            if summary is not None and args.plan:
                print(json.dumps(summary))
            return code
        done.append(summary)
    from .core.stages.study import make_draws_report
    from .defs.study import finished_cells

    store = _store()
    per_draw = [(s["_split"], finished_cells(store, s["_split"].study_id)) for s in done]
    report = make_draws_report(per_draw, spec.epsilon, done[0]["_proxy"], store, spec)
    m = report.manifest
    _say(f"report over {spec.draws} draws: {m.report_md} ({m.cells} cells)")
    for line in m.recommendation:
        print(f"  {line}", file=sys.stderr)
    print(json.dumps({
        "draws": [{k: v for k, v in s.items() if not k.startswith("_")} for s in done],
        "study_ids": [s["study_id"] for s in done], "cells": m.cells, "report": m.report_md,
        "report_json": m.report_json, "plot": m.plot, "recommendation": m.recommendation,
        "spec_id": spec.spec_id, "endpoint": spec.endpoint,
        "cells_run": sum(s["cells_run"] for s in done),
    }))  # fmt: skip
    return 0


def _store():
    from .definitions import defs

    return defs.resources["artifact_store"].store()


def _arm(cell: CellSpec) -> str:
    return cell.method if cell.method == FULL else f"{cell.method}@{cell.budget:g}"


def _run_looks(grid, spec: StudySpec, run, todo, find):
    """Group-sequential seeds: at each look the cells the open comparisons (the spec's, at
    every budget) need, then what that look decides (the endpoint in points, as epsilon).
    Returns (failed, cells run, record)."""
    policy, epsilon = spec.seeds, spec.epsilon
    design = SequentialDesign(spec.pairs(), policy, epsilon)
    pending = {c.key for c in todo}
    failed, ran = [], 0
    scores: dict[str, float] = {}  # cell key -> score in points, each manifest read once
    for k, seeds in enumerate(policy.looks()):
        needed = design.open_arms()
        if not needed:
            break
        now = [c for c in grid if _arm(c) in needed and c.seed < seeds and c.key in pending]
        failed += run(now)
        ran += len(now)
        pending -= {c.key for c in now}
        if failed:  # its arm would go on getting cells no look could use
            _say(f"look {k + 1}: {len(failed)} cell(s) failed; the looks stop here (rerun "
                 "the command to run them again; finished cells are kept)")  # fmt: skip
            break
        have: dict[str, list[float]] = {}
        for c in sorted((c for c in grid if c.seed < seeds), key=lambda c: c.seed):
            if c.key not in scores:
                cell = find(c.key)
                if cell is None:
                    continue
                scores[c.key] = 100 * cell.endpoint_score(spec.endpoint)
            got = have.setdefault(_arm(c), [])
            if len(got) == c.seed:  # seeds in order; a missing one stops the arm here
                got.append(scores[c.key])
        decided = design.look(k, have)
        still = sum(d.verdict == "open" for d in design.decisions.values())
        _say(
            f"look {k + 1} at {seeds} seeds (alpha {design.levels[k]:.2g} over "
            f"{len(design.decisions)} comparison{'s' if len(design.decisions) != 1 else ''}): "
            + ("; ".join(f"{d.comparison.name} {d.verdict} ({d.difference:+.1f} "
                         f"[{d.low:+.1f}, {d.high:+.1f}])" for d in decided) or "nothing decided")
            + f"; {still} open"
        )  # fmt: skip
    record = {
        "policy": dataclasses.asdict(policy),
        "epsilon": epsilon,
        "alpha": design.alpha,
        "how": "per-seed t interval of the paired difference (points); each look spends alpha "
        "by the O'Brien-Fleming-type function, split equally over the comparisons; differs: "
        "the interval excludes 0; equivalent: the interval at twice that level lies inside "
        "+-epsilon",
        "decisions": [
            {
                "comparison": name,
                "verdict": d.verdict,
                "seeds": d.seeds,
                "look": None if d.look is None else d.look + 1,
                "difference": d.difference,
                "low": d.low,
                "high": d.high,
                "alpha": d.level,
            }
            for name, d in design.decisions.items()
        ],  # fmt: skip
        "cells_run": ran,
        "fixed_cells": len(grid),
    }
    return failed, ran, record


def _grid_text(grid: list[CellSpec]) -> str:
    methods = sorted({c.method for c in grid})
    budgets = sorted({c.budget for c in grid if c.method != "full"})
    seeds = sorted({c.seed for c in grid})
    return (
        f"{', '.join(methods)} x budgets {', '.join(f'{b:g}' for b in budgets)} x "
        f"{len(seeds)} seeds (full data once per seed)"
    )


def _hours(h: float) -> str:
    """A duration as people say it: seconds under a minute ("0 min" read as nothing left)."""
    h = max(0.0, h)
    if h * 60 < 1:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def _plan(spec: StudySpec, cell_ops, split, proxy, store, grid) -> dict:
    """The study's id, its store, and each recipe its cells would have: per tuning point, the
    validation recipe (the grid's cells) and the reported one (had that point been chosen)."""
    from .core.stages.study import recipe_id

    def recipes(ops: dict) -> dict:
        run, opts, eval_opts, numerics = _cell_settings(ops, split, proxy, store)
        judge = _judge(ops, split)
        return {"validation": recipe_id(run, opts, eval_opts, "validation", numerics),
                judge: recipe_id(run, opts, eval_opts, judge, numerics)}  # fmt: skip

    points = spec.tuning.points() if spec.tuning else [{}]
    return {
        "study_id": split.study_id,
        "spec_id": spec.spec_id,
        "artifact_root": store.root,
        "judge": _judge(cell_ops, split),
        "cells": [c.key for c in grid],
        "tuning_cells": _tuning_keys(spec) if spec.tuning else [],
        "recipes": [{"settings": p, **recipes(_with_settings(cell_ops, p))} for p in points],
    }


def _tuning_keys(spec: StudySpec) -> list[str]:
    t = spec.tuning
    return [CellSpec(t.arm, spec.tuning_budget, s).key for s in range(t.seeds)]


def _with_settings(cell_ops: dict, values: dict, judge: str | None = None) -> dict:
    """study_cells' config with these recipe settings (and judge) in place."""
    config = dict(cell_ops.get("study_cells", {}).get("config", {}))
    config.update(values)
    if judge is not None:
        config["judge"] = judge
    return {**cell_ops, "study_cells": {**cell_ops.get("study_cells", {}), "config": config}}


def _judge(cell_ops: dict, split) -> str:
    from .defs.study import StudyCellConfig

    config = cell_ops.get("study_cells", {}).get("config", {})
    return StudyCellConfig(**config).judge_of(split)


def _tune(spec: StudySpec, cell_ops, split, proxy, store, parallel, instance, cell_job):
    """The spec's grid on the validation split only: each point's cells (the tuning arm at
    its budget), then the point with the best mean endpoint (ties: the lower NLL). The choice
    and every point's scores, or None when a cell failed."""
    t = spec.tuning
    keys = _tuning_keys(spec)
    points = []
    for values in t.points():
        ops = _with_settings(cell_ops, values, judge="validation")
        find = _finder(split, _cell_settings(ops, split, proxy, store), store, spec, "validation")
        todo = [parse_cell_key(k) for k in keys if find(k) is None]
        label = ", ".join(f"{k} {v:g}" for k, v in values.items())
        _say(f"tuning on validation ({label}): {len(todo)} of {len(keys)} cells to run")
        seconds = {c.key: 0.0 for c in todo}
        failed = _run_cells(todo, ops, parallel, seconds, instance, find, split, cell_job)
        if failed:
            _say(f"tuning cell(s) {', '.join(failed)} failed: no choice is made; rerun the "
                 "command (finished cells are kept)")  # fmt: skip
            return None
        cells = [find(k) for k in keys]
        score = sum(c.endpoint_score(spec.endpoint) for c in cells) / len(cells)
        nll = sum(c.nll for c in cells) / len(cells)
        points.append({**values, "validation_score": score, "validation_nll": nll})
    best = max(points, key=lambda p: (p["validation_score"], -p["validation_nll"]))
    chosen = {k: best[k] for k in t.grid}
    edge = [k for k, v in chosen.items() if len(t.grid[k]) > 1 and v in _ends(t.grid[k])]
    _say(
        "chosen on validation: " + ", ".join(f"{k} {v:g}" for k, v in chosen.items())
        + f" ({spec.endpoint} {100 * best['validation_score']:.1f})"
        + (f"; at the edge of its grid: {', '.join(edge)} (widen the grid)" if edge else "")
    )  # fmt: skip
    return {"chosen": chosen, "points": points, "arm": t.arm, "budget": spec.tuning_budget,
            "seeds": t.seeds, "at_grid_edge": edge, "judge": "validation"}  # fmt: skip


def _ends(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def _cell_settings(cell_ops: dict, split, proxy, store):
    """The cells' config as the asset will see it: (run, selection options, eval options,
    numerics)."""
    from .core.stages.selection import selection_options
    from .core.support.tables import read_table
    from .defs.study import StudyCellConfig

    cfg = StudyCellConfig(**cell_ops.get("study_cells", {}).get("config", {}))
    from .core.stages.manifests import ClustersManifest, read_manifest

    clusters = read_manifest(store, ClustersManifest, "trajectory_clusters")
    traj = read_table(split.trajectories, store)
    opts = selection_options(clusters, proxy, traj, **cfg.selection_changes())
    return cfg.to_run(), opts, cfg.eval_options(), cfg.numerics()


def _finder(split, settings, store, spec: StudySpec, judge: str):
    """key -> the cell's result record with this split, these settings, this judge and its
    arm's options (None: not finished). The records in the store decide, not the Dagster
    instance, whose latest materialization of a key may be another arm's of the same name."""
    from .core.stages import study as stage

    run, opts, eval_opts, numerics = settings
    recipe = stage.recipe_id(run, opts, eval_opts, judge, numerics)

    def find(key: str):
        arm = spec.arm(parse_cell_key(key).method)
        return stage.cached_cell(split, recipe, key, store, arm.options if arm else None)

    return find


def _pending(grid, find) -> tuple[list[CellSpec], list[CellSpec]]:
    """(cells to run, cells finished before)."""
    todo, done = [], []
    for cell in grid:
        (done if find(cell.key) is not None else todo).append(cell)
    return todo, done


def _measure(split, proxy, settings, store) -> StepTimes:
    """Step times of this study's target and evaluation, measured on its own rows."""
    from .core.selection.ifd import response_losses
    from .core.study.estimate import measure_eval_row, measure_train_step
    from .core.support.tables import read_table

    run, _, eval_opts, _ = settings
    rows = read_table(split.train, store)
    tokenizer_dir = store.fetch_dir(proxy.checkpoints[0].uri)
    step = measure_train_step(run, rows, tokenizer_dir)
    proxy_dir = store.fetch_dir(proxy.final.uri)
    validation = read_table(split.validation, store)
    eval_row = measure_eval_row(
        proxy_dir, validation, eval_opts.max_new_tokens, eval_opts.max_length,
        eval_opts.batch_size,
    )  # fmt: skip
    sample = rows.head(64)
    found = response_losses(proxy_dir, sample, proxy.train.max_length)
    return StepTimes(
        train_step_s=step,
        eval_row_s=eval_row,
        proxy_row_s=found.cpu_seconds / max(1, sample.height),
        rows_per_step=run.train.batch_size * run.train.grad_accum,
        epochs=run.train.epochs,
    )


def _cell_command(key: str, config_path: Path) -> list[str]:
    from .defs.recovery import owner_tags

    tags = {"dagster/partition": key, **owner_tags()}
    return [
        str(Path(sys.executable).with_name("dagster")),
        "job", "execute", "-m", "s2l_pipeline.definitions", "-j", CELL_JOB,
        "--tags", json.dumps(tags), "-c", str(config_path),
    ]  # fmt: skip


def cells_here(parallel: int) -> bool:
    """Cells run in this process: one at a time on the in-process executor."""
    from .defs.executors import active_executor

    return parallel == 1 and active_executor() == "in_process"


class _Progress:
    """The line per finished cell: its score and the time left, the estimate rescaled by what
    the finished cells really took."""

    def __init__(self, todo: list[CellSpec], seconds: dict[str, float], parallel: int, find,
                 instance, logs: Path) -> None:  # fmt: skip
        self.total, self.seconds, self.parallel = len(todo), seconds, parallel
        self.find, self.instance, self.logs = find, instance, logs
        self.left = sum(seconds[c.key] for c in todo)
        self.finished, self.estimated_done, self.took_done = 0, 0.0, 0.0
        self.failed: list[str] = []

    def done(self, key: str, returned_ok: bool, took: float, waiting: int) -> None:
        self.finished += 1
        self.left -= self.seconds[key]
        self.estimated_done += self.seconds[key]
        self.took_done += took
        cell = self.find(key)
        ok = returned_ok and cell is not None
        lanes = max(1, min(self.parallel, waiting))
        eta = max(0.0, self.left) * self.took_done / max(self.estimated_done, 1e-9) / lanes
        where = f"{self.finished}/{self.total}"
        if ok:
            _say(
                f"cell {where} {key}: {cell.metric} {100 * cell.score:.1f}, NLL "
                f"{cell.nll:.3f}, {cell.rows} rows, {took:.0f} s; about "
                f"{_hours(eta / 3600)} left"
            )
        else:
            self.failed.append(key)
            _say(
                f"cell {where} {key} FAILED: {_cell_failure(self.instance, key)} "
                f"(log: {self.logs / (key + '.log')})"
            )


def _run_cells(todo, cell_ops, parallel, seconds, instance, find, split, cell_job) -> list[str]:
    """Each cell a run of study_cells_job, at most ``parallel`` at once; a line per finished
    cell with its score and the time left. Returns the cells that failed."""
    from .defs.resources import data_dir

    if not todo:
        return []
    logs = Path(data_dir()).resolve() / "study_logs" / split.study_id
    logs.mkdir(parents=True, exist_ok=True)
    progress = _Progress(todo, seconds, parallel, find, instance, logs)
    if cells_here(parallel):
        _run_cells_here(todo, cell_ops, cell_job, instance, logs, progress)
    else:
        _run_cells_apart(todo, cell_ops, parallel, logs, progress)
    return progress.failed


def _run_cells_here(todo, cell_ops, cell_job, instance, logs: Path, progress: _Progress) -> None:
    """One cell at a time on the in-process executor: each its own run, in this process, which
    has torch and the code location loaded already. A new process per cell spent about 11 s
    importing them, where a tiny cell trains and judges in 1-2 (docs/benchmarks.md)."""
    from .console import cell_log
    from .defs.recovery import owner_tags

    job = cell_job.with_logger_defs({"cell_log": cell_log})
    for i, cell in enumerate(todo):
        _say(f"cell {cell.key} started")
        log = logs / f"{cell.key}.log"
        config = {"ops": cell_ops, "loggers": {"cell_log": {"config": {"path": str(log)}}}}
        t0 = time.monotonic()
        result = job.execute_in_process(
            run_config=config, instance=instance, partition_key=cell.key, tags=owner_tags(),
            raise_on_error=False,
        )  # fmt: skip
        if _interrupted(result):  # Dagster turned Ctrl-C into this run's failure
            raise KeyboardInterrupt
        progress.done(cell.key, result.success, time.monotonic() - t0, len(todo) - i - 1)


def _interrupted(result) -> bool:
    """Whether Ctrl-C ended the run: in a step (its failure), or before any step started,
    while the run's resources were set up (the run's own failure)."""
    import dagster as dg

    errors = [e.step_failure_data.error for e in result.get_step_failure_events()]
    errors += [
        e.event_specific_data.error
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.RUN_FAILURE and e.event_specific_data is not None
    ]
    names = {c.cls_name for e in errors if e is not None for c in (e, e.cause) if c is not None}
    return bool(names & {"DagsterExecutionInterruptedError", "KeyboardInterrupt"})


def _run_cells_apart(todo, cell_ops, parallel, logs: Path, progress: _Progress) -> None:
    """Each cell a `dagster job execute` on the deployment's executor, ``parallel`` at once."""
    config_path = logs / "cells.yaml"
    config_path.write_text(yaml.safe_dump({"ops": cell_ops} if cell_ops else {}))
    queue, running = list(todo), {}
    try:
        while queue or running:
            while queue and len(running) < parallel:
                cell = queue.pop(0)
                log = (logs / f"{cell.key}.log").open("w")
                proc = subprocess.Popen(
                    _cell_command(cell.key, config_path), stdout=log, stderr=subprocess.STDOUT
                )
                running[cell.key] = (proc, time.monotonic(), log)
                _say(f"cell {cell.key} started")
            time.sleep(0.5)
            for key, (proc, t0, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[key]
                progress.done(key, proc.returncode == 0, time.monotonic() - t0,
                              len(queue) + len(running))  # fmt: skip
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def _cell_failure(instance, key: str) -> str:
    """Why the latest run of this cell failed (its step's error), from the instance."""
    import dagster as dg

    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=CELL_JOB, tags={"dagster/partition": key}), limit=1
    )
    if not runs:
        return "its run did not start"
    for rec in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        return failure_reason(rec.dagster_event.step_failure_data)
    return f"run {runs[0].run_id} ended {runs[0].status.value}"


def add_parser(sub) -> None:
    st = sub.add_parser(
        "study",
        help="will selection help on this data, and how much of it is needed: a grid of "
        "(method, budget, seed) cells judged on a validation split, and a report",
    )
    st.add_argument(
        "--spec",
        help="a study spec (YAML): data, target, arms, budgets, seeds, endpoint, comparisons, "
        "epsilon; the flags below are its shorthand for a one-off study",
    )
    st.add_argument("--methods", help="comma-separated, e.g. s2l,random,longest (s2l,random)")
    st.add_argument("--budgets", help="fractions of the pool (0.05,0.1,0.2,0.4)")
    st.add_argument(
        "--seeds",
        help="seeds per (method, budget): a count (3), or MIN:MAX:EVERY to "
        "look every EVERY seeds and stop what is decided (group-sequential, e.g. 5:30:5)",
    )
    st.add_argument("--epsilon", type=float, help="points 'within full data' allows (1.0)")
    st.add_argument("--parallel", type=int, help="cells at once (default: S2L_GPUS under "
                    "multiprocess, else 1)")  # fmt: skip
    st.add_argument("--max-hours", type=float, default=8.0, help="refuse a longer estimate")
    st.add_argument("--go-past-max-hours", action="store_true", help="run past --max-hours")
    st.add_argument("--profile", choices=sorted(PROFILES), help="scale (default: S2L_PROFILE)")
    st.add_argument("--config", help="YAML run config, as s2l run's (study_cells: the target)")
    st.add_argument("--data", action="append", help="a training file (as s2l run)")
    st.add_argument("--fields", help="templates mapping the --data records, as JSON")
    st.add_argument("--task", choices=["math", "summarization"], help="task of the --data files")
    st.add_argument("--verbose", action="store_true", help="every Dagster event")
    st.add_argument(
        "--plan",
        action="store_true",
        help="prepare the proxy and the split, print the study's id, cells and recipes (where "
        "their records go) as JSON, and run no cell",
    )
    st.set_defaults(func=cmd_study, eval=None, budget=None, method=None)
