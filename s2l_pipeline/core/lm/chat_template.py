"""A conversation as text segments, each marked as in the loss or not.

With a tokenizer that has a chat template, the segments are the differences between the
template's renderings of growing prefixes of the conversation: before each assistant turn
(with the generation prompt) and after it, so the loss sees exactly the template's assistant
text, end-of-turn marker included. Without one, the plain template of core/data/chat.py:
'Role: content' lines, each assistant reply followed by the eos token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data.chat import PLAIN_PREFIX


@dataclass(frozen=True)
class Segment:
    text: str
    train: bool  # in the loss
    eos: bool = False  # the tokenizer's eos token follows (plain template replies)


class ChatTemplateError(ValueError):
    """The tokenizer's chat template does not render a conversation as growing prefixes."""


def turns_of(messages: str) -> list[dict]:
    return json.loads(messages)


def chat_segments(turns: list[dict], tokenizer) -> list[Segment]:
    """The conversation's segments under the tokenizer's chat template, else the plain one."""
    if getattr(tokenizer, "chat_template", None):
        return _template_segments(turns, tokenizer)
    return plain_segments(turns)


def plain_segments(turns: list[dict]) -> list[Segment]:
    """'System: ...', 'User: ...' lines; 'Assistant: ' then the reply and eos, in the loss."""
    out: list[Segment] = []
    context = ""
    for i, turn in enumerate(turns):
        sep = "\n" if i else ""
        if turn["role"] == "assistant":
            out.append(Segment(context + sep + PLAIN_PREFIX["assistant"], False))
            out.append(Segment(turn["content"], turn.get("train", True), eos=True))
            context = ""
        else:
            context += sep + PLAIN_PREFIX[turn["role"]] + turn["content"]
    return out


def _template_segments(turns: list[dict], tokenizer) -> list[Segment]:
    def render(part: list[dict], prompt: bool) -> str:
        clean = [{"role": t["role"], "content": t["content"]} for t in part]
        return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=prompt)

    out: list[Segment] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before, after = render(turns[:i], True), render(turns[: i + 1], False)
        if not (before.startswith(done) and after.startswith(before)):
            raise ChatTemplateError(
                "the tokenizer's chat template does not render the conversation as growing "
                f"prefixes (at turn {i}), so assistant tokens cannot be told apart; set the "
                "tokenizer's chat_template to None to use the plain template"
            )
        out.append(Segment(before[len(done) :], False))
        out.append(Segment(after[len(before) :], turn.get("train", True)))
        done = after
    return out
