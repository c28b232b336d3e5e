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


def _render(tokenizer, part: list[dict], prompt: bool) -> str:
    clean = [{"role": t["role"], "content": t["content"]} for t in part]
    try:
        return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=prompt)
    except Exception as exc:  # jinja raises its own errors (e.g. a system turn Gemma refuses)
        raise ChatTemplateError(
            f"the tokenizer's chat template fails on a conversation with roles "
            f"{[t['role'] for t in part]}: {exc}"
        ) from exc


def _template_segments(turns: list[dict], tokenizer) -> list[Segment]:
    """Growing prefixes when the template renders them (exact); else each turn located in one
    rendering of the whole conversation (templates that rewrite earlier turns: Qwen3's think
    blocks, an eos only after the last turn)."""
    out: list[Segment] = []
    done = ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = _render(tokenizer, turns[:i], True)
        after = _render(tokenizer, turns[: i + 1], False)
        if not (before.startswith(done) and after.startswith(before)):
            return _located_segments(turns, tokenizer)
        out.append(Segment(before[len(done) :], False))
        out.append(Segment(after[len(before) :], turn.get("train", True)))
        done = after
    return out


def _located_segments(turns: list[dict], tokenizer) -> list[Segment]:
    full = _render(tokenizer, turns, False)
    marker = turn_end_marker(tokenizer)
    out: list[Segment] = []
    cursor = start = 0
    for i, turn in enumerate(turns):
        text = turn["content"]
        at = full.find(text, cursor)
        if at < 0 and text.strip():
            text = text.strip()
            at = full.find(text, cursor)
        if at < 0:
            raise ChatTemplateError(
                f"turn {i} ({turn['role']}) is not in the chat template's rendering of the "
                "conversation, so its tokens cannot be told apart"
            )
        end = at + len(text)
        if turn["role"] == "assistant":
            if i == len(turns) - 1:  # the last reply takes all that follows, as a prefix would
                end = len(full)
            elif marker and full.startswith(marker, end):
                end += len(marker)
            out.append(Segment(full[start:at], False))
            out.append(Segment(full[at:end], turn.get("train", True)))
            start = end
        cursor = end
    return out


_PROBE = [{"role": "user", "content": "\x01u"}, {"role": "assistant", "content": "\x01a"}]


def turn_end_marker(tokenizer) -> str:
    """The text a template writes right after a reply ('<|im_end|>', '<end_of_turn>'), or ''."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False)
    except Exception:  # a template that refuses the probe: no marker known
        return ""
    if _PROBE[1]["content"] not in text:
        return ""
    return text.split(_PROBE[1]["content"], 1)[-1].strip().split("\n")[0].strip()


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Where a generated reply ends: eos, the model's own stop ids, and the template's end of
    turn when it is one token."""
    ids = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra])
    marker = turn_end_marker(tokenizer)
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            ids.add(marker_ids[0])
    return sorted(i for i in ids if i is not None)
