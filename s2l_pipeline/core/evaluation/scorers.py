"""Scoring generations the way the papers do: exact answers for math, overlap for summaries.

Math: reasoning-gym rows are scored by their family's own scorer (a hit only at 1.0, since some
families give partial credit); GSM8K and MATH rows by extracting the final answer ('#### N',
the last \\boxed{}, 'The answer is X', else the last number) and checking equivalence with
math-verify. Summaries: ROUGE-L (rouge-score), corpus BLEU (sacrebleu), and cosine similarity of
all-MiniLM-L6-v2 embeddings in place of BERTScore (no BERT model is reachable offline).
"""

from __future__ import annotations

import json
import re

import numpy as np

from ..data.answers import final_answer

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


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


def reasoning_gym_correct(source: str, generated: str, answer: str, metadata: str) -> bool:
    """The family's own scorer on the first line of the generation; 1.0 only counts."""
    from reasoning_gym import get_score_answer_fn

    scorer = get_score_answer_fn(source)
    entry = {"answer": answer, "metadata": json.loads(metadata) if metadata else {}}
    first = generated.strip().splitlines()[0].strip() if generated.strip() else ""
    try:
        return float(scorer(first, entry)) >= 1.0
    except Exception:  # a scorer may choke on malformed model output: that is a miss
        return False


def math_correct(generated: str, reference: str) -> bool:
    """math-verify equivalence of the extracted answer and the reference answer."""
    from math_verify import parse, verify

    predicted = extract_answer(generated)
    if not predicted or not reference:
        return False
    if predicted.strip() == reference.strip():
        return True
    try:
        gold = parse(f"${reference}$") or parse(reference)
        pred = parse(f"${predicted}$") or parse(predicted)
        return bool(gold and pred and verify(gold, pred))
    except Exception:  # math-verify raises on unparsable LaTeX: not equivalent
        return False


def is_correct(row: dict, generated: str) -> bool:
    if row.get("metadata"):
        return reasoning_gym_correct(row["source"], generated, row["answer"], row["metadata"])
    return math_correct(generated, row.get("answer") or "")


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
