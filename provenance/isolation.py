"""Running a detector where its faults cannot hurt the run: a worker process per detector.

The runner talks to each detector through a worker with one method,
``call(op, payload, timeout)``, that always returns a ``Reply`` instead of
raising. ``ProcessWorker`` forks a child that holds the detector instance for
the whole run (so a corpus detector keeps its state across batches); a call
that outlives its time budget gets the child killed, and a child that dies
(segfault, os._exit, out of memory) is reported as crashed. ``InlineWorker``
calls the detector in this process: no time budget, for debugging and for
engines that isolate tasks themselves (Ray).

Ops: "tag" (per-document batch -> table), "observe" (corpus batch -> None),
"finish" (corpus -> list of tables).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass

from provenance.detectors import Detector, output_to_table


@dataclass
class Reply:
    ok: bool
    value: object = None
    kind: str | None = None  # exception | timeout | crashed
    message: str | None = None
    traceback: str | None = None
    seconds: float = 0.0


def _run_op(detector: Detector, op: str, payload):
    if op == "tag":
        return output_to_table(detector.tag_batch(payload), detector)
    if op == "observe":
        detector.observe(payload)
        return None
    if op == "finish":
        out = detector.finish()
        if out is None:
            return []
        if isinstance(out, (list, tuple)) and not (out and isinstance(out[0], dict)):
            parts = out
        elif hasattr(out, "__next__"):
            parts = list(out)
        else:
            parts = [out]
        return [output_to_table(part, detector) for part in parts]
    raise ValueError(f"unknown op {op!r}")


def _exception_reply(exc: BaseException, started: float) -> Reply:
    return Reply(False, kind="exception", message=f"{type(exc).__name__}: {exc}",
                 traceback=traceback.format_exc(), seconds=time.monotonic() - started)


class InlineWorker:
    def __init__(self, detector_cls: type[Detector], options: dict):
        self.detector = detector_cls(**options)
        self.alive = True

    def call(self, op: str, payload=None, timeout: float | None = None) -> Reply:
        started = time.monotonic()
        try:
            value = _run_op(self.detector, op, payload)
        except Exception as exc:
            return _exception_reply(exc, started)
        return Reply(True, value, seconds=time.monotonic() - started)

    def send(self, op: str, payload=None) -> None:
        self._pending = (op, payload)

    def receive(self, timeout: float | None = None) -> Reply:
        op, payload = self._pending
        self._pending = None
        return self.call(op, payload, timeout)

    def close(self) -> None:
        self.alive = False


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the runner dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere a worker notices on its next recv() that the pipe is closed


def _child_main(conn, detector_cls, options) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a run stops
    _die_with_parent()
    try:
        detector = detector_cls(**options)
    except Exception as exc:
        conn.send(_exception_reply(exc, time.monotonic()))
        return
    conn.send(Reply(True, "ready"))
    while True:
        try:
            op, payload = conn.recv()
        except EOFError:
            return
        if op == "close":
            return
        started = time.monotonic()
        try:
            reply = Reply(True, _run_op(detector, op, payload), seconds=time.monotonic() - started)
        except Exception as exc:
            reply = _exception_reply(exc, started)
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. a result that cannot be pickled
            conn.send(_exception_reply(exc, started))


class ProcessWorker:
    """A forked child holding one detector instance; killed when a call exceeds its budget."""

    def __init__(self, detector_cls: type[Detector], options: dict, start_timeout: float = 60.0):
        ctx = multiprocessing.get_context("fork")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child_conn, detector_cls, options),
                                 name=f"detector-{detector_cls.name}", daemon=True)
        self._proc.start()
        child_conn.close()
        self.alive = True
        self._pending_since: float | None = None
        ready = self._receive(start_timeout, time.monotonic())
        if not ready.ok:
            self.close()
            raise RuntimeError(f"detector {detector_cls.name} failed to start: {ready.message}")

    def send(self, op: str, payload=None) -> None:
        self._pending_since = time.monotonic()
        self._conn.send((op, payload))

    def receive(self, timeout: float | None) -> Reply:
        started = self._pending_since or time.monotonic()
        self._pending_since = None
        return self._receive(timeout, started)

    def _receive(self, timeout: float | None, started: float) -> Reply:
        remaining = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
        try:
            if self._conn.poll(remaining):
                return self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            pass
        else:
            self.close()
            return Reply(False, kind="timeout", message=f"no answer within the time budget of {timeout:g} s; "
                         "the detector was stopped", seconds=time.monotonic() - started)
        code = self._proc.exitcode
        self.close()
        return Reply(False, kind="crashed", message=f"detector process died (exit code {code})",
                     seconds=time.monotonic() - started)

    def call(self, op: str, payload=None, timeout: float | None = None) -> Reply:
        self.send(op, payload)
        return self.receive(timeout)

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._proc.is_alive():
            try:
                self._conn.send(("close", None))
            except (OSError, ValueError):
                pass
            self._proc.join(0.5)
        if self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)
        self._conn.close()


def make_worker(isolation: str, detector_cls: type[Detector], options: dict):
    if isolation == "process":
        return ProcessWorker(detector_cls, options)
    if isolation == "inline":
        return InlineWorker(detector_cls, options)
    raise ValueError(f"unknown isolation {isolation!r}: use 'process' or 'inline'")
