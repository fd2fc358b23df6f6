"""Turning an unexpected exception into the one line a user reads (the CLI's safety net).

Known mistakes are caught where they happen and worded there (store missing,
bad flag, bad input file). Whatever else escapes a command ends here: one
line, ``provenance: error: <what>``, and exit 1 -- never a traceback, unless
the user asks for it with ``provenance --debug ...`` or ``PROVENANCE_DEBUG=1``
(which child processes inherit).
"""

from __future__ import annotations

import errno
import os

DEBUG_ENV = "PROVENANCE_DEBUG"
DEBUG_HINT = f"rerun with --debug or {DEBUG_ENV}=1 for the traceback"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def enable_debug() -> None:
    os.environ[DEBUG_ENV] = "1"  # in the environment, so that the crawl's child process sees it too


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also where a library wraps it in an OSError without errno (pyarrow does)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, OSError) and ("No space left on device" in str(exc) or "Disk quota exceeded" in str(exc))


def disk_full_message(exc: BaseException, where: str | os.PathLike | None = None) -> str:
    path = getattr(exc, "filename", None) or where or "the store's file system"
    return f"disk full: {path}; free space and rerun, committed work is kept"


def describe(exc: BaseException, where: str | os.PathLike | None = None) -> str:
    """One line saying what went wrong; ``where`` names the store when the exception does not."""
    if is_disk_full(exc):
        return disk_full_message(exc, where)
    if isinstance(exc, OSError) and exc.strerror:
        target = f"{exc.filename}: " if exc.filename else ""
        return f"{target}{exc.strerror}"
    text = " ".join(str(exc).split())  # one line, however many the message had
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
