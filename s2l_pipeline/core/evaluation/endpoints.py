"""What a study scores, beyond plain accuracy: credit a collapsed model cannot earn.

A tiny target can learn to answer every problem with the pool's commonest answer (``1``, from
gcd), or a family's problems with that family's, and score that answer's share. The primary
endpoint therefore counts only the items whose answer is neither the pool's commonest nor
their family's commonest in the pool, and every cell's commonest prediction and its share are
kept so that collapsed cells can be named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl


def commonest_answers(pool: pl.DataFrame) -> dict[str, str]:
    """Each source's most common answer in the pool (ties: the smallest string)."""
    counts = pool.group_by("source", "answer").len()
    top = counts.sort(["source", "len", "answer"], descending=[False, True, False])
    firsts = top.group_by("source", maintain_order=True).first()
    return dict(firsts.select("source", "answer").rows())


def collapse_answers(pool: pl.DataFrame) -> dict[str, list[str]]:
    """Per source, the answers a collapsed model gets free: the pool's commonest answer and
    the source's own commonest (sorted, one when they are the same)."""
    overall = pool.group_by("answer").len().sort(["len", "answer"], descending=[True, False])
    top = overall["answer"][0]
    return {s: sorted({a, top}) for s, a in commonest_answers(pool).items()}


@dataclass(frozen=True)
class OffModeScore:
    """Accuracy on one set's items whose answer is none of its collapse answers, and the floor
    there: the share of those items that their own commonest answer gets right (the best any
    one answer does, an upper bound on a model that gives one answer to the family)."""

    accuracy: float
    items: int
    floor: float

    def to_dict(self) -> dict:
        return asdict(self)


def off_mode_scores(preds: pl.DataFrame, modes: dict[str, list[str]]) -> dict[str, OffModeScore]:
    """Per evaluation set of ``preds`` (rows with ``eval_set``, ``answer``, ``correct``) whose
    name is a key of ``modes``: accuracy without the items whose answer is one of its modes."""
    out = {}
    for (name,), part in preds.group_by("eval_set", maintain_order=True):
        if name not in modes:
            continue
        kept = part.filter(~pl.col("answer").is_in(modes[name]))
        if not kept.height:
            continue
        floor = kept["answer"].value_counts(sort=True)["count"][0] / kept.height
        out[name] = OffModeScore(
            float(kept["correct"].cast(pl.Float64).mean()), kept.height, float(floor)
        )
    return out


@dataclass(frozen=True)
class TopPrediction:
    """A model's commonest generation over a set of items, and its share of them: a share
    near 1 is a collapsed model, whatever its accuracy."""

    prediction: str
    share: float
    items: int

    def to_dict(self) -> dict:
        return asdict(self)


def top_prediction(preds: pl.DataFrame) -> TopPrediction:
    """The commonest answer of ``preds`` (ties: the smallest string), read as reasoning-gym's
    scorers read a generation: its first line, stripped."""
    if not preds.height:
        return TopPrediction("", 0.0, 0)
    first = pl.col("prediction").str.strip_chars().str.split("\n").list.first().str.strip_chars()
    counts = preds.select(p=first).group_by("p").len().sort(["len", "p"], descending=[True, False])
    return TopPrediction(counts["p"][0], counts["len"][0] / preds.height, preds.height)


def top_predictions(preds: pl.DataFrame) -> dict[str, TopPrediction]:
    """:func:`top_prediction` per evaluation set: a model can collapse on one family alone."""
    return {
        name: top_prediction(part)
        for (name,), part in preds.group_by("eval_set", maintain_order=True)
    }


def primary_endpoint(off_mode: dict[str, dict]) -> float:
    """The mean over sets of their off-mode accuracy (stored ``OffModeScore`` dicts): every
    family weighs the same, whatever its size in the pool."""
    if not off_mode:
        raise ValueError("no set has an off-mode score")
    return sum(s["accuracy"] for s in off_mode.values()) / len(off_mode)
