"""Does S2L's premise hold on this data? Examples in one trajectory cluster should pull the
model the same way: their gradients should be more alike than those of random pairs.

Per-example gradients of the proxy's last checkpoint (loss on response tokens), each sketched
to ``dims`` numbers by a seeded CountSketch (every coordinate added, with a random sign, to one
random bucket: inner products are kept in expectation at O(parameters) cost), over the model's
last parameters up to ``SKETCHED_PARAMETERS`` (all of an embedded model). Cosine similarity of
pairs inside a cluster is compared with pairs drawn uniformly from all rows; silhouette on a
sample scores the clustering itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from ..lm.encoding import Encoded


# What premise_on_pool reads of a pool's rows: labels for all, text for the sampled ones.
POOL_COLUMNS = ("example_id", "source", "answer", "prompt", "response", "task", "messages")


@dataclass(frozen=True)
class PremiseReport:
    """The diagnostic's numbers; ``gap`` > 0 means clusters group similar gradients."""

    # None when no sampled cluster held two rows (a tiny pool): there is nothing to compare.
    within_cluster_cosine: float | None
    random_pair_cosine: float
    gap: float | None
    # Random pairs from one source: clusters must beat this to add more than the source does.
    same_source_cosine: float | None
    # The same-answer control: short responses may group gradients by the answer they share.
    # Pairs with one answer (``same_answer_cosine``), and pairs inside one cluster whose answers
    # differ (``within_cluster_other_answer_cosine``): clusters add more than shared answers only
    # if the latter stays well above random pairs.
    same_answer_cosine: float | None
    within_cluster_other_answer_cosine: float | None
    within_pairs: int
    random_pairs: int
    clusters_sampled: int
    silhouette: float | None
    silhouette_sample: int
    sketch_dims: int
    sketched_parameters: int = 0  # gradient coordinates sketched (the model's last ones)

    def to_dict(self) -> dict:
        return asdict(self)


def cluster_sample(
    labels: np.ndarray, clusters: int, per_cluster: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices: ``per_cluster`` rows from each of ``clusters`` random clusters having at
    least two members (pairs need two)."""
    ids, counts = np.unique(labels, return_counts=True)
    eligible = ids[counts >= 2]
    picked = rng.choice(eligible, min(clusters, len(eligible)), replace=False)
    rows = []
    for c in np.sort(picked):
        members = np.flatnonzero(labels == c)
        rows.append(rng.choice(members, min(per_cluster, len(members)), replace=False))
    return np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)


# Gradients of at most this many parameters are sketched: the model's last ones in its own order
# (the top blocks and final norm, or an untied output head). Every embedded model has fewer, so
# all of it counts; a pretrained proxy such as SmolLM2-135M sketched 135M coordinates a row,
# backpropagated through every block and held 1.6 GB of bucket and sign tables: 107 s and a
# 5.4 GB peak for 40 rows, where its top two blocks take a few seconds.
SKETCHED_PARAMETERS = 8_000_000


def sketched_parameters(model, budget: int = SKETCHED_PARAMETERS) -> list:
    """The trainable parameters whose gradients are sketched: the last ones, up to ``budget``
    coordinates (at least one tensor)."""
    named = [p for p in model.parameters() if p.requires_grad]
    chosen, total = [], 0
    for p in reversed(named):
        if chosen and total + p.numel() > budget:
            break
        chosen.append(p)
        total += p.numel()
    return chosen[::-1]


def gradient_sketches(model, enc, rows: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """(len(rows), dims) CountSketch of each row's gradient of its mean response loss, over
    :func:`sketched_parameters` (backpropagation stops below them)."""
    import torch

    params = sketched_parameters(model)
    kept = {id(p) for p in params}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in kept]
    total = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    bucket = torch.randint(0, dims, (total,), generator=gen)
    sign = torch.randint(0, 2, (total,), generator=gen).float() * 2 - 1
    device = next(model.parameters()).device
    bucket, sign = bucket.to(device), sign.to(device)
    out = np.zeros((len(rows), dims), dtype=np.float32)
    model.eval()  # no dropout: the gradient of the model as it scores
    for p in frozen:
        p.requires_grad_(False)
    try:
        for k, r in enumerate(rows):
            model.zero_grad(set_to_none=True)
            ids = torch.tensor([enc.input_ids[r]], device=device)
            labels = torch.tensor([enc.labels(int(r))], device=device)
            model(input_ids=ids, labels=labels).loss.backward()
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            out[k] = (
                torch.zeros(dims, device=device).index_add_(0, bucket, flat * sign).cpu().numpy()
            )
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
    return out


def _cosines(a: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    unit = a / np.where(norm > 0, norm, 1)
    return unit @ unit.T


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def premise_report(
    model,
    encode_rows: Callable[[np.ndarray], Encoded],
    labels: np.ndarray,
    features: np.ndarray,
    seed: int = 0,
    clusters: int = 20,
    per_cluster: int = 8,
    random_rows: int = 160,
    dims: int = 2048,
    silhouette_rows: int = 2000,
    sources: np.ndarray | None = None,
    answers: np.ndarray | None = None,
) -> PremiseReport:
    """Gradient similarity within clusters against random pairs (and random pairs of one
    source, given ``sources``; pairs of one answer, given ``answers``), and the clustering's
    silhouette, for rows with clusters ``labels`` and trajectory ``features``. Only the ~300
    sampled rows are encoded, by ``encode_rows(indices)``: a 1M-row pool encoded whole peaked
    at 8.15 GiB. Rows with no response token left must be dropped before."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    grouped = cluster_sample(labels, clusters, per_cluster, rng)
    uniform = rng.choice(len(labels), min(random_rows, len(labels)), replace=False)
    by_answer = np.empty(0, dtype=np.int64)
    if answers is not None:
        codes = np.unique(answers, return_inverse=True)[1]
        by_answer = cluster_sample(codes, clusters, per_cluster, rng)
    picked = np.concatenate([grouped, uniform, by_answer])
    enc = encode_rows(picked)
    if (enc.n_response_tokens == 0).any():
        raise ValueError("a sampled row has no response token: drop such rows before")
    sketches = gradient_sketches(model, enc, np.arange(len(picked)), dims, seed)
    g_sim = _cosines(sketches[: len(grouped)])
    same = labels[grouped][:, None] == labels[grouped][None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    within = g_sim[same & upper]
    u_sim = _cosines(sketches[len(grouped) : len(grouped) + len(uniform)])
    pairs = np.triu(np.ones(u_sim.shape, dtype=bool), k=1)
    random_pairs = u_sim[pairs]
    same_source = None
    if sources is not None:
        s = sources[uniform]
        one_source = u_sim[pairs & (s[:, None] == s[None, :])]
        same_source = float(one_source.mean()) if one_source.size else None
    same_answer = other_answer = None
    if answers is not None:
        a = answers[by_answer]
        one_answer = _cosines(sketches[len(grouped) + len(uniform) :])
        same_answer = _mean(one_answer[np.triu(a[:, None] == a[None, :], k=1)])
        g = answers[grouped]
        other_answer = _mean(g_sim[same & upper & (g[:, None] != g[None, :])])
    n_sil = min(silhouette_rows, len(labels))
    silhouette = None
    if len(np.unique(labels)) >= 2 and n_sil > len(np.unique(labels)):
        silhouette = float(silhouette_score(features, labels, sample_size=n_sil, random_state=seed))
    w, r = _mean(within), float(random_pairs.mean())
    return PremiseReport(
        within_cluster_cosine=w,
        random_pair_cosine=r,
        gap=None if w is None else w - r,
        same_source_cosine=same_source,
        same_answer_cosine=same_answer,
        within_cluster_other_answer_cosine=other_answer,
        within_pairs=int(within.size),
        random_pairs=int(random_pairs.size),
        clusters_sampled=int(len(np.unique(labels[grouped]))),
        silhouette=silhouette,
        silhouette_sample=n_sil,
        sketch_dims=dims,
        sketched_parameters=sum(p.numel() for p in sketched_parameters(model)),
    )


def premise_on_pool(
    traj: pl.DataFrame,
    data: pl.DataFrame,
    clusters: pl.DataFrame,
    model_dir,
    max_length: int,
    steps: tuple[int, ...] | None = None,
    seed: int = 0,
) -> PremiseReport:
    """:func:`premise_report` for a pool: its trajectories, rows and clusters (by example_id),
    with the proxy checkpoint saved in ``model_dir`` (its last one, normally)."""
    import torch

    from ..lm.encoding import encode
    from ..lm.models import load_causal_lm
    from .common import matrix, pick_steps

    rows = clusters.select("example_id", "cluster").join(
        traj, on="example_id", how="inner", maintain_order="left"
    )
    labelled = [c for c in ("source", "answer") if c in data.columns]
    rows = rows.join(
        data.select("example_id", *labelled), on="example_id", how="inner", maintain_order="left"
    )
    rows = rows.filter(_has_response(rows))  # a row with no response has no gradient
    features = matrix(rows, pick_steps(rows, steps, "trained"))
    sources = rows["source"].to_numpy() if "source" in rows.columns else None
    # Chat rows and other free text have no answer: the same-answer control is then not run.
    has_answers = "answer" in rows.columns and rows["answer"].null_count() == 0
    answers = rows["answer"].to_numpy() if has_answers else None
    labels = rows["cluster"].to_numpy()
    text = [c for c in ("prompt", "response", "task", "messages") if c in data.columns]
    model, tokenizer = load_causal_lm(model_dir)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")

    def encode_rows(idx: np.ndarray) -> Encoded:
        ids = rows.select(pl.col("example_id").gather(idx))
        picked = ids.join(
            data.select("example_id", *text), on="example_id", how="left", maintain_order="left"
        )
        return encode(picked, tokenizer, max_length)

    return premise_report(
        model, encode_rows, labels, features, seed=seed, sources=sources, answers=answers
    )


def _has_response(rows: pl.DataFrame) -> pl.Expr:
    """Rows the proxy scored: a response token within max_length (older tables lack the count;
    there every loss of such a row is NaN)."""
    if "n_response_tokens" in rows.columns:
        return pl.col("n_response_tokens") > 0
    from ..trajectories import loss_columns

    return pl.all_horizontal([pl.col(c).is_finite() for c in loss_columns(rows)])
