"""How the suite splits over xdist workers (``pytest -n 3`` on two cores: the live tests wait on
the processes they start, so a third worker keeps both cores busy).

A unit of work is a module, so its module fixtures (a `dagster dev`, a Ray head, an MLflow
server) start once; every module that reads the session's tiny graph is one unit, so one worker
materializes it. Units go out longest first (live, then slow, then the rest), so the
workers finish together instead of one waiting on a late live test.

xdist's own ``loadgroup`` renames node ids to group them, which pytest 9 ignores; a scheduler
that chooses the units itself does not depend on that.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

TESTS = Path(__file__).parent
TINY_GRAPH = "tiny graph"
_USES_TINY_GRAPH = re.compile(r"def \w+\([^)]*\btiny_(graph|graph_copy|run)\b")
# Rough seconds a test costs by its markers, and for the long modules their measured seconds
# (a whole suite at -n 3 on two cores, 2026-12-07): only the order of units depends on them. A
# long module ranked by its markers alone started last and kept one worker busy 80 s after the
# others had finished.
_COST = {"live": 120.0, "slow": 15.0}
MODULE_SECONDS = {
    "test_live_stack.py": 405.0,
    "test_live_ray.py": 265.0,  # and its OWN_UNIT test, 75 s
    "test_gguf.py": 285.0,
    "test_live_dev.py": 275.0,
    "test_live_crash.py": 270.0,
    "test_study.py": 255.0,
    "test_cli.py": 155.0,
    "test_benchmarks.py": 90.0,
    "test_study_judges.py": 85.0,
    "test_study_spec.py": 135.0,
    "test_live_stopping.py": 105.0,
    "test_training.py": 95.0,
    "test_readme.py": 75.0,
    "test_sequential.py": 70.0,
}


def tiny_graph_modules() -> set[str]:
    """Test modules whose tests take the shared tiny graph (or a fixture built on it)."""
    return {p.name for p in TESTS.glob("test_*.py") if _USES_TINY_GRAPH.search(p.read_text())}


# Tests of a module with shared fixtures that use none of them: a unit of their own.
OWN_UNIT = {"test_live_ray.py::test_study_cells_run_two_at_a_time_each_on_its_own_gpu"}


def unit_of(nodeid: str, tiny: set[str]) -> str:
    module, _, name = nodeid.partition("::")
    if f"{Path(module).name}::{name}" in OWN_UNIT:
        return nodeid
    return TINY_GRAPH if Path(module).name in tiny else module


def cost(item: pytest.Item) -> float:
    return max([_COST[m.name] for m in item.iter_markers() if m.name in _COST], default=1.0)


def longest_units_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place so units with the most expected seconds come first; tests
    keep their order inside a unit (a module may depend on it). Every worker gets the same."""
    tiny = tiny_graph_modules()
    by_part: dict[tuple[str, str], float] = {}  # (unit, module): expected seconds
    for item in items:
        part = (unit_of(item.nodeid, tiny), item.nodeid.split("::", 1)[0])
        by_part[part] = by_part.get(part, 0.0) + cost(item)
    total: dict[str, float] = {}
    for (unit, module), seconds in by_part.items():
        if unit in (module, TINY_GRAPH):
            seconds = MODULE_SECONDS.get(Path(module).name, seconds)
        total[unit] = total.get(unit, 0.0) + seconds
    rank = {unit: i for i, unit in enumerate(sorted(total, key=lambda u: (-total[u], u)))}
    items.sort(key=lambda item: rank[unit_of(item.nodeid, tiny)])


class UnitScheduling(LoadScopeScheduling):
    """LoadScopeScheduling over our units, in the order the workers collected them."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        self._tiny = tiny_graph_modules()
        config.option.loadscopereorder = False  # keep longest_units_first's order

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid, self._tiny)
