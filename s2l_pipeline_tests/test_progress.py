"""Progress lines: a bar, counts, note, elapsed and ETA; throttled; nothing for quick jobs."""

from __future__ import annotations

import time

from s2l_pipeline.core.support.progress import Progress, clock


def test_line_shows_bar_counts_note_and_eta() -> None:
    bar = Progress("training", 400, "steps", emit=lambda _: None)
    line = bar.line(100, "loss 2.3100", now=bar._start + 30)
    assert (
        line == "training [#####---------------] 100/400 steps 25% · loss 2.3100 · 0:30 · ETA 1:30"
    )
    done = bar.line(400, now=bar._start + 3725)
    assert done.endswith("100% · 1:02:05") and "ETA" not in done


def test_resumed_work_is_not_counted_in_the_rate() -> None:
    bar = Progress("training", 400, "steps", emit=lambda _: None, start_done=300)
    assert bar.line(350, now=bar._start + 10).endswith("ETA 0:10")  # 50 steps in 10 s, 50 left


def test_throttled_and_quiet_for_quick_jobs() -> None:
    lines: list[str] = []
    quick = Progress("scoring", 10, "rows", lines.append, every_s=60)
    for i in range(1, 11):
        quick.update(i)
    assert lines == []  # done in well under two seconds: nothing to follow
    slow = Progress("scoring", 3, "rows", lines.append, every_s=0.05, quiet_below_s=0.0)
    slow.update(1)  # too soon after the start
    time.sleep(0.06)
    slow.update(2)
    slow.update(3)  # the end always speaks once something was said
    assert [line.split(" · ")[0] for line in lines] == [
        "scoring [#############-------] 2/3 rows 67%",
        "scoring [####################] 3/3 rows 100%",
    ]
    assert clock(59.6) == "1:00" and clock(3600) == "1:00:00"
