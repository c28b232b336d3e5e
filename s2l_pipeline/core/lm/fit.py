"""Train a causal LM (the proxy, or the target) and keep its checkpoints in the artifact store."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from ..support.hashing import file_hash
from ..support.records import from_plain, to_plain
from ..support.storage import ArtifactStore
from .encoding import encode, tokenizer_texts
from .models import SIZES, build_gpt_neox, count_parameters, load_causal_lm, save_model
from .numerics import current as current_numerics
from .order import OrderReport, order_report
from .tokenizer import train_bpe_tokenizer
from .train_config import CheckpointSchedule, TrainConfig, TrainHooks, in_micro_batches

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


@dataclass(frozen=True)
class ModelSpec:
    """``name`` is 'embedded' (a GPT-NeoX of ``size`` with a BPE tokenizer trained on the data)
    or a Hugging Face name or local folder, e.g. 'EleutherAI/pythia-70m-deduped'."""

    name: str = EMBEDDED
    size: str = "proxy"
    vocab_size: int = 512
    seed: int = 0


@dataclass(frozen=True)
class TrainRun:
    """One training run: model, hyperparameters, checkpoint schedule, optional LoRA."""

    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedule: CheckpointSchedule = field(default_factory=CheckpointSchedule)
    lora_r: int = 0  # > 0: train LoRA adapters of this rank (peft), merged into each export
    lora_alpha: int = 16

    def fingerprint(self, data_hash: str) -> str:
        """Same data and settings -> same folder, so an interrupted run finds its state."""
        parts = [data_hash, asdict(self)]
        if numerics := current_numerics().identity():  # none given: the id it always had
            parts.append(numerics)
        ident = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    """One exported checkpoint: a safetensors folder in the artifact store and its weights' hash."""

    step: int
    uri: str
    sha256: str


@dataclass(frozen=True)
class TrainedModel:
    """What a training run made: its checkpoints (step 0 first) and how it was trained."""

    fingerprint: str
    data_hash: str
    checkpoints: list[Checkpoint]
    n_parameters: int
    model: ModelSpec
    train: TrainConfig
    lora_r: int = 0
    n_examples: int = 0
    n_truncated: int = 0
    train_tokens: int = 0
    loss_history: list = field(default_factory=list)  # [step, training loss] pairs
    order: OrderReport | None = None  # how the first epoch was ordered

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]

    def checkpoint_records(self) -> list[dict]:
        """The checkpoints as plain records (step, uri, sha256), as core scoring takes them."""
        return [asdict(c) for c in self.checkpoints]


def build_model(spec: ModelSpec, train_df: pl.DataFrame, tokenizer_dir: Path | None = None):
    """(model, tokenizer) for training: from scratch for 'embedded', else pretrained.

    An embedded model trains its own BPE tokenizer unless ``tokenizer_dir`` gives one (the
    target shares the proxy's tokenizer).
    """
    if spec.name != EMBEDDED:
        return load_causal_lm(spec.name)
    if spec.size not in SIZES:
        raise ValueError(f"unknown model size {spec.size!r}; known: {sorted(SIZES)}")
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = build_tokenizer(spec, train_df)
    return build_gpt_neox(SIZES[spec.size], tokenizer, spec.seed), tokenizer


AUTO = "auto"


def resolve_max_length(train_df: pl.DataFrame, tokenizer, cfg: TrainConfig) -> tuple[int, str]:
    """(max_length, what was decided): a number as it is; 'auto' the smallest multiple of 8
    covering the 99th percentile of prompt + response tokens, at most ``max_length_cap``.

    Rows whose prompt alone fills the cap are left out of the percentile: no length allowed
    would train on their response (they are flagged unscorable), so a few huge rows must not
    drive every other row's length to the cap.
    """
    if cfg.max_length != AUTO:
        if not isinstance(cfg.max_length, int) or cfg.max_length < 8:
            raise ValueError(
                f"max_length must be 'auto' or a count of at least 8 tokens, not {cfg.max_length!r}"
            )
        return cfg.max_length, ""
    enc = encode(train_df, tokenizer, 1_000_000)
    context = enc.context_lens if enc.context_lens is not None else enc.prompt_lens
    lengths = np.sort(enc.lengths[context < cfg.max_length_cap])
    left_out = len(enc) - len(lengths)
    if not len(lengths):
        return min(128, cfg.max_length_cap), ""
    p99 = int(lengths[min(len(lengths) - 1, int(np.ceil(0.99 * len(lengths))) - 1)])
    chosen = min(cfg.max_length_cap, -(-p99 // 8) * 8)
    longer = float((lengths > chosen).mean())
    return chosen, (
        f"max_length auto: {chosen} tokens (99th percentile of prompt + response {p99}, "
        f"longest {int(lengths[-1])}, cap {cfg.max_length_cap}); {longer:.1%} of rows longer "
        "are truncated"
        + (
            f"; {left_out} rows whose prompt alone fills the cap left out (unscorable)"
            if left_out
            else ""
        )
    )


def build_tokenizer(spec: ModelSpec, train_df: pl.DataFrame):
    """The tokenizer a model of ``spec`` trains with: the pretrained one, or for 'embedded' a
    BPE trained on the data (deterministic: the proxy trains the same one)."""
    if spec.name != EMBEDDED:
        from transformers import AutoTokenizer

        from .gguf import local_model

        return AutoTokenizer.from_pretrained(local_model(spec.name))
    return train_bpe_tokenizer(tokenizer_texts(train_df), spec.vocab_size)


def with_lora(model, r: int, alpha: int):
    """Wrap ``model`` with LoRA adapters on every linear layer (peft)."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    )


def training_model(run: TrainRun, train_df: pl.DataFrame, tokenizer_dir: Path | None = None):
    """(model, tokenizer) as a run trains them, so that whatever times or trains a run (the
    study's estimate too) sees the same model: a pretrained one with activation checkpointing,
    LoRA adapters when ``lora_r`` > 0."""
    model, tokenizer = build_model(run.model, train_df, tokenizer_dir)
    if run.model.name != EMBEDDED:
        # A pretrained model's activations, not its weights, fill memory (SmolLM2-135M with
        # LoRA, 8 rows of 296 tokens: 6.9 GiB for one step, 3.9 with this); recomputing them
        # in the backward pass costs time, not results. The embedded models are too small.
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if run.lora_r > 0:
        model = with_lora(model, run.lora_r, run.lora_alpha)
    return model, tokenizer


# Padded tokens in one forward pass of a pretrained model on CPU; a batch holding more trains
# as micro-batches (train_config.in_micro_batches). SmolLM2-135M with LoRA, batch 8, on 2
# cores (real_model_speed.py --micro-batch-tokens): at 392 tokens whole batches ran 101.5
# tokens/s at a 4.38 GiB peak, 2 x 4 rows 98.7-113.0 at 3.02-3.06, 4 x 2 rows 100.6-108.6 at
# 2.04-2.14, 8 x 1 row 100.0 at 1.55; at 608 tokens, whole 101.4-102.2 at 4.72, one row at a
# time 106.9 at 1.70. On a GPU batches stay whole: its memory is the device's, and small
# passes are slow there.
MICRO_BATCH_TOKENS = 1024


def as_trained(run: TrainRun, max_length: int) -> TrainConfig:
    """The run's config as the trainer runs it: on CPU a pretrained model's large batches
    split into micro-batches (memory, and no slower); the embedded models' batches whole
    (their bytes as published)."""
    import torch

    cap = current_numerics().micro_batch_tokens
    if cap is not None:  # set for this block of work (numerics.py): 0, whole batches
        return in_micro_batches(run.train, max_length, cap) if cap else run.train
    if run.model.name == EMBEDDED or torch.cuda.is_available():
        return run.train
    return in_micro_batches(run.train, max_length, MICRO_BATCH_TOKENS)


def head_at_labels(run: TrainRun) -> bool:
    """Whether the run's loss applies the LM head at response positions only (trainer.py):
    a pretrained model's vocabulary (49K for SmolLM2) makes logits at every position most of a
    step's memory. The embedded models keep the library's loss, and so every checkpoint's
    bytes as published."""
    given = current_numerics().loss_at_labels
    return run.model.name != EMBEDDED if given is None else given


class StoreExporter:
    """Write each checkpoint as safetensors + config + tokenizer under ``prefix/step_N``."""

    def __init__(self, store: ArtifactStore, prefix: str):
        self.store, self.prefix = store, prefix

    def key(self, step: int) -> str:
        return f"{self.prefix}/step_{step}"

    def __call__(self, model, tokenizer, step: int) -> dict:
        if hasattr(model, "merge_and_unload"):  # LoRA: export plain merged weights
            model = copy.deepcopy(model).merge_and_unload()
        with tempfile.TemporaryDirectory() as tmp:
            local = save_model(model, tokenizer, Path(tmp) / f"step_{step}")
            digest = file_hash(local / "model.safetensors")
            uri = self.store.put_dir(local, self.key(step))
        log.info("checkpoint step %d -> %s", step, uri)
        return {"step": step, "uri": uri, "sha256": digest}

    def loss_history(self, fresh: list) -> list:
        """Store ``fresh`` (when training ran) and return the stored history."""
        key = f"{self.prefix}/loss_history.json"
        if fresh:
            self.store.write_text(key, json.dumps(fresh))
            return fresh
        return json.loads(self.store.read_text(key)) if self.store.exists(key) else []

    def finish(self, trained: TrainedModel) -> TrainedModel:
        """Keep what the run made beside its checkpoints, so a rerun returns it unbuilt."""
        self.store.write_text(f"{self.prefix}/trained.json", json.dumps(to_plain(trained)))
        return trained

    def finished(self) -> TrainedModel | None:
        """The stored record of this run when every checkpoint it names is still in the store."""
        key = f"{self.prefix}/trained.json"
        if not self.store.exists(key):
            return None
        trained = from_plain(TrainedModel, json.loads(self.store.read_text(key)))
        if not all(self.present(asdict(c)) for c in trained.checkpoints):
            return None
        return trained

    def present(self, record: dict) -> bool:
        """The record points where this store keeps that step, and the weights are there."""
        key = self.key(record["step"])
        return record["uri"] == self.store.uri(key) and self.store.exists(
            f"{key}/model.safetensors"
        )


def train_model(
    kind: str,
    train_df: pl.DataFrame,
    data_hash: str,
    run: TrainRun,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
    tokenizer_dir: Path | None = None,
) -> TrainedModel:
    """Train (or resume) a model of ``kind`` ('proxy_checkpoints', 'target_model')."""
    tok_id = file_hash(tokenizer_dir / "tokenizer.json") if tokenizer_dir else ""
    fp = run.fingerprint(data_hash + tok_id)
    exporter = StoreExporter(store, f"{kind}/{fp}")
    finished = exporter.finished()
    if finished is not None:  # a rerun: no model to build, no tokenizer to train
        n = len(finished.checkpoints)
        (hooks or TrainHooks()).say(f"every checkpoint is already exported ({n}): nothing to train")
        return finished
    model, tokenizer = training_model(run, train_df, tokenizer_dir)
    max_length, fit = resolve_max_length(train_df, tokenizer, run.train)
    if fit:
        (hooks or TrainHooks()).say(fit)
    run = replace(run, train=replace(run.train, max_length=max_length))
    enc = encode(train_df, tokenizer, max_length)
    work_dir = work_root / fp
    from .trainer import clean_work_dir, train_with_checkpoints  # torch: only when training

    training = train_with_checkpoints(
        model, tokenizer, enc, as_trained(run, max_length), run.schedule, work_dir, exporter,
        hooks, head_at_labels=head_at_labels(run),
    )  # fmt: skip
    history = exporter.loss_history(training.loss_history)
    clean_work_dir(work_dir)
    return exporter.finish(
        TrainedModel(
            fingerprint=fp,
            data_hash=data_hash,
            checkpoints=[Checkpoint(r["step"], r["uri"], r["sha256"]) for r in training.records],
            n_parameters=count_parameters(model),
            model=run.model,
            train=run.train,
            lora_r=run.lora_r,
            n_examples=len(enc),
            n_truncated=int(enc.truncated.sum()),
            train_tokens=int(enc.lengths.sum()),
            loss_history=history,
            order=order_report(
                enc.lengths.tolist(),
                train_df["source"].to_list(),
                run.train.batch_size * run.train.grad_accum,
                run.train.seed,
                run.train.group_by_length,
                run.train.length_window,
            ),
        )
    )


def train_proxy(
    train_df: pl.DataFrame,
    data_hash: str,
    run: TrainRun,
    store: ArtifactStore,
    work_root: Path,
    hooks: TrainHooks | None = None,
) -> TrainedModel:
    """Train (or resume) the proxy on the full dataset."""
    return train_model("proxy_checkpoints", train_df, data_hash, run, store, work_root, hooks)
