"""Turn (prompt, response) rows into token ids with the prompt masked out of the loss.

Prompt and response are tokenized separately, so the boundary between them is exact; the
response ends with the tokenizer's eos token. A row longer than ``max_length`` is cut from the
right: its response loses its end, and it is flagged ``truncated`` (a prompt that fills the
whole limit leaves no response token at all, and its loss is undefined, never 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

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


@dataclass
class Encoded:
    """Token ids of every row plus where each response starts."""

    input_ids: list[list[int]]
    prompt_lens: np.ndarray  # int32, tokens before the first response token
    n_response_tokens: np.ndarray  # int32, response tokens kept after truncation
    truncated: np.ndarray  # bool, response cut (or removed) by max_length

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def labels(self, i: int) -> list[int]:
        """Labels for row ``i``: -100 (ignored) on the prompt, the token id on the response."""
        p = int(self.prompt_lens[i])
        ids = self.input_ids[i]
        return [-100] * p + ids[p:]

    def subset(self, idx: np.ndarray) -> Encoded:
        return Encoded(
            [self.input_ids[i] for i in idx],
            self.prompt_lens[idx],
            self.n_response_tokens[idx],
            self.truncated[idx],
        )


def encode(df: pl.DataFrame, tokenizer, max_length: int) -> Encoded:
    """Encode the ``prompt``/``response``/``task`` columns of ``df`` for causal-LM loss."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; responses must end with one")
    prompts = render_prompts(df["prompt"].to_list(), df["task"].to_list())
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(df["response"].to_list(), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    input_ids, prompt_lens, n_resp, truncated = [], [], [], []
    for p, r in zip(p_ids, r_ids, strict=True):
        full = p + r + [eos]
        cut = len(full) > max_length
        full = full[:max_length]
        plen = min(len(p), max_length)
        input_ids.append(full)
        prompt_lens.append(plen)
        n_resp.append(len(full) - plen)
        truncated.append(cut)
    return Encoded(
        input_ids,
        np.asarray(prompt_lens, dtype=np.int32),
        np.asarray(n_resp, dtype=np.int32),
        np.asarray(truncated, dtype=bool),
    )
