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
        self.failed_checks: set[str] = set()  # steps whose check failed: not a plain success
        self.not_run: list[str] = []  # steps skipped because one before them failed

    def line(self, record: logging.LogRecord) -> str | None:
        meta = getattr(record, LOG_META, None) or {}
        step = meta.get("step_key")
        event = meta.get("dagster_event")
        kind = event.event_type_value if event is not None else None
        now = time.monotonic()
        if kind == "STEP_START":
            self.started[step] = now
            return f"▶ {step}"
        if kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if evaluation.passed:
                return None
            self.failed_checks.add(step)
            return check_failure_line(evaluation)
        if kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            took = clock(now - self.started.get(step, now))
            mark = {"STEP_SUCCESS": "✓", "STEP_FAILURE": "✗", "STEP_SKIPPED": "-"}[kind]
            if kind == "STEP_SUCCESS" and step in self.failed_checks:
                mark = "⚠"
            return f"{mark} {step} ({took})"
        if kind == "STEP_UP_FOR_RETRY":
            return f"↻ {step}: retrying"
        if event is None and record.levelno >= logging.INFO:
            text = meta.get("orig_message", record.getMessage())
            if text.startswith("Dependencies for step "):  # the failed step's line says why
                self.not_run.append(step)
                return None
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


def key_numbers(metadata: dict) -> dict[str, float | int]:
    """The plain numbers among a check's metadata (counts, shares), for a one-line summary."""
    out = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            out[key] = round(raw, 4) if isinstance(raw, float) else raw
    return out


def check_failure_line(evaluation) -> str:
    """One line for a failed asset check: name, asset, severity, what it found, its numbers."""
    numbers = ", ".join(f"{k}={v}" for k, v in key_numbers(dict(evaluation.metadata)).items())
    return (
        f"⚠ check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} FAILED "
        f"({evaluation.severity.value}): {evaluation.description or 'no description'}"
        + (f" [{numbers}]" if numbers else "")
    )


def failed_checks(evaluations, descriptions: dict[str, str]) -> list[dict]:
    """Every failed check evaluation of a run, as the JSON summary lists them."""
    return [
        {
            "check": e.check_name,
            "asset": e.asset_key.to_user_string(),
            "severity": e.severity.value,
            "check_description": descriptions.get(e.check_name, ""),
            "found": e.description,
            "numbers": key_numbers(dict(e.metadata)),
        }
        for e in evaluations
        if not e.passed
    ]


@dg.logger(description="One line per step with its time; the steps' messages under it.")
def step_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("s2l.run", level=logging.DEBUG)
    logger.addHandler(StepLines(sys.stderr))
    return logger


class _AppendToFile(logging.Handler):
    """Every event of a run into one file, opened per record so no descriptor outlives it."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.DEBUG)
        self.path = path
        self.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        open(path, "w").close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(self.format(record) + "\n")
        except Exception:  # a log line must never fail the run
            self.handleError(record)


@dg.logger(
    config_schema={"path": str},
    description="Every event of a study cell run in this process, to the cell's log file.",
)
def cell_log(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("s2l.cell", level=logging.DEBUG)
    logger.addHandler(_AppendToFile(init_context.logger_config["path"]))
    return logger
