"""Progress of a long command (crawl, ingest, reference, tag): live on a terminal, a periodic line elsewhere.

On a terminal, a rich display: done (of total when known), rate, ETA and the
command's own fields (a crawl's queue and errors). Off a terminal (cron,
systemd, CI) one plain line on stderr every ``PROVENANCE_PROGRESS_INTERVAL``
seconds (default 30; 0 turns it off), for the journal:

    provenance: tag: 12000/50000 docs, 800 docs/s, ETA 48 s

Lines are written from the caller's thread when it reports progress, never
from a timer thread: the tag runner forks detector workers, and a fork must not
catch another thread holding stderr's lock.
"""

from __future__ import annotations

import os
import sys
import time

INTERVAL_ENV = "PROVENANCE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def log_interval_s() -> float:
    """Seconds between progress lines off a terminal (``PROVENANCE_PROGRESS_INTERVAL``; 0: none)."""
    value = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(value)) if value.strip() else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S  # a bad value must not stop a nightly job; the default is harmless


def _seconds(s: float) -> str:
    s = int(round(s))
    if s < 120:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s" if s < 7200 else f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """``with Progress("tag", "docs") as p: p.total(n); p.advance(k); p.set(queue=.., errors=..)``."""

    def __init__(self, command: str, unit: str, *, stream=None, live: bool | None = None,
                 interval_s: float | None = None):
        self.command, self.unit = command, unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = log_interval_s() if interval_s is None else interval_s
        self.done, self.of = 0, None
        self.fields: dict[str, object] = {}
        self.started = self._last_line = time.monotonic()
        self._rich = self._task = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._rich = RichProgress(TextColumn(f"[bold]{self.command}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[extra]}"), transient=True,
                                      console=Console(file=self.stream))
            self._rich.__enter__()
            self._task = self._rich.add_task(self.unit, total=None, rate="", extra="")
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def total(self, n: int | None) -> None:
        self.of = n
        self._show()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._show()

    def set(self, **fields) -> None:
        """Fields shown after the rate (e.g. ``queue=12, errors=0``; None: not shown); also sets ``done``."""
        if "done" in fields:
            self.done = fields.pop("done")
        self.fields.update(fields)
        self._show()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.done}/{self.of} {self.unit}" if self.of else f"{self.done} {self.unit}",
                 f"{rate:.0f} {self.unit}/s" if rate >= 10 else f"{rate:.1f} {self.unit}/s"]
        parts += [f"{k} {v}" for k, v in self.fields.items() if v is not None]
        if self.of and rate > 0 and self.done < self.of:
            parts.append(f"ETA {_seconds((self.of - self.done) / rate)}")
        return f"provenance: {self.command}: " + ", ".join(parts)

    def _show(self) -> None:
        if self._rich is not None:
            elapsed = time.monotonic() - self.started
            rate = f"{self.done / elapsed:.0f} {self.unit}/s" if elapsed > 0 else ""
            extra = ", ".join(f"{k} {v}" for k, v in self.fields.items() if v is not None)
            self._rich.update(self._task, completed=self.done, total=self.of, rate=rate, extra=extra)
            return
        if self.interval_s and time.monotonic() - self._last_line >= self.interval_s:
            self._last_line = time.monotonic()
            print(self.line(), file=self.stream, flush=True)
