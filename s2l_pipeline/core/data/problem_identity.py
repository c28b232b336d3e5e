"""Which generated problems are the same problem, whatever their wording.

reasoning-gym words one problem many ways: 'Find the value of e in: e + 5 = 12' and 'Determine
b such that b + 5 = 12' are one equation; the GCD of (49, 29) is the GCD of (29, 49); '4 - 1' is
the same sum in basic_arithmetic and chain_sum. Held-out problems are kept out of training by
this identity, not by their text.
"""

from __future__ import annotations

import json
import re

# Families whose problems are arithmetic expressions: one namespace, so a sum held out of one
# family is kept out of the others too.
_EXPRESSION_FAMILIES = {"basic_arithmetic", "chain_sum", "products", "decimal_chain_sum"}


def normalized_text(text: str) -> str:
    """Case and whitespace folded: the same text typed differently."""
    return " ".join(text.casefold().split())


def normalized_column(col: str):
    """:func:`normalized_text` over a polars column (lower case rather than casefold)."""
    import polars as pl

    return pl.col(col).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _expression(expr: str) -> str:
    """An expression's canonical form: a product's factors sorted; a sum's signed terms sorted
    ('4 - 7 + 3' and '3 + 4 - 7' are one problem); anything else as written."""
    tokens = expr.split()
    operators = set(tokens[1::2])
    if operators == {"*"}:
        return " * ".join(sorted(tokens[0::2]))
    if operators and operators <= {"+", "-"}:
        signed = [f"+{tokens[0]}"] + [
            f"{op}{t}" for op, t in zip(tokens[1::2], tokens[2::2], strict=True)
        ]
        return "sum:" + " ".join(sorted(signed))
    return " ".join(tokens)


def problem_key(family: str, entry: dict) -> str:
    """A key equal for two entries exactly when they pose the same problem."""
    m = entry.get("metadata") or {}
    if family in _EXPRESSION_FAMILIES and m.get("expression"):
        return "expression:" + _expression(m["expression"])
    if family == "simple_equations" and m.get("equation"):
        eq = re.sub(rf"\b{re.escape(m.get('variable', 'x'))}\b", "x", m["equation"])
        return "equation:" + " ".join(eq.split())
    if family in ("gcd", "lcm") and m.get("numbers"):
        return f"{family}:" + ",".join(str(n) for n in sorted(m["numbers"]))
    fields = {
        "leg_counting": ("animals",),
        "fraction_simplification": ("numerator", "denominator"),
        "base_conversion": ("decimal_value", "source_base", "target_base"),
        "count_bits": ("number",),
        "spell_backward": ("word",),
    }.get(family)
    if fields and all(f in m for f in fields):
        return f"{family}:" + json.dumps([m[f] for f in fields], sort_keys=True, default=str)
    return f"{family}:text:" + normalized_text(entry["question"])
