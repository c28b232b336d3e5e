"""Reference final answers pulled out of worked solutions (GSM8K, MATH, MathInstruct styles)."""

from __future__ import annotations

import re

_GSM8K = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is:?\s*(.+?)\s*\.?\s*$")


def gsm8k_answer(solution: str) -> str | None:
    """The line after the last '####', thousands separators removed ('1,200' -> '1200')."""
    if "####" not in solution:
        return None
    tail = solution.rsplit("####", 1)[1].strip()
    tail = tail.splitlines()[0].strip() if tail else ""  # a generation may run on after it
    return tail.replace(",", "") if tail else None


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (or \fbox{...}), with nested braces matched."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        # "\boxed 5" form
        rest = text[start:].split(None, 1)
        return rest[1].split("$")[0].strip() if len(rest) > 1 else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def answer_is(text: str) -> str | None:
    """'The answer is: X' at the end of a MathInstruct-style solution."""
    last = text.strip().splitlines()[-1] if text.strip() else ""
    m = _ANSWER_IS.search(last)
    return m.group(1).strip() if m else None


def final_answer(solution: str) -> str | None:
    """Best-effort reference answer from any math solution style we know; None if there is none."""
    return gsm8k_answer(solution) or last_boxed(solution) or answer_is(solution)
