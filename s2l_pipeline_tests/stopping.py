"""Stopped means stopped: a test run that is interrupted leaves no process it started.

Every pytest process (the controller and each xdist worker) adds a mark of its own to
``PYTEST_RUN_MARKS`` in its environment, which every process it starts inherits, including the
ones that detach (``infra/stack up``'s services, PostgreSQL under ``runuser``, Ray's workers).
SIGTERM and SIGHUP become KeyboardInterrupt, so pytest tears fixtures down as on Ctrl-C; then
``sweep`` ends whatever still carries this process's mark, whichever way it was started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import psutil

MARK = "PYTEST_RUN_MARKS"  # not S2L_*: deployment_env drops those


def mark_this_process() -> str:
    """A new mark for this pytest process, added to the ones it inherited."""
    mark = uuid.uuid4().hex[:12]
    inherited = os.environ.get(MARK)
    os.environ[MARK] = f"{inherited}:{mark}" if inherited else mark
    return mark


def marked(mark: str) -> list[psutil.Process]:
    """Live processes carrying ``mark``, never this process or its ancestors."""
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter():
        if proc.pid in spared:
            continue
        try:
            marks = proc.environ().get(MARK, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if mark in marks.split(":"):
            found.append(proc)
    return found


def sweep(mark: str, timeout: float = 15, grace: float = 5) -> list[str]:
    """SIGTERM every process carrying ``mark``, SIGKILL those alive after ``timeout``; the
    command lines of what was found (empty when the tests had stopped all they started).
    Processes ending by themselves within ``grace`` are not counted: a multiprocess run's
    forkserver leaves a moment after the run does (on the EOF of its parent's pipe)."""
    procs = marked(mark)
    if procs:
        _, procs = psutil.wait_procs(procs, timeout=grace)
    names = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return names


def interrupt_on_termination(forward_to_children: bool) -> None:
    """SIGTERM, SIGHUP and SIGINT raise KeyboardInterrupt once (later ones are ignored while
    fixtures tear down, every wait there being bounded); an xdist controller first passes the
    signal on to its workers, which tear down their own fixtures."""

    def handler(signum: int, _frame) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if forward_to_children:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error):
                    child.send_signal(signal.SIGTERM)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, handler)
