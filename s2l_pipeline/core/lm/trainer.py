"""Fine-tune a causal LM on response tokens with HF ``Trainer``, exporting scheduled checkpoints.

``Trainer`` brings the checkpoint schedule, resume (optimizer, scheduler and RNG state) and mixed
precision. Our part: the exact steps at which checkpoints are kept, an export of each one as a
clean safetensors + config + tokenizer folder, and resuming from the last *complete* Trainer
checkpoint after a crash, re-exporting any checkpoint the crash left unexported.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging as hf_logging

from ..support.progress import Progress
from .encoding import Encoded
from .order import epoch_order
from .train_config import (
    CheckpointSchedule,
    Exporter,
    RunCanceled,
    TrainConfig,
    TrainHooks,
    total_steps,
)

log = logging.getLogger(__name__)

_CKPT = re.compile(r"^checkpoint-(\d+)$")
# What a Trainer checkpoint needs before we trust it for resuming.
_COMPLETE = (
    "model.safetensors",
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
)


class _Rows(torch.utils.data.Dataset):
    """The encoded rows as Trainer reads them: ids and labels (-100 outside the loss spans)."""

    def __init__(self, enc: Encoded):
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc.input_ids[i], "labels": self.enc.labels(i)}


def make_collator(pad_id: int):
    """Right-pad a batch; padded labels are -100 so they never count in the loss."""

    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[j, :n] = torch.tensor(r["input_ids"])
            labels[j, :n] = torch.tensor(r["labels"])
            mask[j, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


class EpochSeededSampler:
    """Each epoch's order drawn from (seed, epoch), never from the global RNG.

    HF draws each epoch's order from the global torch RNG when the epoch starts; a run resumed
    mid-epoch draws it in another RNG state, so its data order (and every later checkpoint)
    differs from an uninterrupted run. Seeding by epoch makes the order a function of
    (seed, epoch) alone, as accelerate's ``SeedableRandomSampler`` does.
    """

    def __init__(self, lengths: list[int], batch_size: int, cfg: TrainConfig):
        self.lengths, self.batch_size, self.cfg, self.epoch = lengths, batch_size, cfg, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = epoch_order(
            self.lengths,
            self.batch_size,
            self.cfg.seed,
            self.epoch,
            self.cfg.group_by_length,
            self.cfg.length_window,
        )
        return iter(order.tolist())


# Response positions whose logits exist at once in :func:`loss_at_labels`: 512 x 49,152 x 4
# bytes is 100 MB a copy, where a batch of 8 GSM8K rows (about 1,600 response tokens) held
# about 1 GB of logits, their log-softmax and its gradient.
LOSS_CHUNK = 512


def _chunk_loss(head, hidden, targets):
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def loss_at_labels(model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
    """The causal-LM loss with the LM head applied only where a label is, as the scorer does
    (losses.py): the same value as ``model(..., labels=...).loss``, without the logits of every
    prompt and padding position, which for a 49K-token vocabulary are most of a step's memory
    and a fifth of its arithmetic. Response positions go through the head in chunks that are
    recomputed in the backward pass, so the logits of one chunk exist at a time."""
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    hidden = base.base_model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
    ).last_hidden_state
    targets = inputs["labels"][:, 1:]  # position t predicts token t+1
    keep = targets != -100
    picked, wanted = hidden[:, :-1][keep], targets[keep]
    head = base.get_output_embeddings()
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, len(wanted), LOSS_CHUNK):
        part = slice(i, i + LOSS_CHUNK)
        total = total + checkpoint(
            _chunk_loss, head, picked[part], wanted[part], use_reentrant=False
        )
    return total / (num_items_in_batch if num_items_in_batch is not None else keep.sum())


def _nothing_to_free(*objects):
    return [None] * len(objects)  # what accelerate's free_memory returns for ``objects``


class _SeededTrainer(Trainer):
    """HF ``Trainer`` whose sampler is seeded per epoch (exact resume); with ``head_at_labels``
    its loss is :func:`loss_at_labels`."""

    def __init__(
        self, *args, lengths: list[int], cfg: TrainConfig, head_at_labels: bool = False, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self._lengths, self._cfg, self._head_at_labels = lengths, cfg, head_at_labels
        if not torch.cuda.is_available():
            # train() opens with accelerate's free_memory(), which runs gc.collect(): 0.4 s in a
            # fresh `s2l run` (Dagster, torch and transformers loaded) and seconds in a process
            # that has run many steps, to free nothing: this Trainer's accelerator holds no
            # model yet, and on CPU there is no device cache to empty. On a GPU it stays.
            self.accelerator.free_memory = _nothing_to_free

    def _get_train_sampler(self, train_dataset=None):
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return EpochSeededSampler(self._lengths, batch, self._cfg)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._head_at_labels:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = loss_at_labels(model, inputs, num_items_in_batch)
        return (loss, None) if return_outputs else loss


def last_complete_checkpoint(work_dir: Path) -> Path | None:
    """Newest ``checkpoint-N`` holding every file a resume needs; partial ones are ignored."""
    found = []
    for p in work_dir.glob("checkpoint-*"):
        m = _CKPT.match(p.name)
        if m and p.is_dir() and all((p / f).exists() for f in _COMPLETE):
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


class _ExportRegistry:
    """exports.json in the work folder: which steps are exported, surviving crashes."""

    def __init__(self, work_dir: Path):
        self.path = work_dir / "exports.json"
        self.records: dict[int, dict] = (
            {int(k): v for k, v in json.loads(self.path.read_text()).items()}
            if self.path.exists()
            else {}
        )

    def add(self, step: int, record: dict) -> None:
        self.records[step] = record
        self._write()

    def drop_missing(self, export: Exporter, say: Callable[[str], None]) -> None:
        """Forget records whose artifact is gone from the store (or lives under another root)."""
        present = getattr(export, "present", None)
        if present is None:
            return
        gone = [s for s, r in sorted(self.records.items()) if not present(r)]
        for step in gone:
            say(
                f"checkpoint step {step} is not in the store any more ({self.records[step]['uri']})"
                "; it will be made again"
            )
            del self.records[step]
        if gone:
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(self.records.items())}, indent=1))
        tmp.replace(self.path)


class _ScheduleCallback(TrainerCallback):
    """Saves and exports at the scheduled steps, saves for resuming every ``resume_every_s`` of
    training between them, reports progress and losses, honours a cancel."""

    def __init__(
        self,
        keep: list[int],
        steps_total: int,
        registry: _ExportRegistry,
        export: Exporter,
        tokenizer,
        hooks: TrainHooks,
    ):
        self.keep, self.steps_total, self.registry = set(keep), steps_total, registry
        self.export, self.tokenizer, self.hooks = export, tokenizer, hooks
        self.progress: Progress | None = None
        self.last_loss: float | None = None
        self.last_save = time.monotonic()

    def on_train_begin(self, args, state, control, **kw):
        self.last_save = time.monotonic()
        self.progress = Progress(
            "training",
            self.steps_total,
            "steps",
            self.hooks.say,
            start_done=state.global_step,
            quiet_below_s=0.0,  # the final loss is always worth a line
        )

    def on_step_end(self, args, state, control, **kw):
        if self.hooks.should_stop and self.hooks.should_stop():
            raise RunCanceled(f"canceled at step {state.global_step} of {self.steps_total}")
        every = self.hooks.resume_every_s
        due = every is not None and time.monotonic() - self.last_save >= every
        if state.global_step in self.keep or (due and state.global_step < self.steps_total):
            control.should_save = True
        if self.progress:
            loss = "" if self.last_loss is None else f"loss {self.last_loss:.4f}"
            self.progress.update(state.global_step, loss)
        return control

    def on_save(self, args, state, control, model=None, **kw):
        self.last_save = time.monotonic()
        step = state.global_step
        if step in self.keep and step not in self.registry.records:
            self.registry.add(step, self.export(model, self.tokenizer, step))

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
        if self.hooks.on_log and logs:
            numbers = {k: v for k, v in logs.items() if isinstance(v, int | float)}
            self.hooks.on_log(numbers, state.global_step)


def _training_args(work_dir: Path, cfg: TrainConfig, steps_total: int) -> TrainingArguments:
    """Trainer's arguments: our callback decides what is saved; the sampler, the order."""
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps_total,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.scheduler,
        # transformers 5 dropped ``warmup_ratio``; ``warmup_steps`` below 1 is read as a ratio
        # of the total steps, which is what ``cfg.warmup_ratio`` is.
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="random",  # replaced by our per-epoch seeded sampler
        save_strategy="no",  # our callback decides which steps to save
        save_total_limit=2,
        logging_steps=max(1, steps_total // 50),
        report_to="none",
        disable_tqdm=True,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,
    )


@dataclass(frozen=True)
class Training:
    """What a run leaves: every kept checkpoint's export record (step 0 first) and the
    training loss as [step, loss] pairs (empty when nothing was left to train)."""

    records: list[dict]
    loss_history: list


def train_with_checkpoints(
    model,
    tokenizer,
    enc: Encoded,
    cfg: TrainConfig,
    schedule: CheckpointSchedule,
    work_dir: Path,
    export: Exporter,
    hooks: TrainHooks | None = None,
    extra_callbacks: list | None = None,
    head_at_labels: bool = False,
) -> Training:
    """Train, exporting step 0 and every scheduled step; resumes from the state in ``work_dir``.
    ``head_at_labels``: the loss of :func:`loss_at_labels` (same value, less memory)."""
    hooks = hooks or TrainHooks()
    hf_logging.disable_progress_bar()
    work_dir.mkdir(parents=True, exist_ok=True)
    steps_total = total_steps(len(enc), cfg)
    keep = schedule.steps(steps_total)
    registry = _ExportRegistry(work_dir)
    registry.drop_missing(export, hooks.say)
    if all(s in registry.records for s in [0, *keep]):
        hooks.say(f"every checkpoint is already exported ({len(keep) + 1}): nothing to train")
        return Training([registry.records[s] for s in [0, *keep]], [])
    if 0 not in registry.records:
        registry.add(0, export(model, tokenizer, 0))
    resume = last_complete_checkpoint(work_dir)
    _export_missing_from_disk(work_dir, keep, registry, export, tokenizer, model)

    trainer = _SeededTrainer(
        model=model,
        args=_training_args(work_dir, cfg, steps_total),
        train_dataset=_Rows(enc),
        data_collator=make_collator(tokenizer.pad_token_id),
        callbacks=[
            _ScheduleCallback(keep, steps_total, registry, export, tokenizer, hooks),
            *(extra_callbacks or []),
        ],
        lengths=[int(n) for n in enc.lengths],
        cfg=cfg,
        head_at_labels=head_at_labels,
    )
    trainer.remove_callback(PrinterCallback)  # losses go to on_log (MLflow), not stdout
    if resume is not None:
        hooks.say(f"resumed from step {_step_of(resume)} of {steps_total} ({resume.name})")
    if resume is None or _step_of(resume) < steps_total:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    history = [[e["step"], float(e["loss"])] for e in trainer.state.log_history if "loss" in e]
    missing = [s for s in keep if s not in registry.records]
    if missing:
        raise RuntimeError(f"training ended without exporting checkpoints at steps {missing}")
    return Training([registry.records[s] for s in [0, *keep]], history)


def _step_of(path: Path) -> int:
    return int(_CKPT.match(path.name).group(1))


def _export_missing_from_disk(work_dir, keep, registry, export, tokenizer, model) -> None:
    """A crash between a Trainer save and our export leaves a checkpoint to export on resume.

    The model is given back its own weights afterwards: when the crash also left that checkpoint
    without its trainer state, training starts again from these weights, not the checkpoint's.
    """
    from safetensors.torch import load_file

    for ckpt in sorted(work_dir.glob("checkpoint-*")):
        m = _CKPT.match(ckpt.name)
        if not m or not (ckpt / "model.safetensors").exists():
            continue
        step = int(m.group(1))
        if step in keep and step not in registry.records:
            # A copy: state_dict() shares storage with the parameters that the load overwrites.
            own = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
            registry.add(step, export(model, tokenizer, step))
            model.load_state_dict(own)


def clean_work_dir(work_dir: Path) -> None:
    """Drop resume state once every checkpoint is exported (it holds optimizer state)."""
    for p in work_dir.glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)
