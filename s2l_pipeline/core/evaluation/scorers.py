"""Scoring generations the way the papers do: exact answers for math, overlap for summaries.

Math: reasoning-gym rows are scored by their family's own scorer (a hit only at 1.0, since some
families give partial credit); GSM8K and MATH rows by extracting the final answer ('#### N',
the last \\boxed{}, 'The answer is X', else the last number) and checking equivalence with
math-verify; multiple-choice rows by the option letter (answer_types.py). Summaries: ROUGE-L
(rouge-score), corpus BLEU (sacrebleu), and cosine similarity of all-MiniLM-L6-v2 embeddings
in place of BERTScore (no BERT model is reachable offline).
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache

import numpy as np

from ..data.answers import compile_pattern
from .answer_types import REASONING_GYM, answer_correct, options_in
from .answer_types import extract_answer as extract_answer  # re-exported: tests, benchmarks


@lru_cache(maxsize=64)
def _pattern(pattern: str | None) -> re.Pattern | None:
    return compile_pattern(pattern)


@cache
def _family_scorer(source: str):
    """A family's scorer, built once: reasoning-gym builds a whole dataset object for it (a word
    list for spell_backward: 0.1 s each), which scoring 480 rows did 480 times."""
    from reasoning_gym import get_score_answer_fn

    return get_score_answer_fn(source)


def reasoning_gym_correct(source: str, generated: str, answer: str, metadata: str) -> bool:
    """The family's own scorer on the first line of the generation; 1.0 only counts."""
    scorer = _family_scorer(source)
    entry = {"answer": answer, "metadata": json.loads(metadata) if metadata else {}}
    first = generated.strip().splitlines()[0].strip() if generated.strip() else ""
    try:
        return float(scorer(first, entry)) >= 1.0
    except Exception:  # a scorer may choke on malformed model output: that is a miss
        return False


def math_correct(generated: str, reference: str) -> bool:
    """math-verify equivalence of the extracted answer and the reference answer."""
    return answer_correct("math", generated, reference)


def is_correct(row: dict, generated: str) -> bool:
    """Judge one generation by its row's answer type (reasoning-gym rows by their family)."""
    kind = row.get("answer_type")
    if kind == REASONING_GYM or (kind is None and row.get("metadata")):
        return reasoning_gym_correct(row["source"], generated, row["answer"], row["metadata"])
    pattern = _pattern(row.get("answer_pattern"))
    options = options_in(row.get("prompt") or "") if kind == "choice" else None
    return answer_correct(kind or "math", generated, row.get("answer") or "", pattern, options)


def summarization_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-L F1 (mean), corpus BLEU, and mean MiniLM cosine similarity."""
    import sacrebleu
    from rouge_score import rouge_scorer

    from ..lm.embeddings import embed_texts

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [
        scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)
    ]
    bleu = sacrebleu.corpus_bleu(predictions, [references]).score
    emb_p, emb_r = embed_texts(predictions), embed_texts(references)
    cosine = (emb_p * emb_r).sum(axis=1)
    return {
        "rougeL": float(np.mean(rouge)),
        "bleu": float(bleu),
        "embedding_similarity": float(np.mean(cosine)),
    }
