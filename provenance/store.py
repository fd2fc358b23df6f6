"""The store: one directory of Parquet files plus an append-only commit log.

Layout::

    STORE/
      store.json                      format marker and version
      documents/<crawl_id>/<run_id>-<seq>.parquet
      fetches/<crawl_id>/<run_id>-<seq>.parquet
      tags/<detector>/<tag_key>/<run_id>-<seq>.parquet
      state/<detector>/<state_key>/<run_id>-<seq>.parquet   state rows of state-keeping corpus detectors
      references/<name>/<run_id>-<seq>.parquet              reference sets (provenance reference add)
      errors/<run_id>-<seq>.parquet
      _log/<seq>.json                 one JSON entry per commit, seq = 1, 2, 3, ... (20 digits)
      _log/<seq>.checkpoint.json.gz   the whole committed state after entry seq (every CHECKPOINT_EVERY entries)
      _log/_torn/                     empty or cut-off last entries set aside (see below)
      runs/<run_id>.json              run records (status, stats, config)
      _tmp/                           staging; emptied by a writer that takes the lock alone
      _index/doc_ids/                 every stored doc_id, sorted (derived data: provenance/doc_index.py)
      _index/captures/                every stored (doc_id, fetched_at) capture, sorted (derived data, the same)
      _index/url_versions/            every version of every URL, sorted by host (derived: crawlers/known_index.py)
      .lock                           POSIX record locks: shared by writing runs, exclusive for maintenance

Why a log: a data file becomes visible only when a commit entry naming it is
written, and each entry is written to a temp file, fsynced and renamed into
place (then its directory is fsynced, which is what makes a rename survive a
power loss), so readers never see half of anything. A run killed at any point
leaves either a committed file or an orphan that no reader looks at and the
next writer deletes. Documents are only ever added; tag commits may also
*remove* files, which is how a corpus detector's fresh output replaces its old
output in one atomic step.

Entries are numbered by a gap-free sequence, not by the clock: a clock
stepped back cannot reorder them. Several runs write at once (optimistic
concurrency): each claims the next number with ``link``, which never
replaces, and a run that loses the race reads the entries it missed, checks
them against its own commit (see ``Run.commit``) and claims the number after
them. Only maintenance (compact, vacuum, check) and the repairs a crash
needs hold the store alone. Stores written before
(format 1) named entries ``<time_ns>-<run_id>-<n>.json``; those are read
first, in name order, then the numbered ones (the first writer marks the
store format 2, so an older tool, which would misorder them, refuses it).

Damage: because every entry is made durable before it is linked in (and a
writer links n + 1 only after reading n), only the *last* entry can be empty
or cut off by a crash (contents never flushed). Readers ignore such an entry
with a warning and the next writer that has the store to itself moves it to
``_log/_torn/``; the commit it held is lost, as if the run had died just
before it. An unreadable entry anywhere else, or a missing
number, is damage no crash makes: a StoreError names the entry and the repair.

Checkpoints: replaying the whole log costs one JSON parse per commit, so
every CHECKPOINT_EVERY entries the writer also writes the whole state after
that entry (live files, removed files, coverage) as one gzipped JSON file,
and readers start from the newest good checkpoint and apply only the entries
after it. A checkpoint is only an optimisation: it is written like everything
else (temp file, fsync, rename, fsync of the directory), it names the sha256
of the entry it ends with (so a checkpoint of a rolled-back history is never
used), and one that is unreadable, cut off or does not match is skipped with
a warning in favour of an older one or of the full replay.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import gzip
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from provenance import schemas

# 2: commit entries named by sequence number. Format 1 stores (entries named by time_ns) are still read;
# the first writer marks them 2, so an older tool, which would sort the two kinds of name wrongly, refuses them.
STORE_FORMAT_VERSION = 2
DATA_KINDS = ("documents", "tags", "errors", "fetches", "references", "state")
# Kinds whose columns a detector defines (state rows keyed by doc_id): not checked against a schema here.
DETECTOR_DEFINED_KINDS = ("state",)
# Files removed from the live set stay on disk this long, for readers still using an older snapshot.
REMOVED_FILE_GRACE_S = 3600
# Files of these kinds are written in the order of this column, and say so in their Parquet footer
# (``sorting_columns``, which any Parquet reader can see): an export merges such files in doc_id order instead of
# sorting every document through temporary files (provenance/export.py). Files written before are not sorted;
# ``provenance store compact`` rewrites them.
SORTED_BY = {"documents": "doc_id"}


_HELD: dict[Path, str] = {}  # stores whose lock this process holds -> command

# Commit entry names: ``<seq>.json`` now, ``<time_ns>-<run_id>-<n>.json`` in format 1 stores.
LOG_ENTRY_NAME = re.compile(r"^(\d{20})\.json$")
LEGACY_LOG_ENTRY_NAME = re.compile(r"^\d{20}-.+\.json$")
TORN_DIR = "_torn"  # under _log/: empty or cut-off last entries, set aside by the next writer
# A checkpoint of the whole state every this many entries: opening reads it and at most this many entries.
CHECKPOINT_EVERY = 100
KEEP_CHECKPOINTS = 2  # the newest and one before it, to fall back on if the newest is damaged
CHECKPOINT_NAME = re.compile(r"^(\d{20})\.checkpoint\.json\.gz$")
CHECKPOINT_FORMAT = 1

log = logging.getLogger("provenance.store")
_WARNED: set[tuple[Path, str]] = set()  # (store, entry) already warned about: one warning per process


class StoreError(Exception):
    """A store that cannot be used as asked (not a store, unreadable log, ...)."""


class StoreLocked(StoreError):
    """Another run holds the store's write lock."""


class StoreConflict(StoreLocked):
    """Another run committed, while this one worked, a change this commit cannot follow (it removed a file
    this commit depends on, or recorded coverage of the same detector). Nothing of the commit became visible;
    running the command again redoes it from what is committed (exit 75, like a lock)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(command: str) -> str:
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{command}-{secrets.token_hex(3)}"


def safe_name(value: str) -> str:
    """A path component made of letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")
    return cleaned or "_"


def is_sorted_file(path: Path, kind: str) -> bool:
    """Whether the Parquet file ``path`` of ``kind`` says in its footer that its rows are in ``SORTED_BY[kind]``
    order, as every file of that kind written since is."""
    meta = pq.ParquetFile(path).metadata
    want = ((SORTED_BY[kind], "ascending"),)
    schema = meta.schema.to_arrow_schema()
    return all(meta.row_group(g).sorting_columns and
               pq.SortingColumn.to_ordering(schema, meta.row_group(g).sorting_columns)[0] == want
               for g in range(meta.num_row_groups))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make the renames and creations in directory ``path`` durable.

    fsyncing a file saves its contents, not its name: after a power loss a
    renamed file can be missing, or present but empty, unless its directory
    was fsynced too.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p path``, each directory it creates made durable in its parent."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


def _write_temp(path: Path, text: str | bytes) -> Path:
    """``text`` in a hidden temp file beside ``path``, fsynced; returns the temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half temp file behind
        raise
    return tmp


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Replace ``path`` by ``text`` so that readers and a power loss see the old file or the new, whole."""
    os.replace(_write_temp(path, text), path)
    fsync_dir(path.parent)


def _create_text(path: Path, text: str) -> None:
    """Like atomic_write_text, but fail (FileExistsError) rather than replace an existing ``path``."""
    tmp = _write_temp(path, text)
    try:
        try:
            os.link(tmp, path)  # unlike rename, link never replaces: of writers racing for a name, one wins
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: claim the name with O_EXCL, then fill it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # FileExistsError: lost the race
            try:
                os.write(fd, text.encode() if isinstance(text, str) else text)
                os.fsync(fd)  # until here a reader may see it empty: read as torn, or retried (_entries_from)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while the log is decoded: it makes hundreds of thousands of dicts and
    lists, none in a cycle, and every collection pass would walk all those alive (a third of an open)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def show_store_warnings() -> None:
    """For command-line programs: each store warning as one line ``provenance: warning: ...`` on stderr."""
    if not any(getattr(h, "provenance_store", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("provenance: warning: %(message)s"))
        handler.provenance_store = True
        log.addHandler(handler)
        log.propagate = False


def _list_dir(path: Path) -> list[str]:
    return os.listdir(path) if path.is_dir() else []


def _warn_once(store_root: Path, key: str, message: str) -> None:
    if (store_root, key) not in _WARNED:
        _WARNED.add((store_root, key))
        log.warning(message)


def coverage_kind(record: dict) -> str:
    """What a coverage record covers: "corpus" (a corpus detector's finish), "state" (rows of a detector's
    stored state), "doc" (rows a per-document detector tagged) or "chain" (the capture files a per-document
    detector's ``previous`` columns last reflected: runner.py, "Version chains")."""
    if record.get("corpus"):
        return "corpus"
    if record.get("chain"):
        return "chain"
    return "state" if "state_key" in record else "doc"


def _drops(drop: dict, record: dict) -> bool:
    """Whether a drop_coverage entry {"detector", "kind"?, "keep_tag_key"?, "keep_state_key"?} forgets a record."""
    if record["detector"] != drop["detector"]:
        return False
    if drop.get("kind") is not None and coverage_kind(record) != drop["kind"]:
        return False
    if drop.get("keep_tag_key") is not None and record.get("tag_key") == drop["keep_tag_key"]:
        return False
    return not (drop.get("keep_state_key") is not None and record.get("state_key") == drop["keep_state_key"])


def _parse_entry(data: bytes) -> dict:
    """A commit entry's contents; ValueError saying why they are not one."""
    if not data.strip(b"\0 \t\r\n"):
        raise ValueError("empty" if not data else "no data, only zero bytes or blanks")
    try:
        entry = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not complete JSON: {exc}") from None
    if not isinstance(entry, dict) or "add" not in entry:
        raise ValueError("JSON, but not a commit entry")
    return entry


@dataclass(frozen=True)
class TornEntry:
    """An empty or cut-off last commit entry: what a crash or power loss mid-commit leaves."""

    path: Path
    reason: str


@dataclass(frozen=True)
class FileEntry:
    """One committed data file."""

    path: str  # relative to the store root, '/'-separated
    kind: str
    rows: int
    bytes: int
    sha256: str
    meta: dict = field(default_factory=dict)

    FIELDS = ("path", "kind", "rows", "bytes", "sha256", "meta")  # a class constant, not a field

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
    log_seq: int = 0  # sequence number of the last commit entry read (0: none yet)
    torn: TornEntry | None = None  # an empty or cut-off last entry, ignored
    checkpoint_seq: int = 0  # the checkpoint it was read from (0: the whole log was replayed)

    def apply(self, entry: dict) -> None:
        """One commit entry's changes, in place."""
        for d in entry.get("add", []):
            self.files[d["path"]] = FileEntry.from_json(d)
        for removed_path in entry.get("remove", []):
            if self.files.pop(removed_path, None) is not None:
                self.removed[removed_path] = entry["committed_at_unix"]
        for drop in entry.get("drop_coverage", []):
            self.coverage = [c for c in self.coverage if not _drops(drop, c)]
        self.coverage.extend(entry.get("coverage", []))

    def state(self) -> dict:
        """What a checkpoint holds: everything the log's entries up to log_seq determine.

        Files as columns (a list per field): JSON of lists decodes five times faster than one object per file.
        """
        files = self.files.values()
        return {"files": {name: [getattr(f, name) for f in files] for name in FileEntry.FIELDS},
                "removed": self.removed, "coverage": self.coverage}

    @classmethod
    def from_state(cls, root: Path, state: dict, checkpoint_seq: int) -> Snapshot:
        columns = state["files"]
        if len({len(columns[name]) for name in FileEntry.FIELDS}) != 1:
            raise ValueError("file columns of different lengths")
        files = dict(zip(columns["path"], map(FileEntry, *(columns[name] for name in FileEntry.FIELDS))))
        if not isinstance(state["removed"], dict) or not isinstance(state["coverage"], list):
            raise ValueError("removed or coverage of the wrong type")
        return cls(root, files, state["removed"], state["coverage"], log_seq=checkpoint_seq,
                   checkpoint_seq=checkpoint_seq)

    def entries(self, kind: str) -> list[FileEntry]:
        return sorted((f for f in self.files.values() if f.kind == kind), key=lambda f: f.path)

    def paths(self, kind: str) -> list[Path]:
        return [self.root / f.path for f in self.entries(kind)]


# .lock: byte 0 is the store lock, held shared by writing runs and exclusively by maintenance (and for a
# moment by the writer that finds the store free: it repairs what a crash left, then shares it). Maintenance
# first holds MAINTENANCE_BYTE too, so that a writer finding byte 0 taken can tell it from that moment (wait)
# from maintenance (refuse). A ``serial`` run also holds a byte of its key's. Older tools lock the whole
# file: they exclude everyone, and look like maintenance.
MAINTENANCE_BYTE = 1 << 21
SERIAL_BYTES = 1 << 20  # serial keys hash to bytes 1 .. SERIAL_BYTES
RECOVERY_WAIT_S = 120.0  # how long a writer waits for another to finish its repairs alone


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """A run's hold on ``.lock`` (see MAINTENANCE_BYTE above)."""

    def __init__(self, fh):
        self.fh = fh
        self.alone = False

    def _try(self, how: int, byte: int) -> bool:
        try:
            fcntl.lockf(self.fh, how | fcntl.LOCK_NB, 1, byte)
        except OSError:
            return False
        return True

    def take(self, exclusive: bool) -> bool:
        """Alone if nobody holds the store lock; else shared (unless ``exclusive``); False if neither."""
        if exclusive and not self._try(fcntl.LOCK_EX, MAINTENANCE_BYTE):
            return False
        if self._try(fcntl.LOCK_EX, 0):
            self.alone = True
            return True
        if exclusive:
            fcntl.lockf(self.fh, fcntl.LOCK_UN, 1, MAINTENANCE_BYTE)
            return False
        return self._try(fcntl.LOCK_SH, 0)

    def maintenance_running(self) -> bool:
        if not self._try(fcntl.LOCK_SH, MAINTENANCE_BYTE):
            return True
        fcntl.lockf(self.fh, fcntl.LOCK_UN, 1, MAINTENANCE_BYTE)
        return False

    def take_serial(self, key: str) -> bool:
        return self._try(fcntl.LOCK_EX, 1 + zlib.crc32(key.encode()) % SERIAL_BYTES)

    def share(self) -> None:
        """From alone to shared. One fcntl call converts the lock: there is no moment without it."""
        fcntl.lockf(self.fh, fcntl.LOCK_SH, 1, 0)
        self.alone = False
        self.describe("")

    def describe(self, text: str) -> None:
        """Who holds the store alone, for the refusal message of whoever cannot start meanwhile."""
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(text)
        self.fh.flush()


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
                if marker.exists():  # another process (a crawl shard started at the same time) created it meanwhile
                    return cls.open(root)
                raise StoreError(f"{store.root}: directory exists, is not empty and is not a provenance store")
            make_dirs(store.root)
            for sub in _SKELETON:
                (store.root / sub).mkdir(exist_ok=True)
            atomic_write_text(marker, json.dumps({"format": "provenance-store", "version": STORE_FORMAT_VERSION}))
        else:
            raise StoreError(f"{store.root}: no provenance store here (run crawl or ingest first)")
        return store

    # ----- reading -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The committed state: the log's entries applied in sequence order."""
        return self._read_log(warn_torn=True)

    def _read_log(self, warn_torn: bool, checkpoints: bool = True) -> Snapshot:
        """The log applied in order: from the newest good checkpoint on, or (checkpoints=False) all of it."""
        for _attempt in range(3):
            names, log_seq, found = self._log_entry_names()  # names: strings; a Path each costs 10 µs
            legacy = len(names) - log_seq  # format-1 entries, all before the numbered ones
            snap = Snapshot(self.root, {}, {}, [])
            with _gc_paused():
                try:
                    if checkpoints:
                        snap = self._newest_checkpoint(found, names, legacy) or snap
                except FileNotFoundError:
                    continue  # a writer deleted an old checkpoint after we listed: list again
                first = legacy + snap.checkpoint_seq if snap.checkpoint_seq else 0
                return self._replay(snap, names, first, log_seq, warn_torn)
        raise StoreError(f"{self.root / '_log'}: checkpoints keep disappearing while being read; try again")

    def _replay(self, snap: Snapshot, names: list[str], first: int, log_seq: int, warn_torn: bool) -> Snapshot:
        """``snap`` with entries ``names[first:]`` applied."""
        snap.log_seq = log_seq
        for i in range(first, len(names)):
            path = self.root / "_log" / names[i]
            try:
                entry = _parse_entry(path.read_bytes())
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                if i < len(names) - 1:
                    raise StoreError(
                        f"{path}: commit entry {i + 1} of {len(names)} is unreadable ({reason}); only the last "
                        f"entry can be cut off by a crash, so this is damage: restore the file from a backup, or "
                        f"roll the store back to before it by moving it and every later entry into "
                        f"{path.parent / TORN_DIR}/ (the next writing run then deletes the files only they "
                        f"added)") from None
                snap.torn = TornEntry(path, reason)
                if LOG_ENTRY_NAME.match(path.name):
                    snap.log_seq -= 1  # the next writer sets it aside and reuses its number
                if warn_torn:
                    _warn_once(self.root, path.name,
                               f"{path}: the last commit entry is {reason}, as a crash or power loss during a "
                               f"commit leaves it; ignoring it (what it committed stays invisible); the next "
                               f"writing run moves it to {path.parent / TORN_DIR}/")
                break
            snap.apply(entry)
        return snap

    def _newest_checkpoint(self, found: list[tuple[int, Path]], names: list[str], legacy: int) -> Snapshot | None:
        """The state in the newest checkpoint that is whole and ends with the entry of its number, or None.

        A damaged one is skipped with a warning (an older one, or the full replay, gives the same state).
        FileNotFoundError when a checkpoint listed a moment ago is gone (a writer pruned it).
        """
        log_seq = len(names) - legacy
        for seq, path in sorted(found, reverse=True):
            if seq > log_seq:
                continue  # of a history rolled back past it: never used, deleted by the next writer
            try:
                return self._load_checkpoint(path, seq, names, legacy)
            except FileNotFoundError:
                raise
            except (OSError, EOFError, ValueError, KeyError, TypeError, gzip.BadGzipFile) as exc:
                reason = (exc.strerror if isinstance(exc, OSError) else f"no {exc}" if isinstance(exc, KeyError)
                          else str(exc) or type(exc).__name__)
                _warn_once(self.root, path.name,
                           f"{path}: checkpoint unusable ({reason}); reading the log from an earlier checkpoint "
                           f"or from the start instead (slower, same result); the next writing run replaces it")
        return None

    def _load_checkpoint(self, path: Path, seq: int, names: list[str], legacy: int) -> Snapshot:
        """The state in checkpoint ``path`` (of entry ``seq``); OSError, EOFError, ValueError, KeyError or
        TypeError when it is unreadable, cut off, of another format or made after another entry ``seq``."""
        state = json.loads(gzip.decompress(path.read_bytes()))  # gzip's CRC and length: a cut-off file fails
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("seq") != seq:
            raise ValueError("not a checkpoint of this format and number")
        entry_sha = hashlib.sha256((path.parent / names[legacy + seq - 1]).read_bytes()).hexdigest()
        if state.get("entry_sha256") != entry_sha:
            raise ValueError(f"it was made after a different entry {seq} than the one in the log now")
        return Snapshot.from_state(self.root, state, seq)

    def _log_entry_names(self) -> tuple[list[str], int, list[tuple[int, Path]]]:
        """The log's entry names in commit order, the last sequence number and the checkpoints (seq, path);
        StoreError on a gap."""
        log_dir = self.root / "_log"
        for _attempt in range(3):
            legacy: list[str] = []
            numbered: list[str] = []
            checkpoints: list[tuple[int, Path]] = []
            for name in _list_dir(log_dir):
                if name.startswith(".") or not name.endswith(".json"):
                    if match := CHECKPOINT_NAME.match(name):
                        checkpoints.append((int(match.group(1)), log_dir / name))
                    continue  # temp files of a commit in progress (or of one a crash cut short)
                if len(name) == 25 and name[:20].isascii() and name[:20].isdigit():  # LOG_ENTRY_NAME, minus a regex
                    numbered.append(name)
                elif LEGACY_LOG_ENTRY_NAME.match(name):
                    legacy.append(name)
                else:
                    raise StoreError(f"{log_dir / name}: not a commit entry (those are named <20 digits>.json); "
                                     f"move it out of {log_dir}/")
            numbered.sort()  # zero-padded: the name order is the number order
            # n distinct numbers from 1 to n are exactly 1..n: no gap (the common case, checked in O(1)).
            if not numbered or (numbered[0] == f"{1:020d}.json" and numbered[-1] == f"{len(numbered):020d}.json"):
                # Format-1 entries (named by time_ns) all predate the numbered ones: they come first.
                return sorted(legacy) + numbered, len(numbered), checkpoints
            missing = next(i + 1 for i, name in enumerate(numbered) if int(name[:20]) != i + 1)
            # A listing taken while a writer links entries in may miss entry n and see n+1: look again.
            time.sleep(0.05)
        absent, after = log_dir / f"{missing:020d}.json", numbered[missing - 1]
        raise StoreError(
            f"{absent}: commit entry {missing} is missing (the log goes on with {after}); a crash never leaves "
            f"a gap, so this is damage: restore the missing entry from a backup, or roll the store back to "
            f"commit {missing - 1} by moving {after} and every later entry into {log_dir / TORN_DIR}/ (the next "
            f"writing run then deletes the files only they added)")

    def _entries_from(self, first: int) -> Iterator[tuple[int, dict]]:
        """(seq, entry) for the numbered entries from ``first`` to the end of the log, as other runs commit them.

        An entry is linked in whole, so an unreadable one is read again for a moment (on a file system
        without hard links an entry is filled after it is claimed) before it is damage.
        """
        seq = first
        while True:
            path = self.root / "_log" / f"{seq:020d}.json"
            for attempt in range(40):
                try:
                    entry = _parse_entry(path.read_bytes())
                    break
                except FileNotFoundError:
                    return
                except (OSError, ValueError) as exc:
                    if attempt == 39:
                        raise StoreError(f"{path}: commit entry {seq} is unreadable ({exc}); entries are linked "
                                         f"in whole, so this is damage: restore it from a backup") from None
                    time.sleep(0.05)
            yield seq, entry
            seq += 1

    def _write_checkpoint(self, snap: Snapshot, alone: bool = False) -> None:
        """A checkpoint of ``snap`` (whole, untorn, up to its log_seq); prunes old ones (``alone``: holding the
        store alone, also those beyond the log, see _prune_checkpoints).

        Failing to write one (a full disk) costs only speed: a warning, never an error.
        """
        seq = snap.log_seq
        log_dir = self.root / "_log"
        path = log_dir / f"{seq:020d}.checkpoint.json.gz"
        try:
            entry_sha = hashlib.sha256((log_dir / f"{seq:020d}.json").read_bytes()).hexdigest()
            body = json.dumps({"format": CHECKPOINT_FORMAT, "seq": seq, "entry_sha256": entry_sha, **snap.state()},
                              separators=(",", ":"))
            # Level 1: several times faster to write than the default (9); reading does not care.
            atomic_write_text(path, gzip.compress(body.encode(), compresslevel=1, mtime=0))
        except OSError as exc:
            log.warning(f"{path}: could not write a checkpoint ({exc.strerror or exc}); the store stays correct, "
                        f"opening it only reads more of the log")
            return
        self._prune_checkpoints(seq, alone)

    def _prune_checkpoints(self, last_seq: int, alone: bool = True) -> None:
        """Keep the KEEP_CHECKPOINTS newest checkpoints; delete older ones. ``alone`` (the store held alone, so
        ``last_seq`` is the end of the log): also those beyond ``last_seq``, made before a rollback, and keep
        the newest up to it. Without it, other writers may have checkpointed entries after ``last_seq``."""
        log_dir = self.root / "_log"
        found = sorted((int(m.group(1)), log_dir / name) for name in _list_dir(log_dir)
                       if (m := CHECKPOINT_NAME.match(name)))
        usable = [item for item in found if item[0] <= last_seq] if alone else found
        for seq, path in found:
            if (alone and seq > last_seq) or (seq, path) in usable[:-KEEP_CHECKPOINTS]:
                path.unlink(missing_ok=True)

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
    def run(self, command: str, config: dict | None = None, run_id: str | None = None,
            removed_grace_s: float = REMOVED_FILE_GRACE_S, exclusive: bool = False,
            serial: str | None = None) -> Iterator[Run]:
        """Take the write lock and open a run record; mark it failed if the body raises.

        Writing runs share the store: their commits race for log numbers and each checks what it missed
        (``Run.commit``). ``exclusive`` (maintenance) holds the store alone; ``serial``: one run with this
        key at a time ("tag": two tag runs would do the same work twice; "crawl <id>": one resume journal).
        ``removed_grace_s``: how long files removed from the live set are kept for readers of older
        snapshots before a recovery deletes them (``provenance store vacuum --grace``).
        """
        run_id = run_id or new_run_id(command)
        with self._lock(command, run_id, exclusive=exclusive, serial=serial) as lock:
            if lock.alone:  # nobody else writes: repair what a crash left, then let other writers in
                snapshot, deleted = self._recover(run_id, removed_grace_s)
                if not exclusive:
                    lock.share()
            else:
                snapshot, deleted = self._join(), []
            run = Run(self, run_id, command, config or {}, log_seq=snapshot.log_seq, snapshot=snapshot)
            run.deleted = deleted
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
    def _lock(self, command: str, run_id: str, exclusive: bool = True, serial: str | None = None) -> Iterator[_Lock]:
        """The store lock: alone (exclusive) if nobody else holds it, else shared unless ``exclusive``.

        POSIX record locks (lockf), not flock or OFD locks: they belong to this process only, so detector
        worker processes forked during a run never inherit the lock and keep it after we die. The same
        process taking it twice is caught by _HELD, since POSIX locks do not conflict within one process
        (and closing any descriptor of the file would release both).
        """
        if self.root in _HELD:
            raise StoreLocked(f"{self.root}: store is locked by this process ({_HELD[self.root]})")
        fh = open(self.root / ".lock", "a+")
        lock = _Lock(fh)
        try:
            waited_since = time.monotonic()
            while not lock.take(exclusive):
                # Not maintenance: a writer that found the store free repairs it alone for a moment. Wait.
                if not exclusive and not lock.maintenance_running() and \
                        time.monotonic() - waited_since < RECOVERY_WAIT_S:
                    time.sleep(0.05)
                    continue
                fh.seek(0)
                holder = fh.read().strip() or self._writers()  # the text names a run holding the store alone
                raise StoreLocked(f"{self.root}: store is locked by {holder}: another run is writing to it; try "
                                  f"again when it finishes") from None
            if serial and not lock.take_serial(serial):
                raise StoreLocked(f"{self.root}: store is locked by {self._writers(command)}: another {serial} run "
                                  f"is writing to it; try again when it finishes") from None
            _HELD[self.root] = command
            if lock.alone:
                lock.describe(f"pid {os.getpid()} on {socket.gethostname()} ({command}, since "
                              f"{utcnow():%Y-%m-%dT%H:%M:%SZ}, run {run_id})")
            yield lock
        finally:
            if _HELD.get(self.root) == command:
                if lock.alone:
                    lock.describe("")
                del _HELD[self.root]
            fh.close()  # closing releases the locks

    def _writers(self, command: str | None = None) -> str:
        """The writing runs (of ``command``) whose records say they run, for a refusal message."""
        host = socket.gethostname()
        running = []
        for record in sorted(self.runs(), key=lambda r: r.get("started_at", "")):
            if record.get("status") != "running" or (command and record.get("command") != command):
                continue
            if record.get("host") == host and not _alive(record.get("pid")):
                continue  # died; the next run that has the store alone closes its record
            since = record.get("started_at", "")[:19] + "Z"
            running.append(f"pid {record.get('pid')} on {record.get('host', '?')} ({record.get('command')}, since "
                           f"{since}, run {record.get('run_id')})")
        if not running:
            return "another process"
        return running[0] + (f" and {len(running) - 1} other run(s)" if len(running) > 1 else "")

    def _join(self) -> Snapshot:
        """The snapshot a run that shares the store writes on. Repairs are for a run alone: a torn last
        entry (which only a crash makes, before any of the running writers started) stops it."""
        snap = self._read_log(warn_torn=False)
        if snap.torn is not None:
            raise StoreLocked(f"{snap.torn.path}: the last commit entry is {snap.torn.reason} (a crash cut it "
                              f"short); only a run that has the store to itself sets it aside: try again when "
                              f"{self._writers()} finishes")
        (self.root / "_tmp").mkdir(exist_ok=True)
        return snap

    def _recover(self, run_id: str, removed_grace_s: float = REMOVED_FILE_GRACE_S) -> tuple[Snapshot, list]:
        """With the store held alone (no other writer can be staging or committing): repair what a crash
        leaves; return the snapshot to write on and the data files deleted, as (path, bytes).

        Sets an empty or cut-off last log entry aside, drops staging leftovers,
        orphans and long-removed files, closes dead runs' records, and marks
        the store with the current format.
        """
        self._mark_current_format()
        tmp = self.root / "_tmp"
        tmp.mkdir(exist_ok=True)
        for leftover in tmp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.is_dir() and not leftover.is_symlink():  # a detector's scratch directory
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        log_dir = self.root / "_log"
        make_dirs(log_dir)
        for leftover in log_dir.glob(".*.tmp"):  # a commit entry written but never renamed in
            leftover.unlink(missing_ok=True)
        snap = self._read_log(warn_torn=False)
        if snap.torn is not None:
            self._set_aside(snap.torn, run_id)
            snap.torn = None
        if snap.log_seq - snap.checkpoint_seq >= CHECKPOINT_EVERY:  # e.g. a store written before checkpoints
            self._write_checkpoint(snap, alone=True)
        else:
            self._prune_checkpoints(snap.log_seq)  # drops checkpoints a rollback left beyond the log
        now = time.time()
        deleted = []
        for kind in DATA_KINDS:
            base = self.root / kind
            if not base.exists():
                continue
            for path in base.rglob("*.parquet"):
                rel = path.relative_to(self.root).as_posix()
                if rel in snap.files:
                    continue
                removed_at = snap.removed.get(rel)
                # Not in any commit (a run died between writing the file and committing it), or removed long ago.
                if removed_at is None or now - removed_at > removed_grace_s:
                    with contextlib.suppress(FileNotFoundError):
                        size = path.stat().st_size
                        path.unlink()
                        deleted.append((rel, size))
        for record in self.runs():
            if record.get("status") == "running":
                record["status"] = "interrupted"
                record["finished_at"] = record.get("updated_at")
                record["error"] = "the process ended before the run finished; committed work is kept"
                atomic_write_text(self.root / "runs" / f"{record['run_id']}.json", json.dumps(record, indent=2))
        return snap, deleted

    def _set_aside(self, torn: TornEntry, run_id: str) -> None:
        """Move an empty or cut-off last entry out of the log, so that later commits can follow it."""
        torn_dir = torn.path.parent / TORN_DIR
        make_dirs(torn_dir)
        dest = torn_dir / f"{torn.path.stem}.set-aside-by-{run_id}.json"
        os.replace(torn.path, dest)
        fsync_dir(torn_dir)
        fsync_dir(torn.path.parent)
        log.warning(f"{torn.path}: the last commit entry was {torn.reason}, cut short by a crash or power loss; "
                    f"moved it to {dest}; what it committed is lost (its files are deleted as orphans): run the "
                    f"interrupted command again to redo it")

    def _mark_current_format(self) -> None:
        marker = self.root / "store.json"
        info = json.loads(marker.read_text())
        if info.get("version", 0) < STORE_FORMAT_VERSION:
            atomic_write_text(marker, json.dumps({**info, "version": STORE_FORMAT_VERSION}))


class Run:
    """One writing run (crawl, ingest, tag, ...), holding the lock. Files become visible on commit()."""

    def __init__(self, store: Store, run_id: str, command: str, config: dict, log_seq: int = 0,
                 snapshot: Snapshot | None = None):
        self.store = store
        self.run_id = run_id
        self.command = command
        self.config = config
        self.status = "running"
        self.stats: dict = {}
        self.started_at = utcnow()
        self._seq = 0
        self._commits = 0
        self.deleted: list[tuple[str, int]] = []  # data files the recovery at the run's start deleted
        # The last commit entry this run has read or written: its next commit claims log_seq + 1.
        self._log_seq = log_seq
        # The committed state up to _log_seq, kept up to date commit by commit (with the entries of other
        # writers this run read when it lost a race), for the checkpoints: writing one then costs no reading.
        self._snapshot = snapshot
        # doc_ids a DocumentSink skips as stored; other writers' documents are added as this run reads them.
        self.known_doc_ids = None  # a set (documents.DocIdSet) of doc_ids, or None
        self.skipped_concurrent = 0  # document rows left out of commits because another run stored them first
        self._retries = 0  # commits that lost the race for their number and claimed a later one

    @property
    def record_path(self) -> Path:
        return self.store.root / "runs" / f"{self.run_id}.json"

    def _record(self, **extra) -> dict:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": self.status,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at.isoformat(),
            "updated_at": utcnow().isoformat(),
            "commits": self._commits,
            "commit_retries": self._retries,
            "config": self.config,
            "stats": self.stats,
            **extra,
        }

    def start(self) -> None:
        make_dirs(self.store.root / "runs")
        atomic_write_text(self.record_path, json.dumps(self._record(), indent=2, default=str))

    def finish(self, status: str, error: str | None = None) -> None:
        self.status = status
        extra = {"finished_at": utcnow().isoformat()}
        if error:
            extra["error"] = error
        atomic_write_text(self.record_path, json.dumps(self._record(**extra), indent=2, default=str))

    def write(self, kind: str, table: pa.Table | pa.RecordBatch, subdir: str, meta: dict | None = None,
              row_group_size: int = 1024) -> FileEntry:
        """Check ``table`` against its schema and stage it as a Parquet file under ``kind/subdir``.

        The file is moved to its final path but is invisible until ``commit()`` names it.
        """
        if kind in DETECTOR_DEFINED_KINDS:
            conformed = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
            schema_metadata = {b"provenance.schema": kind.encode()}
        else:
            conformed = schemas.conform(table, kind)
            schema_metadata = schemas.load(kind).metadata()
        conformed = conformed.replace_schema_metadata({
            **schema_metadata,
            b"provenance.run_id": self.run_id.encode(),
        })
        sort_key = SORTED_BY.get(kind)
        if sort_key is not None:
            conformed = conformed.sort_by(sort_key)  # byte order, as DuckDB's ORDER BY
        self._seq += 1
        rel = f"{kind}/{subdir.strip('/')}/{self.run_id}-{self._seq:05d}.parquet" if subdir else \
            f"{kind}/{self.run_id}-{self._seq:05d}.parquet"
        final = self.store.root / rel
        tmp = self.store.root / "_tmp" / f"{self.run_id}-{self._seq:05d}.parquet"
        # State rows are mostly hashes and ids, unique values: dictionary encoding only makes them bigger and
        # slower to write (a third of a tag run's commit time for near_duplicate's signatures).
        pq.write_table(conformed, tmp, compression="zstd", row_group_size=row_group_size,
                       use_dictionary=kind not in DETECTOR_DEFINED_KINDS,
                       sorting_columns=None if sort_key is None else
                       pq.SortingColumn.from_ordering(conformed.schema, [(sort_key, "ascending")]))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        make_dirs(final.parent)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return FileEntry(rel, kind, conformed.num_rows, final.stat().st_size, file_sha256(final), meta or {})

    def commit(self, add: list[FileEntry] = (), remove: list[str] = (), coverage: list[dict] = (),
               drop_coverage: list[dict] = ()) -> list[FileEntry]:
        """Make ``add`` visible and ``remove`` invisible, atomically, in one log entry; returns what it added.

        ``coverage`` records what a detector has processed (see runner.py);
        ``drop_coverage`` entries ({"detector", "kind"?, "keep_tag_key"?,
        "keep_state_key"?}, see ``_drops``) forget a detector's earlier
        coverage, applied before this entry's own coverage.

        Other runs may commit meanwhile. The entry claims the number after the last one this run has seen;
        if another run took it, this run reads the entries it missed (``_rebase``: documents they stored are
        left out of this commit, a real conflict raises StoreConflict) and claims the number after them.
        """
        add = list(add)
        while add or remove or coverage or drop_coverage:
            seq = self._log_seq + 1
            path = self.store.root / "_log" / f"{seq:020d}.json"
            now = utcnow()
            text = json.dumps({
                "run_id": self.run_id,
                "command": self.command,
                "committed_at": now.isoformat(),
                "committed_at_unix": now.timestamp(),
                "add": [f.to_json() for f in add],
                "remove": list(remove),
                "coverage": list(coverage),
                "drop_coverage": list(drop_coverage),
            })
            try:
                _create_text(path, text)
            except FileExistsError:  # another run committed first
                self._retries += 1
                add = self._rebase(add, remove, coverage, drop_coverage)
                continue
            self._log_seq = seq
            self._commits += 1
            if self._snapshot is not None and self._snapshot.log_seq == seq - 1:
                self._snapshot.apply(json.loads(text))  # as readers will see it (a copy: callers may reuse theirs)
                self._snapshot.log_seq = seq
            if seq % CHECKPOINT_EVERY == 0:
                snap = self._snapshot if self._snapshot is not None and self._snapshot.log_seq == seq else \
                    self.store._read_log(warn_torn=False)
                if snap.log_seq == seq and snap.torn is None:  # (another writer may be past it already)
                    self.store._write_checkpoint(snap)
            atomic_write_text(self.record_path, json.dumps(self._record(), indent=2, default=str))
            return add
        return []

    def _rebase(self, add: list[FileEntry], remove, coverage, drop_coverage) -> list[FileEntry]:
        """Read the entries other runs committed after this run's last one; return ``add`` without the
        documents they stored. StoreConflict if one removed a file this commit removes or names, or recorded
        coverage of a detector this commit records coverage of (the same work done twice)."""
        root = self.store.root
        needs = set(remove) | {f.meta["doc_file"] for f in add if "doc_file" in f.meta}
        for record in coverage:
            needs.update([record["doc_file"]] if "doc_file" in record else [])
            needs.update(record.get("doc_files", []) + record.get("state_files", []))
        detectors = {c["detector"] for c in [*coverage, *drop_coverage]}
        theirs: set[str] = set()
        for seq, entry in self.store._entries_from(self._log_seq + 1):
            gone = needs.intersection(entry.get("remove", []))
            both = detectors & {c["detector"] for c in entry.get("coverage", []) + entry.get("drop_coverage", [])}
            if gone or both:
                what = f"removed {sorted(gone)[0]}" if gone else f"recorded coverage of {sorted(both)[0]}"
                raise StoreConflict(
                    f"{root}: run {entry.get('run_id')} ({entry.get('command')}) {what} while this run was "
                    f"working (commit entry {seq}); nothing of this run's last commit was made visible: run the "
                    f"command again, it resumes from what is committed")
            for d in entry.get("add", []):
                if d["kind"] == "documents":
                    theirs.update(pq.read_table(root / d["path"], columns=["doc_id"]).column("doc_id").to_pylist())
            if self._snapshot is not None and self._snapshot.log_seq == seq - 1:
                self._snapshot.apply(entry)
                self._snapshot.log_seq = seq
            self._log_seq = seq
        if not theirs:
            return add
        if self.known_doc_ids is not None:
            self.known_doc_ids.update(theirs)  # the sink skips them from now on
        kept = []
        for entry in add:
            if entry.kind == "documents":
                entry = self._without(entry, theirs)
            if entry is not None:
                kept.append(entry)
        return kept

    def _without(self, entry: FileEntry, doc_ids: set[str]) -> FileEntry | None:
        """Staged documents file ``entry`` without rows of ``doc_ids`` (another run stored them): itself if
        it has none, a new staged file if it has some, None if it has nothing else."""
        import pyarrow.compute as pc

        path = self.store.root / entry.path
        table = pq.read_table(path)
        keep = pc.invert(pc.is_in(table.column("doc_id"), value_set=pa.array(list(doc_ids), pa.string())))
        left = table.filter(keep)
        if left.num_rows == table.num_rows:
            return entry
        self.skipped_concurrent += table.num_rows - left.num_rows
        replaced = None
        if left.num_rows:
            subdir = entry.path.split("/", 1)[1].rsplit("/", 1)[0] if entry.path.count("/") > 1 else ""
            replaced = self.write(entry.kind, left, subdir, meta=entry.meta)
        path.unlink()  # staged by this run and never committed: nobody else names it
        fsync_dir(path.parent)
        return replaced
