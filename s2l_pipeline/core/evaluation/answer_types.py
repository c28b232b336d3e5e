"""What kind of answer a set has, and how a generated answer of that kind is read and judged.

Last-number extraction marks a multiple-choice rationale ("... = 45 m. Answer: D") wrong, or
right by accident: scored against itself, such a reference was judged correct 8% of the time.
Each set therefore has an answer type (given, or detected from its answers) and optionally a
pattern (a regex with one group) that says where the answer is in a generation.
"""

from __future__ import annotations

import re
import unicodedata

from ..data.answers import ANSWER_TYPES as ANSWER_TYPES  # re-exported: a set's kinds of answer
from ..data.answers import (
    LABELLED_OPTION,
    LATEX,
    REFERENCE_LETTER,
    final_answer,
    last_boxed,
)
from ..data.answers import AnswerPatternError as AnswerPatternError
from ..data.answers import detect_answer_type as detect_answer_type
from ..data.schema import REASONING_GYM as REASONING_GYM  # the family's own scorer

# A letter after a keyword: "Answer: D", "Answer D", "Correct answer - A", "ANSWER:C", "The answer
# is (B)", "option C", "Ans: B", "Answers: A". Keywords are whole words ("means A" is no
# answer). A lower-case letter counts only where nothing word-like follows it ("the answer is
# b", "answer: c)"), so "the answer is a number" is no choice; nor is the pronoun in "Answer: I
# think it is C".
_LETTER = (
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]|([A-J])(?![A-Za-z0-9'])(?!(?<=I)\s+[a-z])"
    r"|([a-j])(?=\s*(?:$|[\).,;:!\n])))"
)
_FILLER = r"(?:\s+(?i:is|was|would\s+be|will\s+be|should\s+be|choice|option|:))*"
_ANSWER_KEY = re.compile(rf"\b(?i:answers?|ans\b\.?){_FILLER}\s*[:\-=–—]*\s*{_LETTER}")
_OPTION_KEY = re.compile(rf"\b(?i:option|choice){_FILLER}\s*[:\-=–—]*\s*{_LETTER}")
# "answer.A", "The Answer is, B.": a dot or comma before the letter only where the letter
# ends the line ("the answer. A train ..." is a new sentence).
_ANSWER_DOT = re.compile(
    r"\b(?i:answers?|ans)\b(?:\s+(?i:is))?\s*[.,]\s*\(?([A-J])\)?(?=\s*[.\)]?\s*(?:$|\n))"
)
# "Ans: 2/5 D", "Answer: 45 km (C)": the value, then its letter, ending the text.
_ANSWER_VALUE = re.compile(
    r"\b(?i:answers?|ans)\b\.?\s*[:\-=]\s*[-\d.,/%$+=\s]{1,16}(?:[a-z]{1,5}\.?)?\s+"
    r"\(?([A-J])\)?\s*\.?\s*$"
)
# "B is the answer", "(B) is correct", "(B) must be true"
_IS_CORRECT = re.compile(
    r"(?:\(([A-J])\)|\b([A-J]))\)?\s+(?i:is|would\s+be|must\s+be)\s+(?i:the\s+)?"
    r"(?i:correct|right|answer|true)"
)
# "Hence (D).", "i.e. (B)", "Thus A", "= 3=C", ">>B": a letter ending the text after a
# conclusion word, an equals sign or an arrow.
_CONCLUDES = re.compile(
    r"(?:\b(?i:hence|thus|therefore|so|i\.e\.)\s*,?\s*\(([A-Ja-j])\)|"
    r"\b(?i:hence|thus|therefore)\s*,?\s*([A-J])|[=>]\s*\(?([A-J])\)?)\s*\.?\s*$"
)
# A bare letter as the whole text or line: "C", "(c)", "C)", "C.", or "(C) 42", "C) 42".
_BARE = re.compile(r"^\s*(?:\(?([A-Ja-j])\)?[\.:]?\s*$|\(?([A-Ja-j])\)\s+\S)")
_MARKUP = re.compile(r"\*\*|__|\\text(?:bf)?\{|\\mathrm\{")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def _letter(m: re.Match) -> str:
    return next(g for g in m.groups() if g).upper()


def extract_choice(text: str) -> str | None:
    """The option letter a rationale or generation settles on, upper case; None if none.

    An explicit answer ("Answer: C", "The answer is (C)") wins over a later mention of an option
    ("option A is incorrect because ..."); among several answers the last one counts (a
    rationale ends on its answer). A model that runs on into a new question ("Answer: D
    Question: ... Answer: B") is read at its last answer: bound max_new_tokens, or give the set
    an answer_pattern.
    """
    text = _MARKUP.sub("", text).strip()
    if not text:
        return None
    for rx in (_ANSWER_KEY, _ANSWER_DOT, _ANSWER_VALUE, _IS_CORRECT, _CONCLUDES, _OPTION_KEY):
        found = list(rx.finditer(text))
        if found:
            return _letter(found[-1])
    boxed = last_boxed(text)
    if boxed:
        inner = boxed.replace("{", "").replace("}", "")
        m = REFERENCE_LETTER.match(inner) or LABELLED_OPTION.match(inner)
        if m:
            return _letter(m)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in dict.fromkeys((lines[-1], lines[0])):
        m = _BARE.match(line)
        if m:
            return _letter(m)
    return None


# Options as a prompt lists them: "Options: A)240, B)480" or one per line "(A) 240".
_OPTION = re.compile(r"(?:^|[\s,;\[])\(?([A-J])\s*\)\s*(.+?)(?=\s*(?:,\s*\(?[A-J]\s*\)|\n|$))")
_NUMBERED = re.compile(r"\b(?i:answers?|ans)\b\.?\s*(?:(?i:is)\s*)?[:\-=]?\s*(\d{1,2})\s*\.?\s*$")


def options_in(prompt: str) -> dict[str, str]:
    """The options a multiple-choice prompt lists, letter -> text ({} when it lists none)."""
    found = {m.group(1): m.group(2).strip() for m in _OPTION.finditer(prompt or "")}
    letters = sorted(found)
    # Options run A, B, C, ... without a gap; anything else is no list of options.
    return found if letters and letters == [chr(65 + i) for i in range(len(letters))] else {}


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", ""))
    try:
        return float(eval_fraction(found[-1])) if found else None
    except (ValueError, ZeroDivisionError):
        return None


def eval_fraction(token: str) -> float:
    num, _, den = token.partition("/")
    return float(num) / float(den) if den else float(num)


def choice_without_letter(text: str, options: dict[str, str]) -> str | None:
    """A rationale that states no letter: the option it names by number ("ANSWER: 3" when no
    option's value is 3), else the one option whose value equals the text's final number."""
    value = _number(text)
    matching = [k for k, v in options.items() if value is not None and _number(v) == value]
    if len(matching) == 1:
        return matching[0]
    m = _NUMBERED.search(text)
    if m and not matching and 1 <= int(m.group(1)) <= len(options):
        return chr(64 + int(m.group(1)))
    return None


def reference_choice(answer: str) -> str | None:
    """A reference answer as a letter: 'D', '(d)', 'D)', 'A) 12', 'Option C' -> the letter;
    else read as a generation."""
    m = REFERENCE_LETTER.match(answer or "") or LABELLED_OPTION.match(answer or "")
    return _letter(m) if m else extract_choice(answer or "")


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


def predicted_answer(
    answer_type: str,
    generated: str,
    pattern: re.Pattern | None = None,
    options: dict[str, str] | None = None,
) -> str:
    """What a generation answers, read the way its set's answer type asks ('' if nothing);
    a choice with no letter is matched against ``options`` (the prompt's, by letter)."""
    if pattern is not None:
        picked = _pattern_pick(pattern, generated)
        if picked is None:
            return ""
        generated = picked
    if answer_type == "choice":
        return extract_choice(generated) or choice_without_letter(generated, options or {}) or ""
    if answer_type == "text":
        if pattern is not None:
            return generated
        lines = generated.strip().splitlines()
        return final_answer(generated) or (lines[-1] if lines else "")
    found = extract_answer(generated).replace("{,}", "")
    if answer_type == "number" and not LATEX.search(found):  # LaTeX: math-verify reads it
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
    answer_type: str,
    generated: str,
    reference: str,
    pattern: re.Pattern | None = None,
    options: dict[str, str] | None = None,
) -> bool:
    predicted = predicted_answer(answer_type, generated, pattern, options)
    return equivalent(answer_type, predicted, reference)
