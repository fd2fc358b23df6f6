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


def python_command(code: str) -> list[str]:
    """argv that runs ``code`` in a child Python (this interpreter) that cannot see the working directory.

    ``python -m mod`` and ``python -c code`` put the working directory first on
    sys.path, so a child started from a directory holding a package named
    ``provenance`` (a source checkout, after a non-editable install) would import
    that instead of the installed one. The child drops that entry before it
    imports anything of ours; multiprocessing's spawned processes inherit the
    cleaned sys.path from it. (``-P`` does the same, from Python 3.11 only.)
    """
    return [sys.executable, "-c", f"import sys; sys.path[:] = [p for p in sys.path if p != '']\n{code}"]
