"""Chat records: OpenAI/HF ``messages`` and ShareGPT ``conversations``, read into one form.

A conversation is kept whole, as a JSON list of ``{"role", "content"}`` turns in the row's
``messages`` column; an assistant turn left out of the loss carries ``"train": false``. The
row's ``prompt`` is the conversation before its last assistant turn, written in the plain
template (for ids, duplicates and reading), and its ``response`` is that last turn: evaluation
generates it. How the turns become tokens is the model's business (core/lm/chat_template.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from .answers import final_answer
from .records import FieldError, Normalized

ROLES = ("system", "user", "assistant", "tool")
# ShareGPT speaker names (and the variants exports use) onto the roles above.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
ROLE_ALIASES = {"function": "tool", "ipython": "tool", "developer": "system"}
ASSISTANT_TURNS = ("all", "last")  # which assistant turns the loss counts

# The documented plain template, for tokenizers without a chat template: one line per turn,
# 'Role: content'; an assistant turn ends with the tokenizer's eos token.
PLAIN_PREFIX = {
    "system": "System: ",
    "user": "User: ",
    "assistant": "Assistant: ",
    "tool": "Tool: ",
}


@dataclass(frozen=True)
class ChatFormat:
    """A chat schema: its list field, the keys of a turn, and how speaker names map to roles."""

    name: str
    list_field: str
    role_key: str
    content_key: str
    role_map: dict[str, str] | None  # None: roles as written (plus ROLE_ALIASES)
    description: str
    assistant_turns: str = "all"
    task: str = "summarization"  # a free-text reply is judged by ROUGE-L; task: math for answers

    optional: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        return (self.list_field,)

    def with_turns(self, assistant_turns: str | None) -> ChatFormat:
        if assistant_turns is None:
            return self
        if assistant_turns not in ASSISTANT_TURNS:
            raise ValueError(
                f"assistant_turns must be one of {', '.join(ASSISTANT_TURNS)}, "
                f"not {assistant_turns!r}"
            )
        return replace(self, assistant_turns=assistant_turns)

    def normalize(self, rec: dict) -> Normalized:
        """The record as (context, last assistant turn, answer, source, messages JSON)."""
        turns = self._turns(rec)
        last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
        if last != len(turns) - 1:
            raise FieldError(
                f"{self.list_field}[{len(turns) - 1}]",
                f"the conversation ends with a {turns[-1]['role']} turn, not the assistant's: "
                "there is no reply to learn or to generate after it",
            )
        if self.assistant_turns == "last":
            turns = only_last_reply_trained(turns)
        messages = json.dumps(turns, ensure_ascii=False)
        response = turns[-1]["content"]
        source = rec.get("source")
        return Normalized(
            prompt=plain_context(turns),
            response=response,
            answer=final_answer(response),
            source=source if isinstance(source, str) and source else None,
            messages=messages,
        )

    def _turns(self, rec: dict) -> list[dict]:
        turns = rec.get(self.list_field)
        if not isinstance(turns, list) or not turns:
            got = "missing" if turns is None else f"a {type(turns).__name__}"
            if isinstance(turns, list):
                got = "an empty list"
            raise FieldError(self.list_field, f"field '{self.list_field}' is {got}, not turns")
        out = []
        system = rec.get("system")  # LLaMA-Factory's ShareGPT: the system prompt beside the turns
        if isinstance(system, str) and system.strip():
            out.append({"role": "system", "content": system})
        for i, turn in enumerate(turns):
            where = f"{self.list_field}[{i}]"
            if not isinstance(turn, dict):
                raise FieldError(where, f"turn {i} is a {type(turn).__name__}, not an object")
            role = self._role(turn, where)
            entry = {"role": role, "content": _content(turn, role, where, self)}
            if role == "assistant" and turn.get("weight") == 0:  # OpenAI: not trained on
                entry["train"] = False
            out.append(entry)
        if not any(t["role"] == "assistant" for t in out):
            raise FieldError(self.list_field, "no assistant turn: nothing to learn")
        return out

    def _role(self, turn: dict, where: str) -> str:
        raw = turn.get(self.role_key)
        if not isinstance(raw, str):
            raise FieldError(f"{where}.{self.role_key}", f"turn has no '{self.role_key}'")
        key = raw.strip().lower()
        role = self.role_map.get(key) if self.role_map else ROLE_ALIASES.get(key, key)
        if role not in ROLES:
            known = sorted(self.role_map) if self.role_map else ROLES
            raise FieldError(
                f"{where}.{self.role_key}",
                f"unknown role {raw!r} (known: {', '.join(known)})",
            )
        return role


def _content(turn: dict, role: str, where: str, fmt: ChatFormat) -> str:
    """A turn's text: a string, or OpenAI's list of text parts joined (other parts refused)."""
    value = turn.get(fmt.content_key)
    field = f"{where}.{fmt.content_key}"
    if isinstance(value, list):
        parts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise FieldError(field, f"a content part of type {kind!r}: only text is read")
            parts.append(str(part.get("text", "")))
        value = "".join(parts)
    if not (isinstance(value, str) and value.strip()) and turn.get("tool_calls"):
        value = json.dumps(turn["tool_calls"], ensure_ascii=False)  # a turn that calls a tool
    if not isinstance(value, str):
        raise FieldError(field, f"turn has no text '{fmt.content_key}'")
    if not value.strip() and role == "assistant":
        raise FieldError(field, "an assistant turn is empty")
    return value


def only_last_reply_trained(turns: list[dict]) -> list[dict]:
    """The turns with every assistant turn but the last out of the loss."""
    last = len(turns) - 1
    return [
        {**t, "train": False} if t["role"] == "assistant" and i != last else t
        for i, t in enumerate(turns)
    ]


def last_turn_only(messages: str | None) -> str | None:
    """A stored conversation (JSON) with only its last assistant turn in the loss (the
    evaluation's NLL)."""
    if messages is None:
        return None
    return json.dumps(only_last_reply_trained(json.loads(messages)), ensure_ascii=False)


def plain_context(turns: list[dict]) -> str:
    """The turns before the last assistant turn, one 'Role: content' line each."""
    return "\n".join(PLAIN_PREFIX[t["role"]] + t["content"] for t in turns[:-1])


CHAT_FORMATS: dict[str, ChatFormat] = {
    f.name: f
    for f in (
        ChatFormat(
            "messages",
            "messages",
            "role",
            "content",
            None,
            "OpenAI / HF chat: messages of role (system, user, assistant, tool) and content",
        ),
        ChatFormat(
            "sharegpt",
            "conversations",
            "from",
            "value",
            SHAREGPT_ROLES,
            "ShareGPT: conversations of from (human, gpt, system) and value",
        ),
    )
}
