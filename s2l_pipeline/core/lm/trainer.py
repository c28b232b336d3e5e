"""Fine-tune a causal LM on response tokens with HF ``Trainer``, exporting scheduled checkpoints.

``Trainer`` brings the checkpoint schedule, resume (optimizer, scheduler and RNG state) and mixed
precision. Our part: the exact steps at which checkpoints are kept, an export of each one as a
clean safetensors + config + tokenizer folder, and resuming from the last *complete* Trainer
checkpoint after a crash, re-exporting any checkpoint the crash left unexported.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..support.progress import Progress
from .encoding import Encoded
from .order import DEFAULT_LENGTH_WINDOW, epoch_order

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


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0
    learning_rate: float = 2e-3
    batch_size: int = 64
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    # Tokens per example, or 'auto': the smallest multiple of 8 covering the 99th percentile of
    # prompt + response tokens, at most max_length_cap (fit.resolve_max_length).
    max_length: int | str = "auto"
    max_length_cap: int = 1024
    seed: int = 0
    # False: a seeded uniform shuffle per epoch (as the official S2L proxy training). True:
    # sort by length inside windows of ``length_window`` batches (less padding, but a window's
    # batches lean to one source when sources differ in length; see core/lm/order.py).
    group_by_length: bool = False
    length_window: int = DEFAULT_LENGTH_WINDOW

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckpointSchedule:
    """Keep ``count`` evenly spaced checkpoints, or one ``every`` N steps (and the last step)."""

    count: int | None = 10
    every: int | None = None

    def steps(self, total_steps: int) -> list[int]:
        if self.every:
            steps = set(range(self.every, total_steps + 1, self.every))
        else:
            count = max(1, min(self.count or 1, total_steps))
            steps = {round(total_steps * k / count) for k in range(1, count + 1)}
        steps.add(total_steps)
        return sorted(s for s in steps if s > 0)


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    return max(1, math.ceil(per_epoch * cfg.epochs))


# An exporter turns (model, tokenizer, step) into a JSON-able record (uri, hash, ...). It may
# also have ``present(record) -> bool``: whether that record's artifact is still where the
# exporter would put it now (a store emptied or moved makes a resume record stale).
Exporter = Callable[[object, object, int], dict]


class RunCanceled(KeyboardInterrupt):
    """The run was canceled; an interrupt, so orchestrators stop rather than retry."""


@dataclass
class TrainHooks:
    """What the caller hears from a training run, and how it asks it to stop."""

    on_log: Callable[[dict, int], None] | None = None  # Trainer logs (loss, lr) per step
    on_message: Callable[[str], None] | None = None  # resumed from step N, checkpoint kept ...
    should_stop: Callable[[], bool] | None = None  # polled every step; True stops with RunCanceled

    def say(self, text: str) -> None:
        log.info(text)
        if self.on_message:
            self.on_message(text)


def _dataset(enc: Encoded):
    import torch

    class _Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(enc)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": enc.input_ids[i], "labels": enc.labels(i)}

    return _Rows()


def make_collator(pad_id: int):
    """Right-pad a batch; padded labels are -100 so they never count in the loss."""
    import torch

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


def _trainer_class(enc: Encoded, cfg: TrainConfig):
    """HF ``Trainer`` whose sampler is seeded per epoch (exact resume)."""
    from transformers import Trainer

    class _Trainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochSeededSampler([int(n) for n in enc.lengths], batch, cfg)

    return _Trainer


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
    history_out: list | None = None,
) -> list[dict]:
    """Train, exporting step 0 and every scheduled step; resume from ``work_dir`` if it has state.

    Returns the export records of every kept checkpoint, in step order; ``history_out`` gets
    the training loss as [step, loss] pairs (the whole run's, a resumed one included).
    """
    hooks = hooks or TrainHooks()
    import torch
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    work_dir.mkdir(parents=True, exist_ok=True)
    steps_total = total_steps(len(enc), cfg)
    keep = schedule.steps(steps_total)
    registry = _ExportRegistry(work_dir)
    registry.drop_missing(export, hooks.say)
    if all(s in registry.records for s in [0, *keep]):
        hooks.say(f"every checkpoint is already exported ({len(keep) + 1}): nothing to train")
        return [registry.records[s] for s in [0, *keep]]
    if 0 not in registry.records:
        registry.add(0, export(model, tokenizer, 0))

    resume = last_complete_checkpoint(work_dir)
    _export_missing_from_disk(work_dir, keep, registry, export, tokenizer, model)

    progress: list[Progress] = []
    last_loss: list[float] = []

    class _Schedule(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            progress.append(
                Progress(
                    "training",
                    steps_total,
                    "steps",
                    hooks.say,
                    start_done=state.global_step,
                    quiet_below_s=0.0,  # the final loss is always worth a line
                )
            )

        def on_step_end(self, args, state, control, **kw):
            if hooks.should_stop and hooks.should_stop():
                raise RunCanceled(f"canceled at step {state.global_step} of {steps_total}")
            if state.global_step in keep:
                control.should_save = True
            if progress:
                progress[0].update(
                    state.global_step, f"loss {last_loss[0]:.4f}" if last_loss else ""
                )
            return control

        def on_save(self, args, state, control, model=None, **kw):
            step = state.global_step
            if step in keep and step not in registry.records:
                registry.add(step, export(model, tokenizer, step))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                last_loss[:] = [float(logs["loss"])]
            if hooks.on_log and logs:
                hooks.on_log(
                    {k: v for k, v in logs.items() if isinstance(v, int | float)}, state.global_step
                )

    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps_total,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.scheduler,
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
    trainer = _trainer_class(enc, cfg)(
        model=model,
        args=args,
        train_dataset=_dataset(enc),
        data_collator=make_collator(tokenizer.pad_token_id),
        callbacks=[_Schedule(), *(extra_callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)  # losses go to on_log (MLflow), not stdout
    if resume is not None:
        hooks.say(f"resumed from step {_step_of(resume)} of {steps_total} ({resume.name})")
    if resume is None or _step_of(resume) < steps_total:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if history_out is not None:
        history_out.extend(
            [e["step"], float(e["loss"])] for e in trainer.state.log_history if "loss" in e
        )
    missing = [s for s in keep if s not in registry.records]
    if missing:
        raise RuntimeError(f"training ended without exporting checkpoints at steps {missing}")
    return [registry.records[s] for s in [0, *keep]]


def _step_of(path: Path) -> int:
    return int(_CKPT.match(path.name).group(1))


def _export_missing_from_disk(work_dir, keep, registry, export, tokenizer, model) -> None:
    """A crash between a Trainer save and our export leaves a checkpoint to export on resume."""
    from safetensors.torch import load_file

    for ckpt in sorted(work_dir.glob("checkpoint-*")):
        m = _CKPT.match(ckpt.name)
        if not m or not (ckpt / "model.safetensors").exists():
            continue
        step = int(m.group(1))
        if step in keep and step not in registry.records:
            state = model.state_dict()
            model.load_state_dict(load_file(ckpt / "model.safetensors"), strict=False)
            registry.add(step, export(model, tokenizer, step))
            model.load_state_dict(state)


def clean_work_dir(work_dir: Path) -> None:
    """Drop resume state once every checkpoint is exported (it holds optimizer state)."""
    for p in work_dir.glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)
