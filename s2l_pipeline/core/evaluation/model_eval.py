"""Evaluate a fine-tuned target on the evaluation table: accuracy, NLL, summary metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import polars as pl

from ..data.chat import last_turn_only
from ..lm.chat_template import stop_token_ids
from ..lm.encoding import encode
from ..lm.generation import greedy_generate
from ..lm.losses import score_losses
from ..lm.models import load_causal_lm
from ..support.storage import ArtifactStore
from .scorers import is_correct, summarization_scores

log = logging.getLogger(__name__)


def evaluate(
    model,
    tokenizer,
    table: pl.DataFrame,
    max_new_tokens: int = 16,
    max_length: int = 256,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-row predictions, per-set metrics) for an EVAL_SCHEMA table.

    Every row gets a greedy generation and the mean NLL of its reference response; math rows
    get ``correct``, summarization sets ROUGE-L / BLEU / embedding similarity.
    """
    whole = encode(_last_reply_in_loss(table), tokenizer, 1 << 30)  # generation cuts from the left
    prompts = [whole.context(i) for i in range(len(whole))]
    stops = stop_token_ids(tokenizer, model)
    generated = greedy_generate(
        model, tokenizer, prompts, max_new_tokens, batch_size, progress, stops
    )
    nll = score_losses(model, whole.cut(max_length))
    rows = table.to_dicts()
    correct = [
        is_correct(r, g) if r["task"] == "math" else None
        for r, g in zip(rows, generated, strict=True)
    ]
    preds = table.select(
        "eval_set",
        "domain",
        "task",
        "example_id",
        "prompt",
        reference=pl.col("response"),
        answer=pl.col("answer"),
        answer_type=pl.col("answer_type"),
    ).with_columns(
        prediction=pl.Series(generated, dtype=pl.String),
        correct=pl.Series(correct, dtype=pl.Boolean),
        nll=pl.Series(nll, dtype=pl.Float32),
    )
    return preds, set_metrics(preds)


def _last_reply_in_loss(table: pl.DataFrame) -> pl.DataFrame:
    """A chat row's NLL is its last reply's, the one generation is judged on."""
    if "messages" not in table.columns:
        return table
    return table.with_columns(
        pl.col("messages").map_elements(last_turn_only, return_dtype=pl.String)
    )


def set_metrics(preds: pl.DataFrame) -> pl.DataFrame:
    """Accuracy and mean NLL per evaluation set; summary scores for summarization sets."""
    base = (
        preds.group_by("eval_set", "domain", "task")
        .agg(
            rows=pl.len(),
            metric=pl.when(pl.col("task").first() == "summarization")
            .then(pl.lit("ROUGE-L"))
            .otherwise(pl.lit("accuracy (") + pl.col("answer_type").first() + pl.lit(")")),
            accuracy=pl.col("correct").cast(pl.Float64).mean(),
            mean_nll=pl.col("nll").filter(pl.col("nll").is_finite()).mean(),
        )
        .sort("domain", "eval_set")
    )
    extra = []
    for name in base.filter(pl.col("task") == "summarization")["eval_set"].to_list():
        part = preds.filter(pl.col("eval_set") == name)
        extra.append(
            {
                "eval_set": name,
                **summarization_scores(part["prediction"].to_list(), part["reference"].to_list()),
            }
        )
    if extra:
        base = base.join(pl.DataFrame(extra), on="eval_set", how="left")
    return base


def headline(metrics: pl.DataFrame) -> dict[str, float]:
    """Per-domain averages over sets (each set weighs the same): accuracy and NLL of math sets
    (and their floor, when ``metrics`` has one), ROUGE-L and BLEU of summarization sets."""
    out: dict[str, float] = {}
    for domain in ("in_domain", "out_of_domain", "external"):
        part = metrics.filter((pl.col("domain") == domain) & (pl.col("task") == "math"))
        if part.height:
            out[f"{domain}_accuracy"] = float(part["accuracy"].mean())
            out[f"{domain}_mean_nll"] = float(part["mean_nll"].mean())
            if "floor_accuracy" in part.columns and part["floor_accuracy"].drop_nulls().len():
                out[f"{domain}_floor_accuracy"] = float(part["floor_accuracy"].mean())
        summ = metrics.filter((pl.col("domain") == domain) & (pl.col("task") == "summarization"))
        for col in ("rougeL", "bleu") if summ.height else ():
            if col in summ.columns and summ[col].drop_nulls().len():
                out[f"{domain}_summarization_{col}"] = float(summ[col].mean())
    out["mean_nll"] = float(np.nanmean(metrics["mean_nll"].to_numpy())) if metrics.height else 0.0
    return out


DOMAIN_WORDS = {"in_domain": "In-domain", "out_of_domain": "Out-of-domain", "external": "External"}


def headline_in_words(headline: dict[str, float]) -> list[str]:
    """Each domain's accuracy set against its floor in a sentence: a number at or below the
    commonest training answer's score says nothing about the data, and is said so."""
    out = []
    for domain, name in DOMAIN_WORDS.items():
        acc, floor = headline.get(f"{domain}_accuracy"), headline.get(f"{domain}_floor_accuracy")
        if acc is None or floor is None:
            continue
        if acc <= floor:
            out.append(
                f"{name} accuracy {acc:.3f} is at or below its floor {floor:.3f} (answering "
                "every item with the training rows' commonest answer): the target has not "
                "learned these sets, so this accuracy says nothing about the subset."
            )
        else:
            out.append(
                f"{name} accuracy {acc:.3f} is {100 * (acc - floor):.1f} points above its floor "
                f"{floor:.3f} (the training rows' commonest answer)."
            )
    return out


def evaluate_checkpoint(
    uri: str,
    store: ArtifactStore,
    table: pl.DataFrame,
    max_new_tokens: int = 16,
    max_length: int = 256,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Load a checkpoint from the store (on the GPU when there is one) and ``evaluate`` it."""
    import torch

    model, tokenizer = load_causal_lm(store.fetch_dir(uri))
    if torch.cuda.is_available():
        model = model.to("cuda")
    return evaluate(model, tokenizer, table, max_new_tokens, max_length, batch_size, progress)


def metric_by_set(metrics: pl.DataFrame) -> dict[str, str]:
    """Which metric each set's headline number is: 'accuracy (choice)', 'ROUGE-L', ..."""
    return dict(sorted(zip(metrics["eval_set"], metrics["metric"], strict=True)))
