"""Read input files record by record, keeping each record's line so a rejection can name it.

JSONL: one record per line; a line that is not UTF-8 or not JSON becomes a ``RecordError``
instead of stopping the read. JSON (an array, or an object holding one array) and Parquet are
read whole; their "line" is the 1-based record number. A file that cannot be opened or parsed
at all raises ``FileReadError`` at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, as some editors and exports write it


class FileReadError(OSError):
    """The file as a whole cannot be read; names the file."""


@dataclass(frozen=True)
class RecordError:
    """A record we could not decode; kept with its raw text for the rejected table."""

    reason: str
    raw: str


def file_kind(path: Path, display: str) -> str:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return "jsonl" if suffix == ".ndjson" else suffix[1:]
    try:
        with open(path, "rb") as f:
            head = f.read(4096).removeprefix(BOM).lstrip()
    except OSError as exc:
        raise FileReadError(f"{display}: cannot open ({exc})") from exc
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    raise FileReadError(f"{display}: cannot tell the file type; use one of {', '.join(SUFFIXES)}")


def iter_records(path: Path, display: str) -> Iterator[tuple[int, dict | RecordError]]:
    """(line, record or RecordError) for every record of a JSONL, JSON or Parquet file."""
    kind = file_kind(path, display)
    if kind == "jsonl":
        yield from _iter_jsonl(path, display)
    elif kind == "json":
        yield from _iter_json(path, display)
    else:
        yield from _iter_parquet(path, display)


def _iter_jsonl(path: Path, display: str) -> Iterator[tuple[int, dict | RecordError]]:
    try:
        f = open(path, "rb")  # noqa: SIM115 (open errors name the file; closed by `with` below)
    except OSError as exc:
        raise FileReadError(f"{display}: cannot open ({exc})") from exc
    with f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    line_no,
                    RecordError(
                        f"undecodable line: not UTF-8 ({exc.reason})",
                        raw.decode("utf-8", "backslashreplace").rstrip("\n"),
                    ),
                )
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                yield (
                    line_no,
                    RecordError(f"undecodable line: invalid JSON ({exc.msg})", text.rstrip("\n")),
                )
                continue
            if not isinstance(rec, dict):
                yield (
                    line_no,
                    RecordError(
                        f"undecodable line: a JSON {type(rec).__name__}, not an object",
                        text.rstrip(),
                    ),
                )
                continue
            yield line_no, rec


def _iter_json(path: Path, display: str) -> Iterator[tuple[int, dict | RecordError]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines in a file named .json (AQuA-RAT ships so)
            yield from _iter_jsonl(path, display)
            return
        raise FileReadError(f"{display}: not a readable JSON file ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FileReadError(f"{display}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise FileReadError(f"{display}: a JSON object must hold exactly one list of records")
        data = lists[0]
    if not isinstance(data, list):
        raise FileReadError(f"{display}: JSON must be a list of records")
    for i, rec in enumerate(data, start=1):
        if isinstance(rec, dict):
            yield i, rec
        else:
            yield (
                i,
                RecordError(
                    f"record is a JSON {type(rec).__name__}, not an object",
                    json.dumps(rec, ensure_ascii=False, default=str),
                ),
            )


def _iter_parquet(path: Path, display: str) -> Iterator[tuple[int, dict | RecordError]]:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for corrupt files
        raise FileReadError(f"{display}: not a readable Parquet file ({exc})") from exc
    yield from enumerate(df.iter_rows(named=True), start=1)
