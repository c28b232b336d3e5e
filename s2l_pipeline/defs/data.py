"""Data assets: the training table, the evaluation sets, and shards as they arrive (one
dynamic partition per file), with the checks that guard them."""

import dagster as dg
from pydantic import Field

from ..core.checks import Finding, check_contamination, check_training_table
from ..core.data.eval_sets import EvalFile, eval_summary
from ..core.data.ingest import DatasetSpec, EmbeddedSource, FileSource, HFSource, reason_totals
from ..core.data.readers import FileReadError
from ..core.data.shards import (
    ShardCursor,
    ShardRejected,
    inventory_version,
    list_shards,
    shard_version,
)
from ..core.data.stats import length_summary, rejection_counts, source_counts
from ..core.evaluation.sanity import reference_accuracy
from ..core.stages.data import (
    EvalSetsOptions,
    RawDataset,
    RejectedTooMany,
    make_eval_sets,
    make_raw_dataset,
    make_shard,
)
from ..core.stages.manifests import EvalSetsManifest, RawDatasetManifest, ShardManifest
from ..core.support.tables import read_table
from .check_groups import selected_results
from .executors import cpu_step_tags
from .metadata import md, preview, table_ref_metadata
from .profiles import profiled
from .resources import ArtifactStoreResource, ShardSourceResource


class EmbeddedConfig(dg.Config):
    enabled: bool = Field(True, description="Include the embedded reasoning-gym mixture.")
    size: int = Field(
        EmbeddedSource.size, description="Training examples generated over 12 families."
    )
    seed: int = Field(EmbeddedSource.seed, description="Generator seed: same seed, same table.")
    heldout_per_family: int = Field(
        EmbeddedSource.heldout_per_family, description="In-domain test problems per family."
    )


FIELDS_HELP = (
    "Any schema: templates over the record's fields for prompt, response and optionally answer "
    "and source, e.g. {prompt: '{question}\\nOptions: {options}', response: '{rationale}', "
    "answer: '{correct}'}. Lists are joined with ', '."
)


class FileInput(dg.Config):
    path: str = Field(description="Local path or s3:// uri of a file, or a folder/prefix of them.")
    format: str | None = Field(
        None,
        description="messages | sharegpt | alpaca | gsm8k | math | radiology; empty: detect "
        "from the fields.",
    )
    source: str | None = Field(None, description="Source label; default: the record's own.")
    task: str | None = Field(
        None,
        description="math | summarization; default: the format's, or with fields: math when "
        "an answer template is given, else summarization.",
    )
    fields: dict[str, str] | None = Field(
        None,
        description=FIELDS_HELP,
    )
    assistant_turns: str | None = Field(
        None,
        description="Chat files (messages, conversations): the assistant turns the loss counts, "
        "'all' (default) or 'last'. Evaluation generates the last one either way.",
    )


class HFInput(dg.Config):
    name: str = Field(description="Hub name (TIGER-Lab/MathInstruct) or a local dataset folder.")
    config: str | None = None
    split: str = "train"
    format: str | None = None
    source: str | None = None
    task: str | None = None
    assistant_turns: str | None = Field(None, description="Chat datasets: 'all' or 'last'.")


class RawDatasetConfig(dg.Config):
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    files: list[FileInput] = Field(default_factory=list)
    hf: list[HFInput] = Field(default_factory=list)
    heldout_per_source: int = Field(
        DatasetSpec.heldout_per_source,
        description="In-domain test problems carved from each file/hf source (all rows of a "
        "prompt go to one side); s2l run --data without --eval sets 200.",
    )
    heldout_share: float = Field(
        DatasetSpec.heldout_share,
        description="At most this share of each source is held out.",
    )
    max_rejected_share: float = Field(
        DatasetSpec.max_rejected_share,
        description="Fail when more than this share of rows is rejected.",
    )
    duplicates: str = Field(
        DatasetSpec.duplicates,
        description="Exact duplicates (same prompt and response): 'drop' (drop them and count "
        "them apart) or 'reject' (count them as rejected rows). Kept either way.",
    )

    def to_spec(self) -> DatasetSpec:
        e = self.embedded
        return DatasetSpec(
            embedded=EmbeddedSource(e.size, e.seed, e.heldout_per_family) if e.enabled else None,
            files=tuple(
                FileSource(f.path, f.format, f.source, f.task, f.fields, f.assistant_turns)
                for f in self.files
            ),
            hf=tuple(
                HFSource(h.name, h.config, h.split, h.format, h.source, h.task, h.assistant_turns)
                for h in self.hf
            ),
            heldout_per_source=self.heldout_per_source,
            heldout_share=self.heldout_share,
            max_rejected_share=self.max_rejected_share,
            duplicates=self.duplicates,
        )


RawDatasetConfig = profiled(RawDatasetConfig, "raw_dataset")  # the deployment's scale


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="2",  # 2: the messages column (chat rows)
    description="Every configured input as one clean table: example_id, source, prompt, "
    "response, answer, task, and a chat row's turns (messages). Rejected rows are kept, with "
    "file, line and reason.",
)
def raw_dataset(
    context: dg.AssetExecutionContext,
    config: RawDatasetConfig,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[RawDatasetManifest]:
    try:
        built = make_raw_dataset(config.to_spec(), artifact_store.store())
    except RejectedTooMany as exc:
        raise dg.Failure(
            description=str(exc), metadata=rejected_metadata(exc), allow_retries=False
        ) from exc
    except (FileReadError, ValueError) as exc:  # unreadable file, unknown schema, bad setting
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(raw_dataset_line(built))
    m = built.manifest
    return dg.Output(m, data_version=dg.DataVersion(m.train.content_hash), metadata=raw_meta(built))


def rejected_metadata(exc: RejectedTooMany) -> dict:
    return {
        "rejected_rows": exc.loaded.rejected.height,
        "rejected_share": exc.loaded.rejected_share,
        "rejected_by_reason": md(rejection_counts(exc.loaded.rejected)),
        "rejected_path": dg.MetadataValue.path(exc.rejected.uri),
    }


def raw_dataset_line(built: RawDataset) -> str:
    m, loaded = built.manifest, built.loaded
    dropped = loaded.duplicates.height if loaded.duplicates is not None else 0
    return (
        f"{m.train.rows} examples from {loaded.train['source'].n_unique()} sources; "
        f"{m.rejected.rows} rejected ({loaded.rejected_share:.2%}); "
        + (f"{dropped} duplicates dropped; " if dropped else "")
        + f"{m.heldout.rows} held out; {len(loaded.empty_files)} empty files skipped"
    )


def raw_meta(built: RawDataset) -> dict:
    m, loaded = built.manifest, built.loaded
    metadata = {
        "dagster/row_count": m.train.rows,
        "content_hash": m.train.content_hash,
        "rows_per_source": md(source_counts(loaded.train)),
        "token_lengths": md(length_summary(loaded.train)),
        "rejected_rows": m.rejected.rows,
        "rejected_share": round(loaded.rejected_share, 6),
        "rejected_by_reason": md(rejection_counts(loaded.rejected)),
        "rejected_preview": preview(loaded.rejected),
        "rejected_totals": dg.MetadataValue.json(reason_totals(loaded.rejected)),
        "empty_files_skipped": len(loaded.empty_files),
        "empty_files": dg.MetadataValue.json(loaded.empty_files),
        "preview": preview(loaded.train),
        **table_ref_metadata("train", m.train),
        **table_ref_metadata("heldout", m.heldout),
        **table_ref_metadata("rejected", m.rejected),
    }
    if built.duplicates is not None:  # duplicates: drop - dropped, counted, kept apart
        metadata["duplicates_dropped"] = built.duplicates.rows
        metadata["duplicates_path"] = dg.MetadataValue.path(built.duplicates.uri)
    return metadata


class EvalFileInput(dg.Config):
    path: str = Field(description="Local path or s3:// uri, e.g. a GSM8K test.jsonl or MATH-500.")
    name: str | None = Field(None, description="Set name; default: folder_stem, e.g. gsm8k_test.")
    format: str | None = None
    task: str | None = Field(
        None,
        description="math (answer-scored) | summarization (ROUGE-L); default: the format's, or "
        "with fields: math when an answer template is given, else summarization.",
    )
    fields: dict[str, str] | None = Field(
        None,
        description=FIELDS_HELP,
    )
    assistant_turns: str | None = Field(
        None,
        description="Chat files (messages, conversations): the assistant turns the loss counts, "
        "'all' (default) or 'last'. Evaluation generates the last one either way.",
    )
    answer_type: str | None = Field(
        None,
        description="How a generation is judged: number | choice (option letter A-J) | math "
        "(math-verify) | text; empty: detected from the set's answers.",
    )
    answer_pattern: str | None = Field(
        None,
        description="A regex with one group that finds the answer in a generation "
        "(the last match counts), e.g. 'Final: (\\S+)'.",
    )


class EvalSetsConfig(dg.Config):
    ood_per_family: int = Field(
        EvalSetsOptions.ood_per_family,
        description="Problems per out-of-domain reasoning-gym family (0: none).",
    )
    out_of_domain: bool | None = Field(
        None,
        description="Evaluate the embedded out-of-domain reasoning-gym families too. Empty: "
        "only when the embedded training data is on (a run on your own files evaluates your "
        "sets only).",
    )
    seed: int = 0
    files: list[EvalFileInput] = Field(default_factory=list)
    max_rejected_share: float = Field(
        DatasetSpec.max_rejected_share,
        description="Fail when more than this share of an evaluation file is rejected.",
    )

    def options(self) -> EvalSetsOptions:
        return EvalSetsOptions(
            ood_per_family=self.ood_per_family,
            out_of_domain=self.out_of_domain,
            seed=self.seed,
            files=tuple(
                EvalFile(
                    f.path, f.name, f.format, f.fields, f.task, f.answer_type, f.answer_pattern
                )
                for f in self.files
            ),
            max_rejected_share=self.max_rejected_share,
        )


EvalSetsConfig = profiled(EvalSetsConfig, "eval_sets")  # the deployment's scale


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="1",
    description="Evaluation rows: in-domain held-out problems of each training source, "
    "out-of-domain reasoning-gym families, and test files by path.",
)
def eval_sets(
    context: dg.AssetExecutionContext,
    config: EvalSetsConfig,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[EvalSetsManifest]:
    try:
        built = make_eval_sets(raw_dataset, config.options(), artifact_store.store())
    except (FileReadError, ValueError) as exc:  # unreadable, unknown schema, no set at all
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    if not built.out_of_domain:
        context.log.info("out-of-domain families: off (set out_of_domain: true to add them)")
    m, summary = built.manifest, eval_summary(built.table)
    context.log.info(f"{m.eval.rows} evaluation rows in {summary.height} sets")
    metadata = {
        "dagster/row_count": m.eval.rows,
        "content_hash": m.eval.content_hash,
        "sets": md(summary),
        "rejected_rows": m.rejected.rows,
        "rejected_by_reason": md(rejection_counts(built.rejected)),
        "preview": preview(built.table),
        **table_ref_metadata("eval", m.eval),
        **table_ref_metadata("rejected", m.rejected),
    }
    return dg.Output(m, data_version=dg.DataVersion(m.eval.content_hash), metadata=metadata)


def check_result(finding: Finding, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=finding.passed,
        severity=severity,
        description=finding.summary,
        metadata={k: dg.MetadataValue.int(v) for k, v in finding.counts.items()},
    )


def rows_valid(raw_dataset: RawDatasetManifest, store) -> dg.AssetCheckResult:
    """Every example_id present and unique; no empty prompt or response."""
    train = read_table(raw_dataset.train, store)
    return check_result(check_training_table(train), dg.AssetCheckSeverity.ERROR)


REFERENCE_FLOOR = 0.95  # below this share a set's scorer is misreading its answers

SHARDS = dg.DynamicPartitionsDefinition(name="data_shards")


@dg.observable_source_asset(
    group_name="data",
    required_resource_keys={"shard_source"},
    description="The set of shards accepted under the shard root. shard_sensor records a new "
    "version whenever a shard comes or changes, so the pool and all below it show as stale.",
)
def shard_inventory(context) -> dg.DataVersion:
    # Observed from the UI (or by the sensor): every listed shard counts; the sensor's own
    # observations count only the shards it accepted.
    src = context.resources.shard_source
    listing = list_shards(src.root, src.endpoint_url)
    return dg.DataVersion(
        inventory_version({k: shard_version(u, src.endpoint_url) for k, u in listing.items()})
    )


def inventory_observation(cursor: ShardCursor) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=shard_inventory.key,
        tags={"dagster/data_version": inventory_version(cursor.versions)},
        metadata={"shards": len(cursor.versions), "refused": len(cursor.rejected)},
    )


@dg.asset(
    op_tags=cpu_step_tags(),
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=SHARDS,
    description="One shard of new data, read and checked like raw_dataset (rejected rows kept "
    "with their reason). Partitions are registered by shard_sensor.",
)
def data_shard(
    context: dg.AssetExecutionContext,
    shard_source: ShardSourceResource,
    artifact_store: ArtifactStoreResource,
) -> dg.Output[ShardManifest]:
    key = context.partition_key
    try:
        built = make_shard(
            key,
            shard_source.uri_of(key),
            shard_source.endpoint_url,
            shard_source.max_rejected_share,
            artifact_store.store(),
        )
    except ShardRejected as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    m = built.manifest
    return dg.Output(
        m,
        data_version=dg.DataVersion(m.train.content_hash),
        metadata={
            "dagster/row_count": m.train.rows,
            "content_hash": m.train.content_hash,
            "source_uri": dg.MetadataValue.path(m.uri),
            "file_sha256": m.file_sha256,
            "rows_per_source": md(source_counts(built.loaded.train)),
            "rejected_rows": m.rejected.rows,
            "rejected_by_reason": md(rejection_counts(built.loaded.rejected)),
            **table_ref_metadata("train", m.train),
        },
    )


def _materialized(instance: dg.DagsterInstance, asset: str) -> list[str]:
    registered = set(instance.get_dynamic_partitions(SHARDS.name))
    return sorted(registered & set(instance.get_materialized_partitions(dg.AssetKey(asset))))


def materialized_shards(instance: dg.DagsterInstance) -> list[str]:
    """Registered shards whose rows are materialized, in key order."""
    return _materialized(instance, "data_shard")


def scored_shards(instance: dg.DagsterInstance) -> list[str]:
    """Registered shards whose trajectories are materialized, in key order."""
    return _materialized(instance, "shard_trajectories")


def references_correct(table) -> dg.AssetCheckResult:
    """The evaluation table's references, scored as predictions: a scorer that misreads a set's
    answers shows here, before any model is judged by it."""
    shares, failing = reference_accuracy(table)
    low = {name: share for name, share in shares.items() if share < REFERENCE_FLOOR}
    described = "; ".join(
        f"{name}: {share:.1%} of references judged correct, e.g. "
        + " | ".join(
            f"({f['kind']}) ...{f['response_end']!r} vs answer {f['answer']!r}"
            for f in failing[name]
        )
        for name, share in low.items()
    )
    return dg.AssetCheckResult(
        passed=not low,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"the scorer misreads references of {len(low)} set(s): {described}"
            if low
            else f"references of all {len(shares)} answer-scored sets score as correct "
            f"(lowest {min(shares.values(), default=1.0):.1%})"
        ),
        metadata={
            "reference_accuracy": dg.MetadataValue.json(
                {k: round(v, 4) for k, v in shares.items()}
            ),
            "sets_below_floor": len(low),
            "failing_examples": dg.MetadataValue.json(failing),
        },
    )


EVAL_SETS_CHECKS = [
    dg.AssetCheckSpec(
        "eval_sets_not_in_training",
        asset="eval_sets",
        additional_deps=["raw_dataset"],
        description="No evaluation prompt appears in the training table, verbatim or with case "
        "and whitespace folded, on what the model reads: prompts and every user turn of chat "
        "rows, on both sides (warns; both counts per set).",
    ),
    dg.AssetCheckSpec(
        "references_score_as_correct",
        asset="eval_sets",
        description="Each answer-scored set's reference responses, scored as if a model wrote "
        "them, are judged correct (warns below 95% on any set): the scorer reads this set's "
        "answers.",
    ),
]


@dg.multi_asset_check(specs=EVAL_SETS_CHECKS, can_subset=True, op_tags=cpu_step_tags())
def eval_sets_checks(
    context: dg.AssetCheckExecutionContext,
    eval_sets: EvalSetsManifest,
    raw_dataset: RawDatasetManifest,
    artifact_store: ArtifactStoreResource,
):
    """The evaluation sets' checks, in one step (check_groups.py)."""
    store = artifact_store.store()
    evals = read_table(eval_sets.eval, store)

    def not_in_training() -> dg.AssetCheckResult:
        train = read_table(raw_dataset.train, store)
        return check_result(check_contamination(train, evals), dg.AssetCheckSeverity.WARN)

    yield from selected_results(
        context,
        "eval_sets",
        {
            "eval_sets_not_in_training": not_in_training,
            "references_score_as_correct": lambda: references_correct(evals),
        },
    )
