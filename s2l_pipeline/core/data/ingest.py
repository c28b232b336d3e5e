"""Build the clean training table from every configured input, keeping every rejected row.

The rules: a record must decode, carry its schema's prompt and response as non-empty strings,
and not repeat an example already seen (same prompt and response). Each violation becomes a row
of the rejected table with its file, line, field and reason; nothing is dropped silently.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import polars as pl

from ..support import storage
from ..support.hashing import example_ids
from .chat import ChatFormat
from .formats import (
    FieldError,
    FieldMapping,
    Format,
    UnknownSchemaError,
    detect_format,
    get_format,
)
from .generator import TRAIN_FAMILIES, Family, generate_mixture
from .hf_source import hf_display, iter_hf_records
from .problem_identity import normalized_column
from .readers import SUFFIXES, FileReadError, RecordError, iter_records
from .schema import EVAL_SCHEMA, ORIGIN_SCHEMA, RAW_SCHEMA, REJECTED_SCHEMA, as_eval_table

log = logging.getLogger(__name__)

EMBEDDED_FILE = "embedded:reasoning-gym"
# The largest share of a source carved as its in-domain test set.
HELDOUT_SHARE = 0.1
_DETECT_SAMPLE = 200


@dataclass(frozen=True)
class EmbeddedSource:
    size: int = 20_000
    seed: int = 0
    heldout_per_family: int = 300
    families: tuple[Family, ...] = TRAIN_FAMILIES  # benchmarks pick other families/settings


@dataclass(frozen=True)
class FileSource:
    """A local path or s3:// uri: one file, or a folder/prefix of JSONL, JSON and Parquet files."""

    path: str
    format: str | None = None  # None: detect from the fields
    source: str | None = None  # None: the record's own 'source', else the format's name
    task: str | None = None  # None: the format's task
    # Any schema: templates over the record's fields, e.g. {"prompt": "{question}", ...}
    fields: dict[str, str] | None = None
    assistant_turns: str | None = None  # chat files: 'all' (default) or 'last' in the loss


@dataclass(frozen=True)
class HFSource:
    name: str
    config: str | None = None
    split: str = "train"
    format: str | None = None
    source: str | None = None
    task: str | None = None
    assistant_turns: str | None = None  # chat datasets, as FileSource.assistant_turns


@dataclass(frozen=True)
class DatasetSpec:
    embedded: EmbeddedSource | None = field(default_factory=EmbeddedSource)
    files: tuple[FileSource, ...] = ()
    hf: tuple[HFSource, ...] = ()
    heldout_per_source: int = 0  # in-domain held-out rows carved from each file/hf source
    # ... and at most this share of a source: 200 of 254 rows would leave too few to train on.
    heldout_share: float = HELDOUT_SHARE
    max_rejected_share: float = 0.01
    # Exact duplicates (same prompt and response): 'drop' drops and counts them apart (real
    # sets repeat: templated reports, scraped chats); 'reject' counts them as rejected rows.
    duplicates: str = "drop"


@dataclass
class LoadedDataset:
    train: pl.DataFrame  # RAW_SCHEMA
    heldout: pl.DataFrame  # EVAL_SCHEMA, in-domain
    rejected: pl.DataFrame  # REJECTED_SCHEMA
    empty_files: list[str] = field(default_factory=list)  # skipped: no record at all
    # with duplicates='drop': the dropped copies (REJECTED_SCHEMA), not counted as rejected
    duplicates: pl.DataFrame | None = None
    origins: pl.DataFrame | None = None  # ORIGIN_SCHEMA: each train row's file, line, record

    @property
    def rows_seen(self) -> int:
        dropped = self.duplicates.height if self.duplicates is not None else 0
        return self.train.height + self.heldout.height + self.rejected.height + dropped

    @property
    def rejected_share(self) -> float:
        return self.rejected.height / self.rows_seen if self.rows_seen else 0.0


class TooManyRejected(ValueError):
    """The rejected share passed the configured threshold."""


class RecordCollector:
    """Accumulates accepted and rejected rows as column lists (one DataFrame build at the end)."""

    def __init__(self) -> None:
        self.ok: dict[str, list] = {
            k: []
            for k in (
                "source",
                "prompt",
                "response",
                "answer",
                "task",
                "messages",
                "_file",
                "_line",
                "_record",
            )
        }
        self.bad: dict[str, list] = {k: [] for k in REJECTED_SCHEMA}
        self.empty_files: list[str] = []

    def reject(self, file: str, line: int, fld: str | None, reason: str, raw: str) -> None:
        for k, v in zip(REJECTED_SCHEMA, (file, line, fld, reason, raw), strict=True):
            self.bad[k].append(v)

    def add_records(
        self,
        records: Iterable[tuple[int, dict | RecordError]],
        file: str,
        fmt_name: str | None,
        source: str | None,
        task: str | None,
        fields: Mapping[str, str] | None = None,
        assistant_turns: str | None = None,
    ) -> None:
        records = list(records)
        if not records:  # an empty file says nothing about the schema: skip it, and say so
            log.warning("%s: no records (empty file), skipped", file)
            self.empty_files.append(file)
            return
        if fields:  # named after its file unless a source is given: 'radiology_train'
            try:
                fmt: Format | ChatFormat | FieldMapping = FieldMapping(
                    dict(fields), task, file_label(file)
                )
            except UnknownSchemaError as exc:
                raise UnknownSchemaError(f"{file}: {exc}") from None
        elif fmt_name:
            fmt = get_format(fmt_name, file)
        else:
            _undecodable_file(records, file)
            decoded = (r for _, r in records if isinstance(r, dict))
            fmt = detect_format(itertools.islice(decoded, _DETECT_SAMPLE), file)
        if assistant_turns is not None:
            if not isinstance(fmt, ChatFormat):
                raise UnknownSchemaError(
                    f"{file}: assistant_turns applies to chat files (messages or "
                    f"conversations), and this file reads as {fmt.name}"
                )
            fmt = fmt.with_turns(assistant_turns)
        log.info("%s: %d records, schema %s", file, len(records), fmt.name)
        for line, rec in records:
            if isinstance(rec, RecordError):
                self.reject(file, line, None, rec.reason, rec.raw)
                continue
            try:
                norm = fmt.normalize(rec)
            except FieldError as err:
                self.reject(file, line, err.field, err.reason, _raw(rec))
                continue
            self.ok["source"].append(source or norm.source or fmt.name)
            self.ok["prompt"].append(norm.prompt)
            self.ok["response"].append(norm.response)
            self.ok["answer"].append(norm.answer)
            self.ok["task"].append(task or fmt.task)
            self.ok["messages"].append(norm.messages)
            self.ok["_file"].append(file)
            self.ok["_line"].append(line)
            self.ok["_record"].append(_raw(rec))

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        accepted = pl.DataFrame(
            self.ok,
            schema={**{k: pl.String for k in self.ok}, "_line": pl.Int64},
        )
        return accepted, pl.DataFrame(self.bad, schema=REJECTED_SCHEMA)


def file_label(path: str) -> str:
    """A short name for a file: its folder and stem, e.g. 'gsm8k_test'. A relative path that
    climbs ('../test.jsonl') names the folder it reaches: '..' in a set's name made MLflow
    refuse its metrics ('.._test.accuracy' may resolve to another name as a file)."""
    p = PurePosixPath(path.rstrip("/"))
    stem = p.name.split(".")[0]
    folder = p.parent.name
    if folder == ".." and not storage.is_s3(path):
        folder = storage.Path(path).expanduser().resolve().parent.name
    return f"{folder}_{stem}" if folder and folder != ".." else stem


def _raw(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, default=str)


def expand_path(path: str, endpoint_url: str | None = None) -> list[str]:
    """A folder or prefix becomes its data files (sorted); a single file stays as it is."""
    is_dir = not storage.is_s3(path) and storage.Path(path).expanduser().is_dir()
    if is_dir or (storage.is_s3(path) and path.endswith("/")):
        uris = [u for u in storage.list_uris(path, endpoint_url) if u.lower().endswith(SUFFIXES)]
        if not uris:
            raise FileReadError(f"{path}: no {', '.join(SUFFIXES)} files under this folder")
        return uris
    return [path]


def file_records(uri: str, endpoint_url: str | None) -> Iterator[tuple[int, dict | RecordError]]:
    try:
        local = storage.fetch(uri, endpoint_url)
    except FileNotFoundError as exc:
        raise FileReadError(str(exc)) from exc
    return iter_records(local, uri)


def load_dataset(spec: DatasetSpec, endpoint_url: str | None = None) -> LoadedDataset:
    """Read every input of ``spec`` into (train, in-domain held-out, rejected) tables."""
    collector = RecordCollector()
    for fs in spec.files:
        for uri in expand_path(fs.path, endpoint_url):
            collector.add_records(
                file_records(uri, endpoint_url),
                uri,
                fs.format,
                fs.source,
                fs.task,
                fs.fields,
                fs.assistant_turns,
            )
    for hs in spec.hf:
        collector.add_records(
            iter_hf_records(hs.name, hs.config, hs.split),
            hf_display(hs.name, hs.config, hs.split),
            hs.format,
            hs.source,
            hs.task,
            None,
            hs.assistant_turns,
        )
    accepted, rejected = collector.frames()
    external_train, external_held = split_heldout(
        _with_ids(accepted), spec.heldout_per_source, spec.heldout_share
    )

    parts, held_parts = [], [external_held]
    if spec.embedded is not None:
        e = spec.embedded
        emb_train, emb_held = generate_mixture(e.size, e.seed, e.heldout_per_family, e.families)
        parts.append(
            emb_train.with_columns(
                _file=pl.lit(EMBEDDED_FILE),
                _line=pl.int_range(1, emb_train.height + 1, dtype=pl.Int64),
                _record=pl.struct(
                    question="prompt", answer="response", source="source"
                ).struct.json_encode(),
            )
        )
        held_parts.insert(0, emb_held)
    parts.append(external_train)
    combined = pl.concat(parts, how="vertical")
    train, dups = _drop_duplicates(combined)
    if spec.duplicates not in ("reject", "drop"):
        raise ValueError(f"duplicates must be 'reject' or 'drop', not {spec.duplicates!r}")
    drop = spec.duplicates == "drop"
    return LoadedDataset(
        train=train.select(list(RAW_SCHEMA)),
        origins=origins_of(train),
        heldout=as_eval_table(pl.concat(held_parts, how="vertical")),
        rejected=rejected if drop else pl.concat([rejected, dups], how="vertical"),
        empty_files=collector.empty_files,
        duplicates=dups if drop else None,
    )


def origins_of(train: pl.DataFrame) -> pl.DataFrame:
    """Where each training row came from and the record as the user wrote it (for export)."""
    return train.select(
        "example_id", file=pl.col("_file"), line=pl.col("_line"), record=pl.col("_record")
    ).cast(ORIGIN_SCHEMA)


def _with_ids(df: pl.DataFrame) -> pl.DataFrame:
    ids = example_ids(identity_text(df), df["response"].to_list())
    return df.with_columns(example_id=pl.Series(ids, dtype=pl.String)).select(
        [*RAW_SCHEMA, "_file", "_line", "_record"]
    )


def identity_text(df: pl.DataFrame) -> list[str]:
    """What makes a row itself besides its response: the prompt, or a chat row's whole turns
    (two conversations can flatten to the same plain text)."""
    if "messages" not in df.columns:
        return df["prompt"].to_list()
    return [
        p if m is None else json.dumps([[t["role"], t["content"]] for t in json.loads(m)])
        for p, m in zip(df["prompt"], df["messages"], strict=True)
    ]


def _drop_duplicates(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep the first occurrence of each example_id; later ones become rejected rows."""
    first = df.filter(pl.col("example_id").is_first_distinct())
    dups = df.filter(~pl.col("example_id").is_first_distinct()).join(
        first.select("example_id", _ffile="_file", _fline="_line"),
        on="example_id",
        how="left",
        maintain_order="left",
    )
    rejected = dups.select(
        file=pl.col("_file"),
        line=pl.col("_line"),
        field=pl.lit(None, dtype=pl.String),
        reason=pl.format(
            "duplicate example: same prompt and response as {}:{} (example_id {})",
            "_ffile",
            "_fline",
            "example_id",
        ),
        raw=pl.struct("source", "prompt", "response").struct.json_encode(),
    )
    return first, rejected.cast(REJECTED_SCHEMA)


def _undecodable_file(records: list, file: str) -> None:
    """A file none of whose first records decodes (latin-1, not JSON) has no schema to detect:
    say why, with the first line, instead of 'unknown schema (fields seen: none)'."""
    sample = records[:_DETECT_SAMPLE]
    if any(isinstance(r, dict) for _, r in sample):
        return
    line, err = sample[0]
    hint = " (save it as UTF-8)" if "not UTF-8" in err.reason else ""
    raise UnknownSchemaError(
        f"{file}: line {line}: {err.reason}; no record among the first {len(sample)} could "
        f"be read{hint}"
    )


def split_heldout(
    df: pl.DataFrame, per_source: int, share: float = HELDOUT_SHARE
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Carve up to ``per_source`` problems (and ``share`` of them, under half) of each source
    as an in-domain test set.

    A problem is its prompt, case and spacing folded: every row asking it goes to the same side,
    so no test prompt is trained on under another response. Problems are chosen by their
    smallest example_id (a content hash): random-like, yet the same on every run and
    independent of file order.
    """
    empty_held = pl.DataFrame(schema=EVAL_SCHEMA)
    if per_source <= 0 or share <= 0 or df.is_empty():
        return df, empty_held
    keyed = df.with_columns(_key=normalized_column("prompt"))
    first = keyed.group_by("source", "_key").agg(_first=pl.col("example_id").min())
    # A share of the source's problems, rounded up yet under half (none of a source of two).
    problems = pl.len().over("source")
    first = first.with_columns(
        _rank=pl.col("_first").rank("ordinal").over("source"),
        _cap=pl.min_horizontal(
            pl.lit(per_source), (problems * share).ceil().cast(pl.Int64), (problems - 1) // 2
        ),
    )
    ranked = keyed.join(first, on=["source", "_key"], how="left")
    held_mask = pl.col("_rank") <= pl.col("_cap")
    held = ranked.filter(held_mask).with_columns(
        eval_set=pl.col("source"), domain=pl.lit("in_domain"), metadata=pl.lit(None, pl.String)
    )
    train = ranked.filter(~held_mask).drop("_key", "_first", "_rank", "_cap")
    return train, as_eval_table(held)


def check_rejections(loaded: LoadedDataset, max_share: float, rejected_uri: str = "") -> None:
    """Raise TooManyRejected past ``max_share`` of rejected rows, naming the top reasons, or
    when nothing is left to train on (an empty file as the only input)."""
    check_rejected_share(loaded.rejected, loaded.rows_seen, max_share, rejected_uri)
    if loaded.train.is_empty():
        empty = (
            f"; empty files skipped: {', '.join(loaded.empty_files)}" if loaded.empty_files else ""
        )
        raise TooManyRejected(
            f"no training rows: {loaded.rows_seen} rows read, {loaded.rejected.height} rejected"
            f"{empty}. Give a file with records, or keep the embedded data on."
        )


def check_rejected_share(
    rejected: pl.DataFrame, rows_seen: int, max_share: float, rejected_uri: str = ""
) -> None:
    """Raise TooManyRejected when ``rejected`` is over ``max_share`` of ``rows_seen``."""
    share = rejected.height / rows_seen if rows_seen else 0.0
    if share <= max_share:
        return
    top = (
        rejected.group_by("file", "reason")
        .agg(pl.len().alias("n"), pl.col("line").min().alias("first_line"))
        .sort(["n", "file", "first_line"], descending=[True, False, False])
        .head(5)
    )
    lines = [
        f"  {r['n']} x {r['file']} (first at line {r['first_line']}): {r['reason']}"
        for r in top.iter_rows(named=True)
    ]
    totals = reason_totals(rejected)
    where = f"; every rejected row is in {rejected_uri}" if rejected_uri else ""
    if rejected.height == rows_seen:  # the threshold is not the problem: the schema is
        hints = [
            "every row was rejected, so check the file against the reasons above (its format:, "
            "or the fields: templates and the record's field names)"
        ]
    else:
        hints = [
            f"raise max_rejected_share (now {max_share:g}; raw_dataset's config, or eval_sets' "
            "for evaluation files) to accept them"
        ]
    if "duplicate example" in totals:
        hints.append(
            "drop exact duplicates and count them apart (s2l run --duplicates drop, or "
            "duplicates: drop in raw_dataset's config)"
        )
    raise TooManyRejected(
        f"{rejected.height} of {rows_seen} rows rejected ({share:.2%}), more than "
        f"the allowed {max_share:.2%} (max_rejected_share){where}.\nBy reason: "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
        + "\nMost common:\n"
        + "\n".join(lines)
        + "\nTo go on: "
        + "; or ".join(hints)
        + "."
    )


def reason_totals(rejected: pl.DataFrame) -> dict[str, int]:
    """Rejected rows per kind of reason (the reason's text before its first ':' or '(')."""
    kinds = rejected["reason"].str.extract(r"^([^:(]+)", 1).str.strip_chars()
    counts = kinds.value_counts(sort=True, name="n")
    return {r[kinds.name]: r["n"] for r in counts.iter_rows(named=True)}
