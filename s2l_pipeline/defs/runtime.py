"""How long steps behave inside a Dagster run: stop when canceled, retry errors, not interrupts.

Dagster's ``RetryPolicy`` also retries a step interrupted by a cancel (it turns the interrupt
into a retry), so a canceled run keeps training. Long steps therefore carry no retry policy;
``retried_on_error`` asks for a retry on ordinary exceptions only, and ``cancel_probe`` lets
core loops notice a cancel (even a forced one, which sends no signal) within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from ..core.lm.train_config import TrainHooks

STOPPING = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


def cancel_probe(context, every_s: float = 2.0) -> Callable[[], bool]:
    """True once this run is being canceled; asks the instance at most every ``every_s``."""
    last = [0.0, False]

    def canceled() -> bool:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            run = context.instance.get_run_by_id(context.run_id)
            last[1] = run is None or run.status in STOPPING
        return bool(last[1])

    return canceled


def training_hooks(context, tracker) -> TrainHooks:
    """Losses to MLflow, messages to the step log, cancel from the instance."""
    return TrainHooks(
        on_log=lambda logs, step: tracker.log_metrics(logs, step),
        on_message=context.log.info,
        should_stop=cancel_probe(context),
    )


@contextmanager
def retried_on_error(max_retries: int = 2, delay_s: float = 5) -> Iterator[None]:
    """Retry the step on an exception; a Failure or an interrupt (cancel) goes through as it is."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        raise dg.RetryRequested(max_retries=max_retries, seconds_to_wait=delay_s) from exc
