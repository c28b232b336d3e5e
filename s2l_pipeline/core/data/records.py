"""What one input record becomes, and the errors that name a bad file or field."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownSchemaError(ValueError):
    """A file whose fields match none of the supported schemas."""


class FieldError(ValueError):
    """One record violates its schema; ``field`` names the culprit."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Normalized:
    prompt: str
    response: str
    answer: str | None
    source: str | None
    messages: str | None = None  # a chat record's turns as JSON (core/data/chat.py)
