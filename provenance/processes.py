"""Child-process hygiene shared by every kind of worker (detector workers, crawl, extraction)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: have the kernel send ``sig`` to this process when its parent dies, even by SIGKILL.

    Without it an orphaned worker keeps running (a hung detector, a crawl still
    fetching) after the command that started it was killed. Elsewhere a worker
    notices on its next read from the closed pipe to its parent.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)
