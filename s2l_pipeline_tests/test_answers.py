import json

import pytest

from s2l_pipeline.core.data.answers import answer_is, final_answer, gsm8k_answer, last_boxed

from .conftest import FIXTURES


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


@pytest.mark.parametrize("name", ["gsm8k_train_sample.jsonl", "gsm8k_test_sample.jsonl"])
def test_gsm8k_answers_are_the_number_after_hashes(name: str) -> None:
    for row in _rows(name):
        ans = gsm8k_answer(row["answer"])
        assert ans is not None and ans == row["answer"].split("####")[-1].strip().replace(",", "")
        float(ans)  # every GSM8K final answer is a number


def test_gsm8k_answer_missing_and_commas() -> None:
    assert gsm8k_answer("no final line") is None
    assert gsm8k_answer("so 1,200 in total\n#### 1,200") == "1200"


def test_math500_boxed_matches_the_given_answer() -> None:
    rows = _rows("math500_sample.jsonl")
    matches = [last_boxed(r["solution"]) == r["answer"] for r in rows]
    # MATH-500's `answer` is the boxed content of the solution for every sample row.
    assert all(matches), [r["unique_id"] for r, m in zip(rows, matches, strict=True) if not m]


def test_boxed_nested_and_last() -> None:
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert last_boxed("no box here") is None
    assert last_boxed(r"\boxed{unclosed") is None


def test_answer_is_forms() -> None:
    assert answer_is("so x = 4. The answer is: 4") == "4"
    assert answer_is("Work.\nThe answer is B") == "B"
    assert answer_is("print(1)") is None
    assert final_answer("60 * 3 = 180 km. The answer is 180") == "180"
