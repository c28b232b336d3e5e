"""Each set is judged by the kind of answer it has: letters for multiple choice, numbers,
LaTeX through math-verify, or text; the references of every set score as correct."""

from pathlib import Path

import polars as pl
import pytest

from s2l_pipeline.core.data.eval_sets import EvalFile, build_eval_sets, load_eval_file
from s2l_pipeline.core.data.formats import FieldMapping, UnknownSchemaError
from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.core.data.schema import EVAL_SCHEMA
from s2l_pipeline.core.evaluation.answer_types import (
    AnswerPatternError,
    detect_answer_type,
    extract_choice,
)
from s2l_pipeline.core.evaluation.sanity import (
    answer_floor,
    modal_answers,
    prediction_modes,
    reference_accuracy,
)

from .helpers import MC, MC_FIELDS

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("so 12 + 3 = 15 km.\nAnswer: D", "D"),
        ("speed = 45 m/s. Answer D", "D"),
        ("Total 300 units.\nCorrect answer - A", "A"),
        ("x = 7 and y = 2\nANSWER:C", "C"),
        ("Hence 3/4 of 80 = 60. The answer is (B).", "B"),
        ("Option E is correct: 42", "E"),
        ("the correct option is (d)", "D"),
        ("So the answer is B) 45", "B"),
        ("(C)", "C"),
        ("C", "C"),
        ("\\boxed{A}", "A"),
        ("The answer is a number near 10, namely 12", None),
        ("12 + 3 = 15", None),
        # found by an adversarial review: a first line that starts with a capital is no answer
        ("A 45-year-old man presents with chest pain.", None),
        ("I don't know", None),
        ("A train travels 45 km. The answer is 45 km.", None),
        # an explicit answer wins over a later mention of an option
        ("Answer: C. Explanation: option A is incorrect because ...", "C"),
        ("The answer is (C). Option (A) overestimates the dose.", "C"),
        ("Answer: A\n\nNote: option B would hold if ...", "A"),
        ("Answer: D. This means A is wrong.", "D"),
        # keywords are whole words
        ("... which means A = 12.", None),
        ("The two humans B and C meet", None),
        # letters a person reads at once
        ("Therefore, B is the answer", "B"),
        ("(B) is correct", "B"),
        ("Hence (D).", "D"),
        ("Answers: A", "A"),
        ("the answer is b", "B"),
        ("Answer is option c", "C"),
        ("c) 45", "C"),
        ("**Answer:** C", "C"),
        ("The answer is **C**.", "C"),
        ("$\\boxed{\\text{(C)}}$", "C"),
        ("\\boxed{B) 45}", "B"),
        ("Answer: I think it is C", None),
        ("Answer: I", "I"),
    ],
)
def test_choice_letters_are_read_as_letters(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


def test_multiple_choice_references_score_as_correct() -> None:
    """Scored as predictions, the rationales were marked right 8% of the time by last-number
    extraction; read as letters they are all right, and the set is detected as choice."""
    rows, rejected = load_eval_file(EvalFile(str(MC), name="mc", fields=MC_FIELDS))
    assert rejected.is_empty() and rows.height == 48
    table, _ = build_eval_sets(
        pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (EvalFile(str(MC), "mc", fields=MC_FIELDS),)
    )
    assert table["answer_type"].unique().to_list() == ["choice"]
    shares, failing = reference_accuracy(table)
    assert shares == {"mc": 1.0}, failing
    # the number extraction it replaces, on the same references: far below chance
    as_math = table.with_columns(answer_type=pl.lit("math"))
    assert reference_accuracy(as_math)[0]["mc"] < 0.2


def test_a_wrong_letter_is_wrong() -> None:
    table, _ = build_eval_sets(
        pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (EvalFile(str(MC), "mc", fields=MC_FIELDS),)
    )
    shifted = table.with_columns(
        response=pl.col("response").str.replace(r"[A-E]\)?[^A-Za-z]*$", "")
        + pl.col("answer")
        .replace_strict({"A": "B", "B": "C", "C": "D", "D": "E", "E": "A"})
        .map_elements(lambda x: f"\nAnswer: {x}", return_dtype=pl.String)
    )
    assert reference_accuracy(shifted)[0]["mc"] == 0.0


@pytest.mark.parametrize("name", ["gsm8k/test.jsonl", "math500/test.jsonl"])
def test_gsm8k_and_math500_references_score_as_correct(name: str) -> None:
    path = SHARED / name if (SHARED / name).exists() else None
    if path is None:  # the project's own samples where ../shared is absent
        path = FIXTURES / {"gsm8k/test.jsonl": "gsm8k_test_sample.jsonl"}.get(
            name, "math500_sample.jsonl"
        )
    table, _ = build_eval_sets(pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (EvalFile(str(path)),))
    shares, failing = reference_accuracy(table)
    assert min(shares.values()) >= 0.99, failing


def test_lower_case_references_and_labelled_options() -> None:
    from s2l_pipeline.core.evaluation.answer_types import answer_correct

    assert answer_correct("choice", "b", "b") and answer_correct("choice", "Answer: b", "(b)")
    assert answer_correct("choice", "The answer is (A).", "A) 12")
    assert not answer_correct("choice", "Answer: C", "b")


def test_numbers_after_a_marker_and_in_latex() -> None:
    from s2l_pipeline.core.evaluation.answer_types import answer_correct

    assert answer_correct("number", "#### 72\n\nQuestion: John has 5 apples and buys 3", "72")
    assert answer_correct("number", "so \\boxed{\\frac{3}{4}}", "0.75")
    assert answer_correct("number", "\\boxed{1{,}200}", "1200")
    assert answer_correct("number", "The answer is $1,200.", "1200")
    assert not answer_correct("number", "The answer is 71", "72")


def test_answer_types_are_detected_from_answers() -> None:
    assert detect_answer_type(["A) 12", "B) 45", "C) 7"]) == "choice"
    assert detect_answer_type(["Option A", "Option B"]) == "choice"
    assert detect_answer_type(["A", "(b)", "C", "D)"]) == "choice"
    assert detect_answer_type(["72", "1,200", "-3.5", "3/4"]) == "number"
    assert detect_answer_type(["\\frac{1}{2}", "3", "(2, \\pi)"]) == "math"
    assert detect_answer_type(["yes", "no", "Evelyn"]) == "text"


def test_answer_type_and_pattern_from_the_file_entry(tmp_path: Path) -> None:
    path = tmp_path / "quiz.jsonl"
    path.write_text(
        '{"q": "Capital of France?", "a": "Reasoning... Final: Paris", "gold": "paris"}\n'
        '{"q": "Capital of Peru?", "a": "Thinking: Quito? no. Final: Lima", "gold": "Lima"}\n'
    )
    fields = {"prompt": "{q}", "response": "{a}", "answer": "{gold}"}
    spec = EvalFile(
        str(path), "quiz", fields=fields, answer_type="text", answer_pattern=r"Final: (\w+)"
    )
    table, _ = build_eval_sets(pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (spec,))
    assert reference_accuracy(table)[0] == {"quiz": 1.0}
    no_pattern = table.with_columns(answer_pattern=pl.lit(None, pl.String))
    assert reference_accuracy(no_pattern)[0]["quiz"] < 1.0
    with pytest.raises(AnswerPatternError, match="exactly one group"):
        load_eval_file(EvalFile(str(path), fields=fields, answer_pattern=r"Final: \w+"))
    with pytest.raises(ValueError, match="answer_type 'letters'"):
        load_eval_file(EvalFile(str(path), fields=fields, answer_type="letters"))


def test_mapped_file_without_answer_is_summarization() -> None:
    """A summarization file mapped with fields was evaluated as math (accuracy of '')."""
    summary = FieldMapping({"prompt": "{findings}", "response": "{impression}"})
    assert summary.task == "summarization"
    assert FieldMapping(MC_FIELDS).task == "math"
    with pytest.raises(UnknownSchemaError, match="needs an answer template"):
        FieldMapping({"prompt": "{findings}", "response": "{impression}"}, task="math")
    rad = FIXTURES / "radiology_sample.jsonl"
    rows, _ = load_eval_file(
        EvalFile(str(rad), fields={"prompt": "{findings}", "response": "{impression}"})
    )
    assert rows["task"].unique().to_list() == ["summarization"]
    assert rows["answer_type"].null_count() == rows.height


def test_embedded_references_score_as_correct() -> None:
    _, held = generate_mixture(120, seed=3, heldout_per_family=10)
    table, _ = build_eval_sets(held, 10, 0)
    shares, failing = reference_accuracy(table)
    assert min(shares.values()) == 1.0, failing
    assert set(table["answer_type"].unique()) == {"reasoning_gym"}


def test_floor_is_the_most_common_training_answer() -> None:
    train = pl.DataFrame(
        {
            "source": ["gcd"] * 5 + ["sums"] * 3,
            "answer": ["1", "1", "1", "2", "3", "7", "7", "8"],
        }
    )
    modes = modal_answers(train)
    assert modes == {"gcd": "1", "sums": "7"}
    evals = pl.DataFrame(
        {
            "eval_set": ["gcd"] * 4 + ["other"] * 2,
            "source": ["gcd"] * 4 + ["other"] * 2,
            "task": ["math"] * 6,
            "answer": ["1", "1", "5", "6", "1", "9"],
            "answer_type": ["number"] * 6,
            "answer_pattern": [None] * 6,
            "metadata": [None] * 6,
        }
    )
    floor = answer_floor(evals, modes).sort("eval_set")
    assert floor["floor_answer"].to_list() == ["1", "1"]
    assert floor["floor_accuracy"].to_list() == [0.5, 0.5]
    # a set the model never trained on: its own majority answer (always 'A' on a choice set)
    assert floor["floor_basis"].to_list() == ["training", "set"]
    mc = evals.with_columns(
        eval_set=pl.lit("mc"),
        source=pl.lit("mc"),
        answer=pl.Series(["A", "A", "A", "B", "C", "D"]),
        answer_type=pl.lit("choice"),
    )
    assert answer_floor(mc, modes)["floor_accuracy"].to_list() == [0.5]


def test_prediction_modes_find_a_collapsed_set() -> None:
    preds = pl.DataFrame(
        {
            "eval_set": ["a"] * 4 + ["b"] * 4,
            "prediction": ["1", "1 ", "1", "2", "x", "y", "z", "x"],
        }
    )
    modes = prediction_modes(preds)
    assert modes.row(0, named=True) == {
        "eval_set": "a",
        "rows": 4,
        "modal_prediction": "1",
        "modal_share": 0.75,
    }
    assert modes.row(1, named=True)["modal_share"] == 0.5
    # answer-scored sets compare the answers read from the generations
    reasoned = pl.DataFrame(
        {
            "eval_set": ["mc"] * 4,
            "task": ["math"] * 4,
            "answer_type": ["choice"] * 4,
            "prediction": [f"step {i} ... so the answer is (A)" for i in range(4)],
        }
    )
    row = prediction_modes(reasoned).row(0, named=True)
    assert row["modal_prediction"] == "A" and row["modal_share"] == 1.0


def test_rationales_in_the_forms_users_meet_read_at_98_percent() -> None:
    """The endings a real set had ('answer.A', '= 3=C', 'Thus A', '>>B', 'Ans: 2/5 D', an
    option number, a value and no letter): 99 of 100 read; the one that states nothing is
    listed as such, after any miss of the reader's own."""
    path = FIXTURES / "multiple_choice_rationales.jsonl"
    table, _ = build_eval_sets(
        pl.DataFrame(schema=EVAL_SCHEMA), 0, 0, (EvalFile(str(path), "mcr", fields=MC_FIELDS),)
    )
    assert table.height == 100 and table["answer_type"].unique().to_list() == ["choice"]
    shares, failing = reference_accuracy(table)
    assert shares["mcr"] >= 0.98, failing
    assert [f["kind"] for f in failing["mcr"]] == ["no answer stated"]
    # A wrong letter stated is a misread, and it comes first.
    wrong = table.with_columns(
        response=pl.when(pl.col("record_id" if "record_id" in table.columns else "example_id")
                         == table["example_id"][40])
        .then(pl.lit("Adding up gives the total.\nAnswer: E" if table["answer"][40] != "E"
                     else "Adding up gives the total.\nAnswer: A"))
        .otherwise(pl.col("response"))
    )  # fmt: skip
    kinds = [f["kind"] for f in reference_accuracy(wrong)[1]["mcr"]]
    assert kinds == ["misread", "no answer stated"]
