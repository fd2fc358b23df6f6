"""Running a detector where its faults cannot hurt the run: a worker process per detector.

The runner talks to each detector through a worker with ``send(op, payload)``
and ``receive(timeout)`` (or ``call``), which always return a ``Reply``
instead of raising. ``ProcessWorker`` forks a child that holds the detector
instance for the whole run (so a corpus detector keeps its state across
batches); a call that outlives its time budget gets the child (and anything
it started) killed, and a child that dies (segfault, os._exit) is reported as
crashed. The child's memory is bounded too: see ``limit_memory``.
``InlineWorker`` calls the detector in this process: no time budget and no
memory limit, for debugging (pdb works) and for engines that isolate tasks
themselves (Ray).

Ops: "tag" (per-document batch -> table), "observe" (corpus batch -> None, or
a table of state rows), "finish" (corpus -> tables, streamed: ``finish_parts``
yields one Reply per part as the detector produces it, so neither process
holds the whole output).

Reply kinds when ``ok`` is false (the ``kind`` column of the errors view):
  exception       the detector raised; ``traceback`` holds where
  timeout         no answer within the time budget; the detector was stopped
  crashed         the worker process died, or the detector failed to start
  memory          the detector went over the worker's memory limit; the worker
                  process has ended (its memory is only given back that way)
  invalid_output  it returned something that cannot become tag rows
A detector's prints go to stderr, never to the command's stdout.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass

import pyarrow as pa

from provenance.processes import die_with_parent
from provenance.detectors import Detector, InvalidOutput, output_to_table, state_to_table


@dataclass
class Reply:
    ok: bool
    value: object = None
    kind: str | None = None  # exception | timeout | crashed | memory | invalid_output
    message: str | None = None
    traceback: str | None = None
    seconds: float = 0.0


def _run_op(detector: Detector, op: str, payload):
    if op == "tag":
        return output_to_table(detector.tag_batch(payload), detector)
    if op == "observe":
        state = detector.observe(payload)
        if getattr(detector, "keeps_state", False):
            return state_to_table(state, detector)
        return None
    raise ValueError(f"unknown op {op!r}")


FINISH_PART_ROWS = 100_000  # rows per part of a finish stream (and so at most per tag file it writes)


def _finish_parts(detector: Detector, corpus):
    """The tables ``finish`` produces, one at a time (it may return one output, a list, or yield parts)."""
    out = detector.finish(corpus) if getattr(detector, "keeps_state", False) else detector.finish()
    if out is None:
        return
    if isinstance(out, (list, tuple)) and not (out and isinstance(out[0], dict)):
        parts = out
    elif hasattr(out, "__next__"):
        parts = out
    else:
        parts = [out]
    for part in parts:
        # In slices: a worker sends each one through a pipe, and a copy of a whole large output (a million
        # tags with their evidence) on top of what finish still holds can pass the worker's memory limit.
        for batch in output_to_table(part, detector).to_batches(max_chunksize=FINISH_PART_ROWS):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


def _to_wire(table: pa.Table) -> pa.Buffer:
    """A table as Arrow IPC bytes: unlike pickle, which copies the whole buffers a slice points into, IPC
    writes only the slice's rows."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_wire(buffer: pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(buffer).read_all()


def _is_memory_error(exc: BaseException | None) -> bool:
    """A MemoryError (numpy's and Arrow's are subclasses), or an exception raised while handling one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _exception_reply(exc: BaseException, started: float, memory_limit_mb: int = 0) -> Reply:
    seconds = time.monotonic() - started
    if isinstance(exc, InvalidOutput):
        return Reply(False, kind="invalid_output", message=str(exc), seconds=seconds)
    try:  # formatting needs memory too, which a detector over its limit may not have left
        tb = traceback.format_exc()
    except MemoryError:
        tb = None
    message = f"{type(exc).__name__}: {exc}"
    if _is_memory_error(exc):
        if memory_limit_mb:
            message = f"over the worker memory limit of {memory_limit_mb} MB ([tag] worker_memory_mb): {message}"
        return Reply(False, kind="memory", message=message, traceback=tb, seconds=seconds)
    return Reply(False, kind="exception", message=message, traceback=tb, seconds=seconds)


def _data_segment_bytes() -> int:
    """This process's private writable memory now (VmData), 0 where /proc cannot tell."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_headroom_mb() -> int | None:
    """What this process may still allocate under its RLIMIT_DATA (the worker's ``[tag] worker_memory_mb``),
    in MB; None when unlimited. For detectors that size a buffer or a library's memory limit (DuckDB's
    ``memory_limit``) to fit the worker."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, (soft - _data_segment_bytes()) // (1024 * 1024))


def limit_memory(megabytes: int) -> None:
    """Let this (worker) process allocate at most ``megabytes`` more than it holds now.

    RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 it counts the private writable
    mappings that malloc, numpy and Arrow take, so an allocation over the
    limit fails at once with a MemoryError (``pyarrow.ArrowMemoryError`` is
    one) instead of the machine running out.
    Address space that is only reserved (thread stacks' guard pages, CUDA's
    and Go's reservations) is not counted, as RLIMIT_AS would. The baseline
    is what the fork inherited from the tag command, so the limit measures
    the detector alone.
    """
    if megabytes <= 0:
        return
    # Arrow's default allocator, mimalloc, reserves writable arenas (1 GiB at first use) that
    # RLIMIT_DATA counts as if used; the system allocator takes only what is asked for.
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    limit = _data_segment_bytes() + megabytes * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


class InlineWorker:
    """The detector in this process: exceptions are caught, but nothing can stop a hung call."""

    def __init__(self, detector_cls: type[Detector], options: dict, start_timeout: float | None = None,
                 memory_limit_mb: int = 0):
        with contextlib.redirect_stdout(sys.stderr):
            self.detector = detector_cls(**options)
        self.alive = True
        self._pending = None

    def call(self, op: str, payload=None, timeout: float | None = None) -> Reply:
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                value = _run_op(self.detector, op, payload)
        except Exception as exc:
            return _exception_reply(exc, started)
        return Reply(True, value, seconds=time.monotonic() - started)

    def finish_parts(self, payload=None, timeout: float | None = None):
        """Each part of ``finish`` as a Reply(ok, table); a failure ends the stream with its Reply."""
        started = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):
                for table in _finish_parts(self.detector, payload):
                    yield Reply(True, table, seconds=time.monotonic() - started)
                    started = time.monotonic()
        except Exception as exc:
            yield _exception_reply(exc, started)

    def send(self, op: str, payload=None) -> None:
        self._pending = (op, payload)

    def receive(self, timeout: float | None = None) -> Reply:
        op, payload = self._pending
        self._pending = None
        return self.call(op, payload, timeout)

    def close(self) -> None:
        self.alive = False


def _child_main(conn, detector_cls, options, memory_limit_mb: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a run stops
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: a time-out kills whatever the detector started too
    die_with_parent(signal.SIGKILL)
    # A detector's prints must not end up in the command's stdout (e.g. `tag --json`).
    with contextlib.suppress(OSError, ValueError):
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    limit_memory(memory_limit_mb)  # before the detector is built: loading a model counts too
    started = time.monotonic()
    try:
        detector = detector_cls(**options)
    except Exception as exc:
        conn.send(_exception_reply(exc, started, memory_limit_mb))
        return
    conn.send(Reply(True, "ready", seconds=time.monotonic() - started))
    while True:
        started = time.monotonic()
        try:
            op, payload = conn.recv()
        except (EOFError, OSError):
            return
        except MemoryError as exc:  # the batch itself did not fit: answer, so the parent is not left waiting
            reply = _exception_reply(exc, started, memory_limit_mb)
        else:
            if op == "close":
                return
            if op == "finish":
                reply = _send_finish_parts(conn, detector, payload, memory_limit_mb)
                payload = None
                if reply.kind == "memory":
                    return
                continue
            started = time.monotonic()
            try:
                reply = Reply(True, _run_op(detector, op, payload), seconds=time.monotonic() - started)
            except Exception as exc:
                reply = _exception_reply(exc, started, memory_limit_mb)
            finally:
                payload = None
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. a result that cannot be pickled, or too big to pickle
            reply = _exception_reply(exc, started, memory_limit_mb)
            conn.send(reply)
        if reply.kind == "memory":
            # Whatever the detector holds (a leak, a half-updated state) stays with this process:
            # end it, so its memory goes back to the system; the runner starts a fresh worker.
            return


_FINISH_DONE = "finish-done"  # the last message of a finish stream: every part has been sent


def _send_finish_parts(conn, detector, corpus, memory_limit_mb: int) -> Reply:
    """In the worker: send each part of ``finish`` as it is produced, then the end marker (or the fault)."""
    started = time.monotonic()
    try:
        for table in _finish_parts(detector, corpus):
            conn.send(Reply(True, _to_wire(table), seconds=time.monotonic() - started))
            table = None
            started = time.monotonic()
        reply = Reply(True, _FINISH_DONE, seconds=time.monotonic() - started)
    except Exception as exc:
        reply = _exception_reply(exc, started, memory_limit_mb)
    conn.send(reply)
    return reply


class WorkerStartError(RuntimeError):
    """The detector could not be started; ``reply`` says why (exception, timeout or crash)."""

    def __init__(self, name: str, reply: Reply):
        super().__init__(f"detector {name} failed to start: {reply.message}")
        self.reply = reply


class ProcessWorker:
    """A forked child holding one detector instance; killed when a call exceeds its budget."""

    def __init__(self, detector_cls: type[Detector], options: dict, start_timeout: float | None = 60.0,
                 memory_limit_mb: int = 0):
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        for stream in (sys.stdout, sys.stderr):  # or the child would write our buffered output again
            with contextlib.suppress(Exception):
                stream.flush()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, detector_cls, options, memory_limit_mb),
                                 name=f"detector-{detector_cls.name}", daemon=True)
        self._proc.start()
        child_conn.close()
        self.alive = True
        self._pending_since: float | None = None
        ready = self._receive(start_timeout, time.monotonic())
        if not ready.ok:
            self.close()
            raise WorkerStartError(detector_cls.name, ready)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def send(self, op: str, payload=None) -> None:
        self._pending_since = time.monotonic()
        try:
            self._conn.send((op, payload))
        except (OSError, ValueError):
            pass  # the child is gone: receive() reports it as crashed

    def receive(self, timeout: float | None) -> Reply:
        started = self._pending_since or time.monotonic()
        self._pending_since = None
        reply = self._receive(timeout, started)
        if reply.kind == "memory":
            self.close()  # the child ends itself after a memory fault; reap it
        return reply

    def _receive(self, timeout: float | None, started: float) -> Reply:
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        try:
            if self._conn.poll(remaining):
                return self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            pass
        else:
            self.close(kill=True)
            return Reply(False, kind="timeout", message=f"no answer within the time budget of {timeout:g} s; "
                         "the detector was stopped", seconds=time.monotonic() - started)
        self._proc.join(1)
        code = self._proc.exitcode
        self.close(kill=True)
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Reply(False, kind="crashed", message=f"detector process died ({how})",
                     seconds=time.monotonic() - started)

    def call(self, op: str, payload=None, timeout: float | None = None) -> Reply:
        self.send(op, payload)
        return self.receive(timeout)

    def finish_parts(self, payload=None, timeout: float | None = None):
        """Each part of ``finish`` as a Reply(ok, table), as the worker sends it; a failure (or running past
        ``timeout``, which covers all parts together) ends the stream with its Reply."""
        started = time.monotonic()
        self.send("finish", payload)
        while True:
            remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            reply = self._receive(remaining, time.monotonic())
            if reply.kind == "timeout":
                reply.message = (f"finish did not complete within its time budget of {timeout:g} s "
                                 "([tag] finish_budget_s); the detector was stopped")
            if reply.kind == "memory":
                self.close()
            if not reply.ok or isinstance(reply.value, str):  # a fault, or _FINISH_DONE (parts are bytes)
                if not reply.ok:
                    yield reply
                return
            reply.value = _from_wire(reply.value)
            yield reply

    def close(self, kill: bool = False) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._proc.is_alive() and not kill:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("close", None))
            self._proc.join(0.5)
        if self._proc.is_alive() or kill:
            for killer in (lambda: os.killpg(self._proc.pid, signal.SIGKILL),
                           lambda: os.kill(self._proc.pid, signal.SIGKILL)):
                with contextlib.suppress(OSError):
                    killer()
            self._proc.join(5)
        self._conn.close()


def make_worker(isolation: str, detector_cls: type[Detector], options: dict, start_timeout: float | None = 60.0,
                memory_limit_mb: int = 0):
    """A started worker; raises WorkerStartError when the detector cannot be constructed.

    ``memory_limit_mb`` (process isolation only; 0: none) bounds what the
    detector may allocate in its worker, see ``limit_memory``.
    """
    if isolation == "process":
        return ProcessWorker(detector_cls, options, start_timeout, memory_limit_mb)
    if isolation == "inline":
        try:
            return InlineWorker(detector_cls, options)
        except Exception as exc:
            raise WorkerStartError(detector_cls.name, _exception_reply(exc, time.monotonic())) from exc
    raise ValueError(f"unknown isolation {isolation!r}: use 'process' or 'inline'")
