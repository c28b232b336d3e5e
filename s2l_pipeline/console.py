"""What `s2l run` prints: a line when a step starts and one when it ends, with its time; the
steps' own messages (progress bars, counts) under the step; failures with their reason. Every
Dagster event only with ``--verbose`` (Dagster's own console logger then)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import dagster as dg

from .core.support.progress import clock

LOG_META = "dagster_meta"


class StepLines(logging.Handler):
    """Turns Dagster's log records into the lines a person follows."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.started: dict[str, float] = {}

    def line(self, record: logging.LogRecord) -> str | None:
        meta = getattr(record, LOG_META, None) or {}
        step = meta.get("step_key")
        event = meta.get("dagster_event")
        kind = event.event_type_value if event is not None else None
        now = time.monotonic()
        if kind == "STEP_START":
            self.started[step] = now
            return f"▶ {step}"
        if kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            took = clock(now - self.started.get(step, now))
            mark = {"STEP_SUCCESS": "✓", "STEP_FAILURE": "✗", "STEP_SKIPPED": "-"}[kind]
            return f"{mark} {step} ({took})"
        if kind == "STEP_UP_FOR_RETRY":
            return f"↻ {step}: retrying"
        if event is None and record.levelno >= logging.INFO:
            text = meta.get("orig_message", record.getMessage())
            return f"  {step}: {text}" if step else f"  {text}"
        return None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.line(record)
            if text is not None:
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:  # a log line must never fail the run
            self.handleError(record)


@dg.logger(description="One line per step with its time; the steps' messages under it.")
def step_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("s2l.run", level=logging.DEBUG)
    logger.addHandler(StepLines(sys.stderr))
    return logger
