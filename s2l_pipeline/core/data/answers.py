"""Reference final answers pulled out of worked solutions (GSM8K, MATH, MathInstruct styles)."""

from __future__ import annotations

import re
from collections.abc import Sequence

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


# What kind of answer a set has (eval_sets detects it; core/evaluation reads and judges each kind).
ANSWER_TYPES = ("number", "choice", "math", "text")
# A reference that is only a letter: "D", "(d)", "D)", "[C]".
REFERENCE_LETTER = re.compile(r"^\s*[\(\[]?\s*([A-Ja-j])\s*[\)\]]?\s*[\.:]?\s*$")
# Answers written as a labelled option: "A) 12", "(B) 45 km", "Option C".
LABELLED_OPTION = re.compile(
    r"^\s*(?:(?i:option)\s+)?[\(\[]?([A-Ja-j])[\)\]](?:\s.*)?$|^\s*(?i:option)\s+([A-J])\s*$"
)
NUMERIC = re.compile(r"^\s*-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?\s*$")
LATEX = re.compile(r"[\\^{}_]|sqrt|frac|\bpi\b")


class AnswerPatternError(ValueError):
    """An answer_pattern that is not a regex with exactly one group."""


def compile_pattern(pattern: str | None, where: str = "answer_pattern") -> re.Pattern | None:
    if not pattern:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise AnswerPatternError(f"{where}: {pattern!r} is not a regex ({exc})") from exc
    if rx.groups != 1:
        raise AnswerPatternError(f"{where}: {pattern!r} needs exactly one group, has {rx.groups}")
    return rx


def detect_answer_type(answers: Sequence[str | None]) -> str:
    """choice when (nearly) every answer is a letter, number when a number, math when any
    looks like LaTeX or mixes with numbers, else text."""
    given = [a.strip() for a in answers if a and a.strip()]
    if not given:
        return "math"

    def share(rx: re.Pattern) -> float:
        return sum(bool(rx.match(a)) for a in given) / len(given)

    letters = [bool(REFERENCE_LETTER.match(a) or LABELLED_OPTION.match(a)) for a in given]
    if sum(letters) / len(given) >= 0.95:
        return "choice"
    if share(NUMERIC) >= 0.95:
        return "number"
    if any(LATEX.search(a) for a in given) or share(NUMERIC) >= 0.5:
        return "math"
    return "text"
