"""Progress a person can follow in a log: one line with a bar, counts, a note, elapsed and ETA.

Lines go to a callback (the step log, so the Dagster UI and `s2l run` show the same text), at
most every ``every_s`` seconds and always at the end; no terminal control codes, since a log
is not a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def clock(seconds: float) -> str:
    """1:05 or 1:02:03."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Progress:
    """``label [#####-----] 120/400 steps 30% · loss 2.31 · 0:42 · ETA 1:38``."""

    label: str
    total: int
    unit: str
    emit: Callable[[str], None]
    every_s: float = 10.0
    width: int = 20
    start_done: int = 0  # already done before this process (a resumed run): not in the rate
    quiet_below_s: float = 2.0  # a job done quicker than this says nothing (no noise)
    _start: float = field(default_factory=time.monotonic)
    _last: float | None = None
    _said: bool = False

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        since = now - (self._start if self._last is None else self._last)
        if done >= self.total:
            if not self._said and now - self._start < self.quiet_below_s:
                return
        elif since < self.every_s:
            return
        self._last, self._said = now, True
        self.emit(self.line(done, note, now))

    def line(self, done: int, note: str = "", now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        frac = min(1.0, done / self.total) if self.total else 1.0
        filled = round(frac * self.width)
        parts = [
            f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] "
            f"{done}/{self.total} {self.unit} {frac:.0%}"
        ]
        if note:
            parts.append(note)
        elapsed = now - self._start
        parts.append(clock(elapsed))
        rate_done = done - self.start_done
        if rate_done > 0 and done < self.total:
            parts.append(f"ETA {clock(elapsed * (self.total - done) / rate_done)}")
        return " · ".join(parts)
