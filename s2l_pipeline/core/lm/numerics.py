"""How a run's arithmetic is carried out, not what it computes.

Threads, micro-batches and where the loss applies the LM head change a checkpoint's bytes (float
sums in another order) but not the recipe's math. They are set per block of work, so a study
can reproduce cells trained under other settings byte for byte, and they join a run's identity
only when set, so every run made without them keeps its id.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Numerics:
    threads: int | None = None  # torch's intra-op threads; None: torch's own default
    micro_batch_tokens: int | None = None  # None: fit's rule (CPU, pretrained); 0: whole batches
    loss_at_labels: bool | None = None  # None: for pretrained models only (trainer.py)

    @property
    def is_default(self) -> bool:
        return self == Numerics()

    def identity(self) -> dict:
        """What joins a run's or a recipe's hash: the settings given ({} when none is)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


DEFAULT = Numerics()
_CURRENT: ContextVar[Numerics | None] = ContextVar("s2l_numerics", default=None)


def current() -> Numerics:
    return _CURRENT.get() or DEFAULT


@contextlib.contextmanager
def using(numerics: Numerics) -> Iterator[None]:
    """Run the block under ``numerics``; torch's thread count is restored after it."""
    import torch

    before = torch.get_num_threads()
    token = _CURRENT.set(numerics)
    if numerics.threads:
        torch.set_num_threads(numerics.threads)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        torch.set_num_threads(before)
