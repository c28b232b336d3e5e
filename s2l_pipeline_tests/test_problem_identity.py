"""Held-out problems are kept out of training by what they ask, not by their wording."""

from s2l_pipeline.core.data.generator import TRAIN_FAMILIES, draw_mixture, generate_mixture
from s2l_pipeline.core.data.problem_identity import problem_key


def _entry(question: str, **metadata) -> dict:
    return {"question": question, "metadata": metadata}


def test_one_problem_in_other_words_has_one_key() -> None:
    a = _entry("Find the value of e in: e + 5 = 12", equation="e + 5 = 12", variable="e")
    b = _entry("Determine b such that: b + 5 = 12", equation="b + 5 = 12", variable="b")
    assert problem_key("simple_equations", a) == problem_key("simple_equations", b)
    c = _entry("Solve for x: x + 5 = 13", equation="x + 5 = 13", variable="x")
    assert problem_key("simple_equations", a) != problem_key("simple_equations", c)
    assert problem_key("gcd", _entry("GCD of 49, 29", numbers=[49, 29])) == problem_key(
        "gcd", _entry("GCD of 29, 49", numbers=[29, 49])
    )
    four_six = _entry("", numbers=[4, 6])
    assert problem_key("gcd", four_six) != problem_key("lcm", four_six)
    # one sum in two families; order matters for '-', not for '+' or '*'
    assert problem_key("basic_arithmetic", _entry("Calculate 4 + 1.", expression="4 + 1")) == (
        problem_key("chain_sum", _entry("4 + 1 =", expression="1 + 4"))
    )
    assert problem_key("chain_sum", _entry("", expression="4 - 1")) != problem_key(
        "chain_sum", _entry("", expression="1 - 4")
    )
    # a sum's signed terms in any order are one problem (found by review: '4 - 7 + 3')
    assert problem_key("chain_sum", _entry("", expression="4 - 7 + 3")) == problem_key(
        "chain_sum", _entry("", expression="3 + 4 - 7")
    )
    assert problem_key("chain_sum", _entry("", expression="6 - 2 + 0")) == problem_key(
        "chain_sum", _entry("", expression="0 + 6 - 2")
    )


def test_no_held_out_problem_is_trained_on_in_any_form() -> None:
    """The generator excluded held-out questions by text: every simple-equation test problem
    was in the pool under another variable letter, most gcd pairs reversed."""
    train, held = draw_mixture(4000, 0, 100, TRAIN_FAMILIES)

    def keys(draws: list[list[dict]]) -> set[str]:
        pairs = zip(TRAIN_FAMILIES, draws, strict=True)
        return {problem_key(f.name, e) for f, items in pairs for e in items}

    held_keys, train_keys = keys(held), keys(train)
    assert held_keys.isdisjoint(train_keys)
    for family, items in zip(TRAIN_FAMILIES, held, strict=True):
        assert len({problem_key(family.name, e) for e in items}) == len(items) == 100
    # the tables are these draws
    train_df, held_df = generate_mixture(4000, 0, 100)
    assert train_df["prompt"].to_list() == [e["question"] for items in train for e in items]
    assert held_df["prompt"].to_list() == [e["question"] for items in held for e in items]
