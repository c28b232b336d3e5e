"""Turn (prompt, response) rows into token ids with the prompt masked out of the loss.

Prompt and response are tokenized separately, so the boundary between them is exact; the
response ends with the tokenizer's eos token. A row longer than ``max_length`` is cut from the
right: its response loses its end, and it is flagged ``truncated`` (a prompt that fills the
whole limit leaves no response token at all, and its loss is undefined, never 0).

A chat row (its ``messages`` set) is encoded turn by turn (core/lm/chat_template.py): every
assistant turn in the loss is a span of its own, so the loss may count several.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .chat_template import Segment, chat_segments, plain_segments, turns_of

PROMPT_TEMPLATES = {
    "math": "{prompt}\nAnswer: ",
    "summarization": "Findings: {prompt}\nImpression: ",
    "response_only": "{prompt}",  # IFD's second pass: the response with nothing before it
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
_CHUNK = 8192  # rows tokenized at once: bounds the Python lists alive during encode


class TokenRows(Sequence):
    """Every row's token ids in one int32 buffer; a row reads back as a list.

    Measured: a Python list of ints per row held ~20 KB a row at MathInstruct lengths (5.4 GiB
    for 262K rows); one buffer holds 4 bytes a token (about 1 KB a row)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> TokenRows:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int32, int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: list[TokenRows]) -> TokenRows:
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
        offsets = np.concatenate(
            [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)]
        )
        return cls(np.concatenate([p.flat for p in parts]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def take(self, idx: np.ndarray) -> TokenRows:
        return TokenRows.from_lists([self[int(i)] for i in idx])


@dataclass
class Encoded:
    """Token ids of every row plus where each response starts."""

    input_ids: TokenRows
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
        return self.input_ids.lengths

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

    def cut(self, max_length: int) -> Encoded:
        """At most ``max_length`` tokens a row: a plain row loses its end (as encode cuts), a
        chat row its oldest turns, so the reply it ends with is still scored."""
        ids, plens, n_resp, cut, spans = [], [], [], [], {}
        for i in range(len(self)):
            row = self.input_ids[i]
            if self.spans is None or i not in self.spans:
                span = ((int(self.prompt_lens[i]), len(row)),)
                kept_ids, kept, p = _right_cut(row, span, max_length)
                ids.append(kept_ids)
                plens.append(p)
                n_resp.append(sum(b - a for a, b in kept))
                cut.append(len(row) > max_length)
                continue
            drop = max(0, len(row) - max_length)
            kept = tuple(
                (max(a - drop, 1 if drop else a), b - drop)
                for a, b in self.spans[i]
                if b - drop > (1 if drop else 0)
            )
            ids.append(row[drop:])
            spans[i] = kept
            plens.append(kept[0][0] if kept else len(ids[-1]))
            n_resp.append(sum(b - a for a, b in kept))
            cut.append(drop > 0)
        return Encoded(
            TokenRows.from_lists(ids),
            np.asarray(plens, dtype=np.int32),
            np.asarray(n_resp, dtype=np.int32),
            np.asarray(cut, dtype=bool),
            spans or None,
        )

    def subset(self, idx: np.ndarray) -> Encoded:
        spans = None
        if self.spans:
            spans = {j: self.spans[int(i)] for j, i in enumerate(idx) if int(i) in self.spans}
        return Encoded(
            self.input_ids.take(idx),
            self.prompt_lens[idx],
            self.n_response_tokens[idx],
            self.truncated[idx],
            spans,
            None if self.context_lens is None else self.context_lens[idx],
        )


def encode(df: pl.DataFrame, tokenizer, max_length: int) -> Encoded:
    """Encode the ``prompt``/``response``/``task`` columns of ``df`` for causal-LM loss (chat
    rows from their ``messages``), a chunk of rows at a time."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; responses must end with one")
    parts = [
        _encode_chunk(df.slice(start, _CHUNK), tokenizer, max_length)
        for start in range(0, df.height, _CHUNK)
    ]
    spans: dict[int, tuple[Span, ...]] = {}
    for k, part in enumerate(parts):
        spans.update({k * _CHUNK + i: v for i, v in (part.spans or {}).items()})
    has_context = any(p.context_lens is not None for p in parts)
    return Encoded(
        TokenRows.concat([p.input_ids for p in parts]),
        _cat([p.prompt_lens for p in parts], np.int32),
        _cat([p.n_response_tokens for p in parts], np.int32),
        _cat([p.truncated for p in parts], bool),
        spans or None,
        _cat([_context_lens(p) for p in parts], np.int32) if has_context else None,
    )


def _cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)


def _context_lens(part: Encoded) -> np.ndarray:
    return part.context_lens if part.context_lens is not None else part.prompt_lens


def _encode_chunk(df: pl.DataFrame, tokenizer, max_length: int) -> Encoded:
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
        kept_ids, kept, prompt_len = _right_cut(full, row_spans, max_length)
        input_ids.append(kept_ids)
        truncated.append(len(full) > max_length)
        prompt_lens.append(prompt_len)
        context_lens.append(min(context_len, max_length))
        n_resp.append(sum(b - a for a, b in kept))
        if chats[i] is not None:
            spans[i] = kept
    return Encoded(
        TokenRows.from_lists(input_ids),
        np.asarray(prompt_lens, dtype=np.int32),
        np.asarray(n_resp, dtype=np.int32),
        np.asarray(truncated, dtype=bool),
        spans or None,
        np.asarray(context_lens, dtype=np.int32) if spans else None,
    )


def _right_cut(ids, spans: tuple[Span, ...], max_length: int):
    """A row cut at ``max_length`` from its end: (ids kept, loss spans kept, prompt length)."""
    kept = tuple((a, min(b, max_length)) for a, b in spans if a < min(b, max_length))
    return ids[:max_length], kept, kept[0][0] if kept else min(spans[0][0], max_length)


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
