"""The input schemas we understand, how each maps onto (prompt, response, answer), and detection."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .answers import final_answer, gsm8k_answer, last_boxed
from .chat import CHAT_FORMATS, ChatFormat
from .records import FieldError, Normalized, UnknownSchemaError
from .schema import TASKS


@dataclass(frozen=True)
class Format:
    """A supported input schema: the string fields it needs and the task it feeds."""

    name: str
    prompt_field: str
    response_field: str
    task: str
    description: str
    optional: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, str]:
        return (self.prompt_field, self.response_field)

    def normalize(self, rec: dict) -> Normalized:
        """Map one record onto our columns, or raise FieldError naming the bad field."""
        for name in self.required:
            _require_text(rec, name)
        for name in self.optional:
            if rec.get(name) is not None and not isinstance(rec[name], str):
                raise FieldError(name, f"field '{name}' is not a string (got {_kind(rec[name])})")
        prompt, response = rec[self.prompt_field], rec[self.response_field]
        if self.name == "alpaca" and (rec.get("input") or "").strip():
            prompt = f"{prompt}\n\n{rec['input']}"
        source = rec.get("source")
        return Normalized(prompt, response, self._answer(rec), source or None)

    def _answer(self, rec: dict) -> str | None:
        if self.name == "gsm8k":
            return gsm8k_answer(rec["answer"])
        if self.name == "math":
            given = rec.get("answer")
            return (
                given.strip()
                if isinstance(given, str) and given.strip()
                else last_boxed(rec["solution"])
            )
        if self.name == "s2l":
            given = rec.get("answer")
            return given.strip() if isinstance(given, str) and given.strip() else None
        if self.name == "alpaca":  # a bare short output is its own answer ('5', '3/4')
            output = rec["output"].strip()
            short = "\n" not in output and len(output) <= 40
            return final_answer(output) or (output if short else None)
        return None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _require_text(rec: dict, name: str) -> None:
    if name not in rec:
        raise FieldError(name, f"missing field '{name}'")
    value = rec[name]
    if not isinstance(value, str):
        raise FieldError(name, f"field '{name}' is not a string (got {_kind(value)})")
    if not value.strip():
        raise FieldError(name, f"field '{name}' is empty")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "radiology",
            "findings",
            "impression",
            "summarization",
            "MIMIC-III radiology reports: findings -> impression",
        ),
        Format(
            "math",
            "problem",
            "solution",
            "math",
            "MATH: problem, solution with \\boxed{} (optional answer)",
            ("answer",),
        ),
        Format("gsm8k", "question", "answer", "math", "GSM8K: question, answer ending in '#### N'"),
        Format(
            "s2l",
            "prompt",
            "response",
            "math",
            "this project's own tables (raw_dataset, exported subsets): prompt, response, "
            "optional answer and source (task: summarization for summaries)",
            ("answer", "source"),
        ),
        Format(
            "alpaca",
            "instruction",
            "output",
            "math",
            "Alpaca / MathInstruct: instruction, optional input, output, optional source",
            ("input", "source"),
        ),
    )
}


MAPPING_KEYS = ("prompt", "response", "answer", "source")


def mapped_task(templates: Mapping[str, str]) -> str:
    """A mapping with an answer template is answer-scored (math); without one, a summary."""
    return "math" if templates.get("answer") else "summarization"


@dataclass(frozen=True)
class FieldMapping:
    """Any schema, mapped by templates over a record's fields, e.g. AQuA-RAT:
    ``{prompt: "{question}\nOptions: {options}", response: "{rationale}", answer: "{correct}"}``.

    Lists are joined with ", ", objects written as JSON; a field a template names but the
    record lacks (or holds null) rejects the record, naming that field.
    """

    templates: Mapping[str, str] = field(default_factory=dict)
    task: str | None = None  # None: math with an answer template, else summarization
    name: str = "fields"

    def __post_init__(self) -> None:
        unknown = set(self.templates) - set(MAPPING_KEYS)
        missing = {"prompt", "response"} - set(self.templates)
        if unknown or missing:
            raise UnknownSchemaError(
                f"fields mapping: needs prompt and response (and may set answer, source); "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        for key, template in self.templates.items():
            try:
                list(string.Formatter().parse(template))
            except ValueError as exc:
                raise UnknownSchemaError(
                    f"fields mapping: the {key} template {template!r} does not parse ({exc}); "
                    "write a field as {name} and a literal brace as {{ or }}"
                ) from None
        if self.task is None:
            object.__setattr__(self, "task", mapped_task(self.templates))
        if self.task not in TASKS:
            raise UnknownSchemaError(
                f"fields mapping: task {self.task!r} is not one of {', '.join(TASKS)}"
            )
        if self.task == "math" and not self.templates.get("answer"):
            raise UnknownSchemaError(
                "fields mapping: task math needs an answer template (the reference answer a "
                "generation is judged against), e.g. answer: '{correct}'; without one the file "
                "is a summarization set"
            )

    def normalize(self, rec: dict) -> Normalized:
        out = {key: self._render(key, tpl, rec) for key, tpl in self.templates.items()}
        for key in ("prompt", "response"):
            if not out[key].strip():
                raise FieldError(key, f"{key} template {self.templates[key]!r} gives empty text")
        return Normalized(
            out["prompt"], out["response"], out.get("answer") or None, out.get("source") or None
        )

    @staticmethod
    def _render(key: str, template: str, rec: dict) -> str:
        values = {}
        for _, name, _, _ in string.Formatter().parse(template):
            if name is None:
                continue
            if rec.get(name) is None:
                raise FieldError(name, f"missing field '{name}' (used by the {key} template)")
            values[name] = _readable(rec[name])
        return template.format_map(values)


def _readable(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_readable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def supported_schemas() -> str:
    every = [*CHAT_FORMATS.values(), *FORMATS.values()]
    return "; ".join(f"{f.name} ({', '.join(f.required + f.optional)})" for f in every)


def detect_format(records: Iterable[dict], file: str) -> Format | ChatFormat:
    """The first schema (chat first, then most specific first) whose required fields the
    sampled records carry. A field that is null in every sampled record is not carried: a
    table in the product's own schema has a ``messages`` column, null unless it is chat."""
    keys: set[str] = set()
    for rec in records:
        keys.update(k for k, v in rec.items() if v is not None)
    for fmt in (*CHAT_FORMATS.values(), *FORMATS.values()):
        if set(fmt.required) <= keys:
            return fmt
    raise UnknownSchemaError(
        f"{file}: unknown schema (fields seen: {sorted(keys) or 'none'}); "
        f"supported schemas: {supported_schemas()}; or map its fields with templates, e.g. "
        f"{fields_example(sorted(keys))}"
    )


def fields_example(keys: list[str]) -> str:
    """A --fields flag built from a file's own field names (its first two), to edit."""
    prompt, response = (keys + ["question", "answer"])[:2] if keys else ("question", "answer")
    mapping = json.dumps({"prompt": "{" + prompt + "}", "response": "{" + response + "}"})
    return (
        f"--fields '{mapping}' (--eval-fields for an evaluation file; fields: in the file's "
        "entry in --config)"
    )


def get_format(name: str, file: str) -> Format | ChatFormat:
    found = FORMATS.get(name) or CHAT_FORMATS.get(name)
    if found is None:
        raise UnknownSchemaError(
            f"{file}: unknown format {name!r}; supported schemas: {supported_schemas()}"
        )
    return found
