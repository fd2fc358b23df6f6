"""Helpers shared by the campaign tests (test_campaign_*.py): the real CLI in its own process group,
killing that group, and the store's contents as comparable rows.

The campaigns check contracts a user relies on, not internals: the store stays readable, a re-run
ends where an uninterrupted run ends, row for row, and a failure is one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import provenance

CLI = [sys.executable, "-c", "from provenance.cli import main; main()"]
TAGGER_PLUGIN = Path(__file__).parent / "plugins" / "campaign_tagger.py"


def cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """The real `provenance` command, run to completion."""
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess, *codes: int) -> subprocess.CompletedProcess:
    codes = codes or (0,)
    assert proc.returncode in codes, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def run_killed_after(args, delay_s: float, *, cwd=None, env=None, log: Path | None = None) -> bool:
    """Start the CLI in a new session and SIGKILL its whole process group after ``delay_s``.

    The CLI starts children (the crawl process, detector workers, extraction processes): killing only
    the CLI would leave them running and writing. Returns False when the command finished first.
    """
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                                stdout=out, stderr=out, start_new_session=True)
        try:
            proc.wait(timeout=delay_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _wait_group_gone(proc.pid)
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray children of a finished run
        return False
    finally:
        if log:
            out.close()


def run_killed_when(args, ready, *, cwd=None, env=None, timeout: float = 300) -> bool:
    """Like run_killed_after, but SIGKILL the process group as soon as ``ready()`` is true (e.g. the log has
    reached a chosen entry), so where the kill lands does not depend on how fast a loaded machine runs.
    Returns False when the command finished first."""
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            _wait_group_gone(proc.pid)
            return True
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def _wait_group_gone(pgid: int, timeout_s: float = 5.0) -> None:
    """Until no process of the group is left (members die asynchronously after SIGKILL)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)  # zombies waiting for a reaper also answer; their locks are already released


def timed_run(args, first_write, *, cwd=None, env=None,
              timeout=300) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run the CLI to completion; returns (process, seconds until ``first_write()`` was true, seconds in all).

    The second figure tells a kill campaign when the command starts writing (after imports, planning and
    the crawl's start-up), so its random kill points can be spread over the part that writes.
    """
    start = time.monotonic()
    proc = subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None and time.monotonic() - start < timeout:
        if first is None and first_write():
            first = time.monotonic() - start
        time.sleep(0.01)
    out, err = proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
    total = time.monotonic() - start
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), first or total, total


def has_parquet(directory: Path):
    """A ``first_write`` for timed_run: some Parquet file exists under ``directory`` (staged or committed)."""
    return lambda: directory.is_dir() and next(directory.rglob("*.parquet"), None) is not None


def store_readable(store: Path) -> int:
    """The store answers a query through the CLI, as a user would check it; returns the document count."""
    proc = ok(cli("query", "select count(*) AS n from documents", "--store", store, "--format", "json"))
    import json

    return json.loads(proc.stdout)[0]["n"]


def query(store: Path, sql: str) -> list[tuple]:
    con = provenance.connect(store)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def document_rows(store: Path) -> list[tuple]:
    """(doc_id, text_sha256, url) of every document row, duplicates kept: 'exactly once' is comparable."""
    return sorted(query(store, "SELECT doc_id, text_sha256, url FROM documents"), key=repr)


def tag_rows(store: Path) -> list[tuple]:
    """(doc_id, detector, tag, score) of every live tag row, duplicates kept."""
    return sorted(query(store, "SELECT doc_id, detector, tag, score FROM tags"), key=repr)
