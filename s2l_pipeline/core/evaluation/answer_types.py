"""What kind of answer a set has, and how a generated answer of that kind is read and judged.

Last-number extraction marks a multiple-choice rationale ("... = 45 m. Answer: D") wrong, or
right by accident: scored against itself, such a reference was judged correct 8% of the time.
Each set therefore has an answer type (given, or detected from its answers) and optionally a
pattern (a regex with one group) that says where the answer is in a generation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from ..data.answers import final_answer, last_boxed
from ..data.schema import REASONING_GYM as REASONING_GYM  # the family's own scorer

ANSWER_TYPES = ("number", "choice", "math", "text")

_KEY = r"(?:answer|ans\.?|option|choice)"
_FILLER = r"(?:\s+(?i:is|would\s+be|will\s+be|should\s+be|choice|option|:))*"
# "Answer: D", "Answer D", "Correct answer - A", "ANSWER:C", "The answer is (B)", "option C",
# "answer is [E]"; a lower-case letter only in brackets ("(c)"), so "the answer is a ..." is no
# choice.
_CHOICE = re.compile(
    rf"(?i:{_KEY}){_FILLER}\s*[:\-=–—]*\s*"
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]|([A-J])(?![A-Za-z0-9]))"
)
# A bare letter as the whole line: "C", "(C)", "C)", "C.", "(C) 42" at a line's start.
_BARE = re.compile(r"^\s*\(?([A-J])(?:\)|\.|:)?(?:\s|$)")
_REFERENCE = re.compile(r"^\s*[\(\[]?\s*([A-Ja-j])\s*[\)\]]?\s*[\.:]?\s*$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_NUMERIC = re.compile(r"^\s*-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?\s*$")
_LATEX = re.compile(r"[\\^{}_]|sqrt|frac|\bpi\b")


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


def extract_choice(text: str) -> str | None:
    """The option letter a rationale or generation settles on, upper case; None if none."""
    text = text.strip()
    if not text:
        return None
    found = list(_CHOICE.finditer(text))
    if found:
        m = found[-1]
        return next(g for g in m.groups() if g).upper()
    boxed = last_boxed(text)
    if boxed and _REFERENCE.match(boxed):
        return _REFERENCE.match(boxed).group(1).upper()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in (lines[-1], lines[0]):
        m = _BARE.match(line)
        if m:
            return m.group(1)
    return None


def reference_choice(answer: str) -> str | None:
    """A reference answer as a letter: 'D', '(d)', 'D)' -> 'D'; else as a generation."""
    m = _REFERENCE.match(answer or "")
    return m.group(1).upper() if m else extract_choice(answer or "")


def detect_answer_type(answers: Sequence[str | None]) -> str:
    """choice when (nearly) every answer is a letter, number when a number, math when any
    looks like LaTeX or mixes with numbers, else text."""
    given = [a.strip() for a in answers if a and a.strip()]
    if not given:
        return "math"

    def share(rx: re.Pattern) -> float:
        return sum(bool(rx.match(a)) for a in given) / len(given)

    if share(_REFERENCE) >= 0.95:
        return "choice"
    if share(_NUMERIC) >= 0.95:
        return "number"
    if any(_LATEX.search(a) for a in given) or share(_NUMERIC) >= 0.5:
        return "math"
    return "text"


def _pattern_pick(rx: re.Pattern, text: str) -> str | None:
    found = rx.findall(text)
    return found[-1].strip() if found else None


def _normalized_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s/.-]", " ", text)
    return " ".join(text.split()).strip(" .")


def extract_answer(generated: str) -> str:
    """The final answer in a generated solution; a bare short answer is returned as it is."""
    text = generated.strip()
    found = final_answer(text)
    if found:
        return found.strip()
    if "\n" not in text and len(text) <= 40:
        return text
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else text


def predicted_answer(answer_type: str, generated: str, pattern: re.Pattern | None = None) -> str:
    """What a generation answers, read the way its set's answer type asks ('' if nothing)."""
    if pattern is not None:
        picked = _pattern_pick(pattern, generated)
        if picked is None:
            return ""
        generated = picked
    if answer_type == "choice":
        return extract_choice(generated) or ""
    if answer_type == "text":
        if pattern is not None:
            return generated
        lines = generated.strip().splitlines()
        return final_answer(generated) or (lines[-1] if lines else "")
    found = extract_answer(generated)
    if answer_type == "number":
        numbers = _NUMBER.findall(found)
        return numbers[-1].replace(",", "") if numbers else ""
    return found


def equivalent(answer_type: str, predicted: str, reference: str) -> bool:
    """Is ``predicted`` the ``reference`` answer, judged by the answer type?"""
    if not predicted or not reference:
        return False
    if answer_type == "choice":
        return predicted.upper() == (reference_choice(reference) or "")
    if answer_type == "text":
        return _normalized_text(predicted) == _normalized_text(reference)
    if predicted.strip() == reference.strip():
        return True
    from math_verify import parse, verify

    ref = reference.replace(",", "") if answer_type == "number" else reference
    try:
        gold = parse(f"${ref}$") or parse(ref)
        pred = parse(f"${predicted}$") or parse(predicted)
        return bool(gold and pred and verify(gold, pred))
    except Exception:  # math-verify raises on unparsable LaTeX: not equivalent
        return False


def answer_correct(
    answer_type: str, generated: str, reference: str, pattern: re.Pattern | None = None
) -> bool:
    return equivalent(answer_type, predicted_answer(answer_type, generated, pattern), reference)
