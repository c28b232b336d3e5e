"""Train the tiny test model in its own process; SIGKILL itself at step ``kill_at`` (0: never).

Used by test_training to check that a resume after a real kill gives the same bytes. With
``KILL_IN_SAVE=1`` the kill comes inside the Trainer's save at that step, after its RNG state
and before its trainer state: a checkpoint with weights that cannot be resumed from.
Usage: python kill_during_training.py WORK_DIR KILL_AT [RESUME_EVERY_S]
"""

import json
import os
import signal
import sys
from pathlib import Path

from transformers import Trainer, TrainerCallback

from s2l_pipeline.core.data.generator import generate_mixture
from s2l_pipeline.core.lm.encoding import encode, tokenizer_texts
from s2l_pipeline.core.lm.models import SIZES, build_gpt_neox, save_model
from s2l_pipeline.core.lm.tokenizer import train_bpe_tokenizer
from s2l_pipeline.core.lm.train_config import CheckpointSchedule, TrainConfig, TrainHooks
from s2l_pipeline.core.lm.trainer import train_with_checkpoints
from s2l_pipeline.core.support.hashing import file_hash


class KillAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_in_save(step: int) -> None:
    """SIGKILL once the Trainer has written step ``step``'s RNG state, before its trainer state."""
    save_rng = Trainer._save_rng_state

    def save_then_die(self, output_dir):
        save_rng(self, output_dir)
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save_rng_state = save_then_die


def main(root: Path, kill_at: int, resume_every_s: float | None) -> None:
    in_save = kill_at and os.environ.get("KILL_IN_SAVE") == "1"
    if in_save:
        kill_in_save(kill_at)
    train, _ = generate_mixture(256, seed=5, heldout_per_family=1)
    tok = train_bpe_tokenizer(tokenizer_texts(train), 300)
    enc = encode(train, tok, 64)

    def export(model, tokenizer, step):
        out = save_model(model, tokenizer, root / "out" / f"step_{step}")
        return {"step": step, "uri": str(out), "sha256": file_hash(out / "model.safetensors")}

    records = train_with_checkpoints(
        build_gpt_neox(SIZES["proxy-tiny"], tok, seed=0),
        tok,
        enc,
        TrainConfig(epochs=3, batch_size=32, learning_rate=3e-3),
        CheckpointSchedule(count=6),
        root / "work",
        export,
        TrainHooks(on_message=lambda m: print(m, flush=True), resume_every_s=resume_every_s),
        extra_callbacks=[KillAt(kill_at)] if kill_at and not in_save else None,
    ).records
    print(json.dumps([r["sha256"] for r in records]))


if __name__ == "__main__":
    every = float(sys.argv[3]) if len(sys.argv) > 3 else None
    main(Path(sys.argv[1]), int(sys.argv[2]), every)
