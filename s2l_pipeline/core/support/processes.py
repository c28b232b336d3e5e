"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import contextlib
import signal


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child (a pool worker, a server a test starts): get ``sig`` when the parent dies,
    even by SIGKILL, so no orphan keeps computing for nobody. Linux only; elsewhere a no-op."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)
