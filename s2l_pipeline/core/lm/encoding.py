"""Turn (prompt, response) rows into token ids with the prompt masked out of the loss.

Prompt and response are tokenized separately, so the boundary between them is exact; the
response ends with the tokenizer's eos token. A row longer than ``max_length`` is cut from the
right: its response loses its end, and it is flagged ``truncated`` (a prompt that fills the
whole limit leaves no response token at all, and its loss is undefined, never 0).

A chat row (its ``messages`` set) is encoded turn by turn (core/lm/chat_template.py): every
assistant turn in the loss is a span of its own, so the loss may count several.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .chat_template import Segment, chat_segments, plain_segments, turns_of

PROMPT_TEMPLATES = {
    "math": "{prompt}\nAnswer: ",
    "summarization": "Findings: {prompt}\nImpression: ",
}


def render_prompts(prompts: list[str], tasks: list[str]) -> list[str]:
    """The text a model sees before its response, per task."""
    return [
        PROMPT_TEMPLATES.get(t, PROMPT_TEMPLATES["math"]).format(prompt=p)
        for p, t in zip(prompts, tasks, strict=True)
    ]


def tokenizer_texts(df: pl.DataFrame) -> list[str]:
    """Every text a model of these rows reads (contexts and responses), to train a tokenizer on."""
    chats = _messages(df)
    plain = [i for i, m in enumerate(chats) if m is None]
    texts = render_prompts([df["prompt"][i] for i in plain], [df["task"][i] for i in plain]) + [
        df["response"][i] for i in plain
    ]
    for m in chats:
        if m is not None:
            texts.extend(seg.text for seg in plain_segments(turns_of(m)))
    return texts


def _messages(df: pl.DataFrame) -> list[str | None]:
    if "messages" not in df.columns:
        return [None] * df.height
    return df["messages"].to_list()


Span = tuple[int, int]  # [start, end) of tokens in the loss


@dataclass
class Encoded:
    """Token ids of every row plus where each response starts."""

    input_ids: list[list[int]]
    prompt_lens: np.ndarray  # int32, tokens before the first response token
    n_response_tokens: np.ndarray  # int32, response tokens kept after truncation
    truncated: np.ndarray  # bool, response cut (or removed) by max_length
    # Rows whose loss is not one suffix (chat rows): their spans; others span prompt_len..end.
    spans: dict[int, tuple[Span, ...]] | None = None
    # Where each row's last response starts (what generation is given); None: prompt_lens.
    context_lens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def loss_spans(self, i: int) -> tuple[Span, ...]:
        """The token ranges of row ``i`` that the loss counts."""
        if self.spans is not None and i in self.spans:
            return self.spans[i]
        p, n = int(self.prompt_lens[i]), len(self.input_ids[i])
        return ((p, n),) if n > p else ()

    def labels(self, i: int) -> list[int]:
        """Labels for row ``i``: -100 (ignored) off the loss spans, the token id on them."""
        ids = self.input_ids[i]
        if self.spans is None or i not in self.spans:
            p = int(self.prompt_lens[i])
            return [-100] * p + ids[p:]
        out = [-100] * len(ids)
        for a, b in self.spans[i]:
            out[a:b] = ids[a:b]
        return out

    def context(self, i: int) -> list[int]:
        """The tokens before row ``i``'s last response: the prompt a generation continues."""
        lens = self.context_lens if self.context_lens is not None else self.prompt_lens
        return self.input_ids[i][: int(lens[i])]

    def subset(self, idx: np.ndarray) -> Encoded:
        spans = None
        if self.spans:
            spans = {j: self.spans[int(i)] for j, i in enumerate(idx) if int(i) in self.spans}
        return Encoded(
            [self.input_ids[i] for i in idx],
            self.prompt_lens[idx],
            self.n_response_tokens[idx],
            self.truncated[idx],
            spans,
            None if self.context_lens is None else self.context_lens[idx],
        )


def encode(df: pl.DataFrame, tokenizer, max_length: int) -> Encoded:
    """Encode the ``prompt``/``response``/``task`` columns of ``df`` for causal-LM loss (chat
    rows from their ``messages``)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; responses must end with one")
    eos = tokenizer.eos_token_id
    chats = _messages(df)
    prompts = render_prompts(df["prompt"].to_list(), df["task"].to_list())
    responses = df["response"].to_list()
    plain = [i for i, m in enumerate(chats) if m is None]
    p_ids = _tokenize(tokenizer, [prompts[i] for i in plain])
    r_ids = _tokenize(tokenizer, [responses[i] for i in plain])
    rows: list[tuple[list[int], tuple[Span, ...], int]] = [([], (), 0)] * len(chats)
    for i, p, r in zip(plain, p_ids, r_ids, strict=True):
        rows[i] = (p + r + [eos], ((len(p), len(p) + len(r) + 1),), len(p))
    for i, row in _encode_chats(chats, tokenizer).items():
        rows[i] = row
    input_ids, prompt_lens, context_lens, n_resp, truncated = [], [], [], [], []
    spans: dict[int, tuple[Span, ...]] = {}
    for i, (full, row_spans, context_len) in enumerate(rows):
        kept = tuple((a, min(b, max_length)) for a, b in row_spans if a < min(b, max_length))
        input_ids.append(full[:max_length])
        truncated.append(len(full) > max_length)
        prompt_lens.append(kept[0][0] if kept else min(row_spans[0][0], max_length))
        context_lens.append(min(context_len, max_length))
        n_resp.append(sum(b - a for a, b in kept))
        if chats[i] is not None:
            spans[i] = kept
    return Encoded(
        input_ids,
        np.asarray(prompt_lens, dtype=np.int32),
        np.asarray(n_resp, dtype=np.int32),
        np.asarray(truncated, dtype=bool),
        spans or None,
        np.asarray(context_lens, dtype=np.int32) if spans else None,
    )


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _encode_chats(
    chats: list[str | None], tokenizer
) -> dict[int, tuple[list[int], tuple[Span, ...], int]]:
    """(ids, loss spans, where the last reply starts) of each chat row; the segments of all
    rows are tokenized in one call."""
    segments: dict[int, list[Segment]] = {
        i: chat_segments(turns_of(m), tokenizer) for i, m in enumerate(chats) if m is not None
    }
    flat = _tokenize(tokenizer, [seg.text for segs in segments.values() for seg in segs])
    eos = tokenizer.eos_token_id
    out, k = {}, 0
    for i, segs in segments.items():
        ids: list[int] = []
        row_spans: list[Span] = []
        last_start = 0  # the final segment is the last reply
        for seg in segs:
            piece = flat[k] + ([eos] if seg.eos else [])
            k += 1
            last_start = len(ids)
            if seg.train:
                row_spans.append((len(ids), len(ids) + len(piece)))
            ids.extend(piece)
        out[i] = (ids, tuple(row_spans), last_start)
    return out
