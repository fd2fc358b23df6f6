"""The store: one directory of Parquet files plus an append-only commit log.

Layout::

    STORE/
      store.json                      format marker and version
      documents/<crawl_id>/<run_id>-<seq>.parquet
      fetches/<crawl_id>/<run_id>-<seq>.parquet
      tags/<detector>/<tag_key>/<run_id>-<seq>.parquet
      errors/<run_id>-<seq>.parquet
      _log/<time_ns>-<run_id>-<seq>.json   one JSON entry per commit
      runs/<run_id>.json              run records (status, stats, config)
      _tmp/                           staging; emptied whenever a writer takes the lock
      .lock                           held (flock) by the one writing run

Why a log: a data file becomes visible only when a commit entry naming it is
written, and each entry is written to a temp file and renamed into place, so
readers never see half of anything. A run killed at any point leaves either a
committed file or an orphan that no reader looks at and the next writer
deletes. Documents are only ever added; tag commits may also *remove* files,
which is how a corpus detector's fresh output replaces its old output in one
atomic step.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from provenance import schemas

STORE_FORMAT_VERSION = 1
DATA_KINDS = ("documents", "tags", "errors", "fetches")
# Files removed from the live set stay on disk this long, for readers still using an older snapshot.
REMOVED_FILE_GRACE_S = 3600


_HELD: dict[Path, str] = {}  # stores whose lock this process holds -> command


class StoreError(Exception):
    """A store that cannot be used as asked (not a store, unreadable log, ...)."""


class StoreLocked(StoreError):
    """Another run holds the store's write lock."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(command: str) -> str:
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{command}-{secrets.token_hex(3)}"


def safe_name(value: str) -> str:
    """A path component made of letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")
    return cleaned or "_"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class FileEntry:
    """One committed data file."""

    path: str  # relative to the store root, '/'-separated
    kind: str
    rows: int
    bytes: int
    sha256: str
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "rows": self.rows, "bytes": self.bytes,
                "sha256": self.sha256, "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict) -> FileEntry:
        return cls(d["path"], d["kind"], d["rows"], d["bytes"], d["sha256"], d.get("meta", {}))


@dataclass
class Snapshot:
    """The committed state of a store at one moment: live files and tag coverage."""

    root: Path
    files: dict[str, FileEntry]  # live files by path
    removed: dict[str, float]  # path -> time it was removed (unix seconds)
    coverage: list[dict]  # tag coverage records, see runner.py

    def entries(self, kind: str) -> list[FileEntry]:
        return sorted((f for f in self.files.values() if f.kind == kind), key=lambda f: f.path)

    def paths(self, kind: str) -> list[Path]:
        return [self.root / f.path for f in self.entries(kind)]


_SKELETON = ("_log", "runs", "_tmp")  # created before store.json, which is written last


def _empty_skeleton_dir(path: Path) -> bool:
    """An empty _log/runs/_tmp: what a creation killed before writing store.json leaves; it may be finished."""
    return path.name in _SKELETON and path.is_dir() and not path.is_symlink() and not any(path.iterdir())


class Store:
    """A store directory. Reading needs nothing; writing happens inside ``run()``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    # ----- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, create: bool = False) -> Store:
        store = cls(root)
        marker = store.root / "store.json"
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("format") != "provenance-store":
                raise StoreError(f"{store.root}: store.json is not a provenance store marker")
            if info.get("version", 0) > STORE_FORMAT_VERSION:
                raise StoreError(f"{store.root}: store format {info['version']} is newer than this tool reads")
        elif create:
            if store.root.exists() and any(p for p in store.root.iterdir()
                                           if not p.name.startswith(".") and not _empty_skeleton_dir(p)):
                raise StoreError(f"{store.root}: directory exists, is not empty and is not a provenance store")
            store.root.mkdir(parents=True, exist_ok=True)
            for sub in _SKELETON:
                (store.root / sub).mkdir(exist_ok=True)
            _atomic_write_text(marker, json.dumps({"format": "provenance-store", "version": STORE_FORMAT_VERSION}))
        else:
            raise StoreError(f"{store.root}: no provenance store here (run crawl or ingest first)")
        return store

    # ----- reading -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        files: dict[str, FileEntry] = {}
        removed: dict[str, float] = {}
        coverage: list[dict] = []
        log_dir = self.root / "_log"
        names = sorted(p.name for p in log_dir.glob("*.json")) if log_dir.exists() else []
        for name in names:
            try:
                entry = json.loads((log_dir / name).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise StoreError(f"{log_dir / name}: unreadable commit entry: {exc}") from None
            for d in entry.get("add", []):
                files[d["path"]] = FileEntry.from_json(d)
            for path in entry.get("remove", []):
                if files.pop(path, None) is not None:
                    removed[path] = entry["committed_at_unix"]
            for drop in entry.get("drop_coverage", []):
                keep = drop.get("keep_tag_key")
                coverage = [c for c in coverage
                            if c["detector"] != drop["detector"] or (keep is not None and c["tag_key"] == keep)]
            coverage.extend(entry.get("coverage", []))
        return Snapshot(self.root, files, removed, coverage)

    def runs(self) -> list[dict]:
        out = []
        for path in sorted((self.root / "runs").glob("*.json")):
            if path.name.endswith(".stats.json"):
                continue  # a crawl's stats file beside its run record, not a run record
            with contextlib.suppress(OSError, json.JSONDecodeError):
                out.append(json.loads(path.read_text()))
        return out

    # ----- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, command: str, config: dict | None = None, run_id: str | None = None) -> Iterator[Run]:
        """Take the write lock and open a run record; mark it failed if the body raises."""
        with self._lock(command):
            run = Run(self, run_id or new_run_id(command), command, config or {})
            run.start()
            try:
                yield run
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                run.finish(status, error=f"{type(exc).__name__}: {exc}")
                raise
            if run.status == "running":
                run.finish("succeeded")

    @contextlib.contextmanager
    def _lock(self, command: str) -> Iterator[None]:
        # POSIX record locks (lockf), not flock: they belong to this process only, so detector
        # worker processes forked during a run never inherit the lock and keep it after we die.
        # The same process taking it twice is caught by _HELD, since POSIX locks do not
        # conflict within one process.
        lock_path = self.root / ".lock"
        if self.root in _HELD:
            raise StoreLocked(f"{self.root}: store is locked by this process ({_HELD[self.root]})")
        fh = open(lock_path, "a+")
        try:
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise StoreLocked(f"{self.root}: store is locked by {holder}; try again when it finishes") from None
            _HELD[self.root] = command
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since {utcnow():%Y-%m-%dT%H:%M:%SZ})")
            fh.flush()
            self._recover()
            yield
        finally:
            if _HELD.get(self.root) == command:
                with contextlib.suppress(OSError):
                    fh.truncate(0)
                del _HELD[self.root]
            fh.close()  # closing releases the lock

    def _recover(self) -> None:
        """With the lock held: drop staging leftovers, orphans and long-removed files; close dead runs."""
        tmp = self.root / "_tmp"
        tmp.mkdir(exist_ok=True)
        for leftover in tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        snap = self.snapshot()
        now = time.time()
        for kind in DATA_KINDS:
            base = self.root / kind
            if not base.exists():
                continue
            for path in base.rglob("*.parquet"):
                rel = path.relative_to(self.root).as_posix()
                if rel in snap.files:
                    continue
                removed_at = snap.removed.get(rel)
                if removed_at is None or now - removed_at > REMOVED_FILE_GRACE_S:
                    # Not in any commit: a run died between writing the file and committing it.
                    path.unlink(missing_ok=True)
        for record in self.runs():
            if record.get("status") == "running":
                record["status"] = "interrupted"
                record["finished_at"] = record.get("updated_at")
                record["error"] = "the process ended before the run finished; committed work is kept"
                _atomic_write_text(self.root / "runs" / f"{record['run_id']}.json", json.dumps(record, indent=2))


class Run:
    """One writing run (crawl, ingest, tag, ...), holding the lock. Files become visible on commit()."""

    def __init__(self, store: Store, run_id: str, command: str, config: dict):
        self.store = store
        self.run_id = run_id
        self.command = command
        self.config = config
        self.status = "running"
        self.stats: dict = {}
        self.started_at = utcnow()
        self._seq = 0
        self._commits = 0

    @property
    def record_path(self) -> Path:
        return self.store.root / "runs" / f"{self.run_id}.json"

    def _record(self, **extra) -> dict:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": self.status,
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "updated_at": utcnow().isoformat(),
            "commits": self._commits,
            "config": self.config,
            "stats": self.stats,
            **extra,
        }

    def start(self) -> None:
        (self.store.root / "runs").mkdir(exist_ok=True)
        _atomic_write_text(self.record_path, json.dumps(self._record(), indent=2, default=str))

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        extra = {"finished_at": utcnow().isoformat()}
        if error:
            extra["error"] = error
        _atomic_write_text(self.record_path, json.dumps(self._record(**extra), indent=2, default=str))

    def write(self, kind: str, table: pa.Table | pa.RecordBatch, subdir: str, meta: dict | None = None,
              row_group_size: int = 1024) -> FileEntry:
        """Check ``table`` against its schema and stage it as a Parquet file under ``kind/subdir``.

        The file is moved to its final path but is invisible until ``commit()`` names it.
        """
        conformed = schemas.conform(table, kind)
        schema = schemas.load(kind)
        conformed = conformed.replace_schema_metadata({
            **schema.metadata(),
            b"provenance.run_id": self.run_id.encode(),
        })
        self._seq += 1
        rel = f"{kind}/{subdir.strip('/')}/{self.run_id}-{self._seq:05d}.parquet" if subdir else \
            f"{kind}/{self.run_id}-{self._seq:05d}.parquet"
        final = self.store.root / rel
        tmp = self.store.root / "_tmp" / f"{self.run_id}-{self._seq:05d}.parquet"
        pq.write_table(conformed, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return FileEntry(rel, kind, conformed.num_rows, final.stat().st_size, file_sha256(final), meta or {})

    def commit(self, add: list[FileEntry] = (), remove: list[str] = (), coverage: list[dict] = (),
               drop_coverage: list[dict] = ()) -> None:
        """Make ``add`` visible and ``remove`` invisible, atomically, in one log entry.

        ``coverage`` records what a detector has processed (see runner.py);
        ``drop_coverage`` entries ({"detector", "keep_tag_key"?}) forget a
        detector's earlier coverage, applied before this entry's own coverage.
        """
        if not (add or remove or coverage or drop_coverage):
            return
        self._commits += 1
        now = utcnow()
        entry = {
            "run_id": self.run_id,
            "command": self.command,
            "committed_at": now.isoformat(),
            "committed_at_unix": now.timestamp(),
            "add": [f.to_json() for f in add],
            "remove": list(remove),
            "coverage": list(coverage),
            "drop_coverage": list(drop_coverage),
        }
        name = f"{time.time_ns():020d}-{self.run_id}-{self._commits:05d}.json"
        _atomic_write_text(self.store.root / "_log" / name, json.dumps(entry))
        _atomic_write_text(self.record_path, json.dumps(self._record(), indent=2, default=str))
