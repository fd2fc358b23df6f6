"""A store's keys, sorted on disk, so a run need not read every file to know what the store holds.

Two indexes, one machinery (``IndexKind``):

- **doc_ids** (``DOC_IDS``). Every ingest and crawl skips documents the store already holds, so it starts by
  learning every stored doc_id. Reading them from the document files costs time and memory in proportion to the
  corpus at every run's start (a 3M-document store: 4.6 CPU s and 16 bytes a document, twice that while sorting).
- **captures** (``CAPTURES``). An import that meets a stored document records its capture at a new time
  (``KnownCaptures``), so it must know every (doc_id, fetched_at) the store holds: the documents' and the
  recaptured fetches'. Held in memory that was 24 bytes a capture, read from every document and fetch file.

An index keeps the keys, as written by an earlier run, in ``_index/<name>/``: fixed-width byte keys, sorted, in
a ``.npy`` file the run memory-maps, with a bitmap of their leading bits beside it (most new keys are answered
by the bitmap alone). A run reads only the files the index does not cover, those committed since it was
written; the index's pages are the kernel's page cache, shared by every process reading it and evictable, not
the run's own memory. When the rows read from uncovered files reach an eighth of the index's keys (and at least
``MIN_KEYS``), the run writes a new index that covers them too, by a merge in bounded chunks, so the work of
keeping it is linear.

An index is derived data, never the truth. It names the files it was built from, and a run uses it only when
each of them is live or was removed by a commit the snapshot knows (documents and fetches are only ever added,
and compaction keeps every row it moves), so its keys are stored keys. Anything else (a store restored from an
older copy, a hand-edited log) makes the run ignore it and read the files, as without one. Its files are written
under temporary names and renamed in, the metadata (``<log seq>.json``) last: a kill leaves an index whole or not
there; older indexes are deleted once a newer one is in place.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from provenance.arrays import unique_sorted
from provenance.store import Snapshot, atomic_write_text, make_dirs

log = logging.getLogger(__name__)

FORMAT = 1
MIN_KEYS = 100_000  # no index is written for fewer uncovered rows than this (small stores read their files)
REWRITE_SHARE = 8  # a new index once the uncovered rows are 1/REWRITE_SHARE of the index's keys
STEP_ROWS = 2_000_000  # a run that has read this many uncovered rows (and a rewrite's share) writes an index
                       # before it reads on, so it never holds all of a large store's keys at once
MAX_OTHER = 10_000  # values with no fixed-width key (a doc_id not of 32 hex digits), kept in the metadata;
                    # a store with more gets no index
MERGE_CHUNK = 1 << 20  # keys of the old index per step of a merge (16 MB)
STALE_TEMP_S = 3600.0  # a temporary file this old belongs to a killed writer


@dataclass(frozen=True)
class IndexKind:
    """What one index holds: where it lives, how wide its keys are, which kinds of store file it is built from,
    and how its problems name them."""

    name: str
    directory: Path
    width: int
    file_kinds: tuple[str, ...]
    keys_noun: str
    files_noun: str


# The 16 bytes of each doc_id of 32 hex digits (all that ``make_doc_id`` makes), from the document files.
DOC_IDS = IndexKind("doc_id", Path("_index") / "doc_ids", 16, ("documents",), "doc_ids", "document files")
# A doc_id's 16 bytes, then 8 of microseconds since the epoch (big-endian): every capture of a document, from the
# document files and the ``recaptured`` rows of the fetch files (``documents.KnownCaptures``).
CAPTURES = IndexKind("capture", Path("_index") / "captures", 24, ("documents", "fetches"), "captures",
                     "document and fetch files")
INDEX_DIR = DOC_IDS.directory


def bitmap_bits(n_keys: int) -> int:
    """How many leading bits of a key the bitmap over ``n_keys`` keys indexes: about 8 bits a key."""
    return max(16, min(30, int(n_keys * 8).bit_length()))


def mark_prefixes(bits: np.ndarray, keys: np.ndarray, width: int, shift: int) -> None:
    """Set, in the uint8 bitmap ``bits``, the bit of each key's first 32 bits shifted right by ``shift``."""
    if len(keys) == 0:
        return
    top = np.ascontiguousarray(keys).view(np.uint8).reshape(-1, width)[:, :4]
    top = np.ascontiguousarray(top).view(">u4").reshape(-1).astype(np.uint32) >> np.uint32(shift)
    np.bitwise_or.at(bits, top >> 3, np.left_shift(1, top & 7).astype(np.uint8))


class FrozenKeys:
    """Sorted fixed-width keys that never change, with their prefix bitmap: membership without a copy of them.

    ``keys`` is a sorted array of dtype ``S<width>`` (memory-mapped, from an index); ``bits`` the bitmap
    ``mark_prefixes`` made of them at ``shift``.
    """

    def __init__(self, keys: np.ndarray, bits: np.ndarray, shift: int):
        self.keys, self.shift = keys, shift
        self.width = keys.dtype.itemsize
        self._bits = memoryview(bits)  # indexing a memoryview gives a Python int, faster than a numpy scalar

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: bytes) -> bool:
        h = int.from_bytes(key[:4], "big") >> self.shift
        if not (self._bits[h >> 3] >> (h & 7)) & 1:
            return False
        key = key.rstrip(b"\0")  # numpy gives S values without their trailing zero bytes
        i = int(self.keys.searchsorted(key))
        return i < len(self.keys) and self.keys[i] == key

    def known(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` (dtype ``S<width>``) are here, as a boolean mask."""
        if len(self.keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), bool)
        where = self.keys.searchsorted(keys)
        return self.keys[np.minimum(where, len(self.keys) - 1)] == keys

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.keys), MERGE_CHUNK):
            for key in self.keys[start:start + MERGE_CHUNK].tolist():
                yield key.ljust(self.width, b"\0")


@dataclass
class KeyIndex:
    """An index as read: its keys, the files it covers, and its values with no key (as JSON gave them back)."""

    keys: FrozenKeys
    files: frozenset[str]
    other: list
    log_seq: int
    name: str  # its files' common stem: ``<log seq>-<number of keys>``


def covers_live_files(files: list[str], snapshot: Snapshot, file_kinds: tuple[str, ...]) -> bool:
    """Every file an index covers is a live file of its kinds, or one a commit the snapshot knows removed: what
    makes a derived index's rows rows of the store (files of these kinds are only added; compaction keeps every
    row it moves)."""
    return all((f in snapshot.files and snapshot.files[f].kind in file_kinds) or f in snapshot.removed
               for f in files)


def open_index(snapshot: Snapshot, kind: IndexKind = DOC_IDS) -> KeyIndex | None:
    """The newest index of ``kind`` this snapshot can use, memory-mapped; None when there is none."""
    directory = snapshot.root / kind.directory
    for _attempt in range(3):  # a writer may replace the newest index while we read it: look again
        try:
            metas = sorted((p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith(".")),
                           reverse=True)
        except FileNotFoundError:
            return None
        replaced = False
        for meta_path in metas:
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("format") != FORMAT or not covers_live_files(meta["files"], snapshot, kind.file_kinds):
                    continue
                keys = np.load(directory / meta["keys"], mmap_mode="r")
                bits = np.load(directory / meta["bits"], mmap_mode="r")
                if keys.dtype != np.dtype(f"S{kind.width}") or keys.ndim != 1 or len(keys) != meta["n_keys"] \
                        or bits.dtype != np.uint8 or len(bits) != 1 << (meta["index_bits"] - 3):
                    raise ValueError("keys or bitmap not as the metadata says")
                return KeyIndex(FrozenKeys(keys, bits, 32 - meta["index_bits"]), frozenset(meta["files"]),
                                  list(meta["other"]), int(meta["log_seq"]), meta_path.name.split(".")[0])
            except FileNotFoundError:
                replaced = True
                break
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning(f"{meta_path}: {kind.name} index unreadable ({exc}); reading the {kind.files_noun} instead")
        if not replaced:
            return None
    return None


def should_rewrite(index: KeyIndex | None, uncovered_rows: int) -> bool:
    """Whether a run that read ``uncovered_rows`` rows of files beside ``index`` writes a new index."""
    have = len(index.keys) if index is not None else 0
    return uncovered_rows >= max(MIN_KEYS, have // REWRITE_SHARE)


def read_uncovered(snapshot: Snapshot, kind: IndexKind, read_file) -> tuple[KeyIndex | None, np.ndarray, list]:
    """What a run knows of the store's keys of ``kind``: (the index it uses, the keys of the files that index does
    not cover as sorted distinct ``S<width>`` keys not in it, their values with no key), reading only those files.

    ``read_file(path, file_kind)`` gives a file's keys as uint8 rows of ``kind.width`` bytes and its values with
    no key as JSON values. Whenever the rows read reach ``STEP_ROWS`` and ``should_rewrite``'s share of the
    index, a new index that covers the files read so far is written and used from then on, so even a store with
    no index yet (one grown by an older version, or a capture index's first build) is read holding at most
    that many keys at a time, not all of them; the rows left at the end are written in when ``should_rewrite``
    says so. A failed write (a full disk) is logged and the run goes on with what it read, in memory.
    """
    index = open_index(snapshot, kind)
    rows: list[np.ndarray] = []
    other: list = []
    read_files: list[str] = []
    n_read, writable = 0, True
    for file_kind in kind.file_kinds:
        for entry in snapshot.entries(file_kind):
            if index is not None and entry.path in index.files:
                continue
            file_rows, file_other = read_file(snapshot.root / entry.path, file_kind)
            rows.append(file_rows)
            other.extend(file_other)
            read_files.append(entry.path)
            n_read += entry.rows  # counted as read, not as new: after a compaction the index's keys come back
            if writable and n_read >= STEP_ROWS and should_rewrite(index, n_read):
                fresh = _absorb(snapshot, kind, index, rows, other, read_files)
                if fresh is None:
                    writable = False
                else:
                    index, rows, other, read_files, n_read = fresh, [], [], [], 0
    if writable and n_read and should_rewrite(index, n_read):
        fresh = _absorb(snapshot, kind, index, rows, other, read_files)
        if fresh is not None:
            index, rows, other = fresh, [], []
    keys = _new_keys(index, rows, kind.width)
    return index, keys, _distinct_json(other)


def _new_keys(index: KeyIndex | None, rows: list[np.ndarray], width: int) -> np.ndarray:
    if not rows:
        return np.zeros(0, f"S{width}")
    keys = unique_sorted(np.ascontiguousarray(np.concatenate(rows), dtype=np.uint8).view(f"S{width}").reshape(-1))
    return keys[~index.keys.known(keys)] if index is not None else keys


def _distinct_json(values: list) -> list:
    return [json.loads(v) for v in sorted({json.dumps(v) for v in values})]


def _absorb(snapshot: Snapshot, kind: IndexKind, index: KeyIndex | None, rows: list[np.ndarray], other: list,
            read_files: list[str]) -> KeyIndex | None:
    """Write an index of ``index`` and the keys read from ``read_files``, and open it; None when it could not be
    written or is not the one opened (another writer's newer index: the caller keeps what it read)."""
    covered = set(read_files) | (index.files if index is not None else set())
    merged_other = _distinct_json((index.other if index is not None else []) + other)
    try:
        name = write_index(snapshot, index, _new_keys(index, rows, kind.width), merged_other, kind, covered)
    except OSError as exc:  # e.g. a full disk
        log.warning(f"{snapshot.root}: could not write the {kind.name} index ({exc}); runs read the "
                    f"{kind.files_noun} until one can")
        return None
    if name is None:
        return None
    fresh = open_index(snapshot, kind)
    return fresh if fresh is not None and fresh.name == name else None


def _temp(directory: Path, name: str) -> Path:
    return directory / f".{name}.{os.getpid()}.tmp"


def write_index(snapshot: Snapshot, old: KeyIndex | None, new_keys: np.ndarray, other: list,
                kind: IndexKind = DOC_IDS, covered: set[str] | None = None) -> str | None:
    """Write an index of ``kind`` of ``old``'s keys and ``new_keys`` (sorted, distinct, none of them in ``old``;
    dtype ``S<kind.width>``) covering the live files of its kinds in ``snapshot`` (those in ``covered``, when
    given), then delete older indexes; its name, or None when nothing was written.

    The old keys are merged in chunks of ``MERGE_CHUNK`` into the new memory-mapped file, so this holds at most
    a chunk of them besides ``new_keys``. ``other`` (values with no key, as JSON values, sorted) goes into the
    metadata; nothing is written when it is longer than ``MAX_OTHER``.
    """
    if len(other) > MAX_OTHER:
        return None
    directory = snapshot.root / kind.directory
    make_dirs(directory)
    drop_stale_temps(directory)
    old_keys = old.keys.keys if old is not None else np.zeros(0, f"S{kind.width}")
    n = len(old_keys) + len(new_keys)
    # A run that reads a large store without an index writes several, one per step: the number of keys tells
    # them apart and orders them after the log seq.
    name = f"{snapshot.log_seq:020d}-{n:012d}"
    index_bits = bitmap_bits(n)
    shift = 32 - index_bits
    keys_tmp, bits_tmp = _temp(directory, f"{name}.keys.npy"), _temp(directory, f"{name}.bits.npy")
    try:
        out = np.lib.format.open_memmap(keys_tmp, mode="w+", dtype=f"S{kind.width}", shape=(n,))
        bits = np.zeros(1 << (index_bits - 3), np.uint8)
        # Where each new key goes among the old ones; then the old keys chunk by chunk, each with its new ones.
        where = old_keys.searchsorted(new_keys) if len(old_keys) else np.zeros(len(new_keys), np.int64)
        written, taken = 0, 0
        for start in range(0, max(len(old_keys), 1), MERGE_CHUNK):
            end = min(start + MERGE_CHUNK, len(old_keys))
            last = end >= len(old_keys)
            upto = len(new_keys) if last else int(np.searchsorted(where, end, side="left"))
            chunk = np.insert(np.asarray(old_keys[start:end]), where[taken:upto] - start, new_keys[taken:upto])
            out[written:written + len(chunk)] = chunk
            mark_prefixes(bits, chunk, kind.width, shift)
            written, taken = written + len(chunk), upto
        if written != n:
            raise AssertionError(f"merged {written} keys of {n}")
        out.flush()
        del out
        with open(bits_tmp, "wb") as fh:
            np.save(fh, bits)
            fh.flush()
            os.fsync(fh.fileno())
        with open(keys_tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(keys_tmp, directory / f"{name}.keys.npy")
        os.replace(bits_tmp, directory / f"{name}.bits.npy")
    except BaseException:
        keys_tmp.unlink(missing_ok=True)
        bits_tmp.unlink(missing_ok=True)
        raise
    files = sorted(f.path for f in snapshot.files.values()
                   if f.kind in kind.file_kinds and (covered is None or f.path in covered))
    meta = {"format": FORMAT, "log_seq": snapshot.log_seq, "n_keys": n, "index_bits": index_bits,
            "keys": f"{name}.keys.npy", "bits": f"{name}.bits.npy", "other": other, "files": files,
            "written_at_unix": time.time()}
    atomic_write_text(directory / f"{name}.json", json.dumps(meta))
    drop_older(directory, name)
    return name


def drop_older(directory: Path, name: str, keep: frozenset[str] = frozenset()) -> None:
    """Delete the indexes older than ``name``: their metadata first, so none is ever read without its data files,
    then every data file older than ``name`` (also those of a writer killed before its metadata) but those named
    in ``keep`` (files the new index still uses)."""
    older = sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.name.split(".")[0] < name)
    for path in sorted(older, key=lambda p: p.suffix != ".json"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def drop_stale_temps(directory: Path) -> None:
    now = time.time()
    for tmp in directory.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except FileNotFoundError:
            pass


def verify(snapshot: Snapshot, read_keys, kind: IndexKind = DOC_IDS) -> list[str]:
    """Problems of the index of ``kind`` the snapshot would use (one line each): keys out of order or repeated,
    keys the store does not hold, keys of files it covers that it lacks. ``read_keys(path, file_kind)`` gives a
    file's keys as sorted distinct keys (dtype ``S<kind.width>``). Reads every file of the index's kinds (as
    ``store check`` reads every file)."""
    index = open_index(snapshot, kind)
    if index is None:
        return []
    where = snapshot.root / kind.directory / f"{index.name}.json"
    fix = f"delete {snapshot.root / kind.directory} (the next run that needs it writes a new one)"
    keys = index.keys.keys
    problems = []
    for start in range(0, max(len(keys) - 1, 0), MERGE_CHUNK):
        chunk = np.asarray(keys[start:start + MERGE_CHUNK + 1])
        if not (chunk[1:] > chunk[:-1]).all():
            problems.append(f"{where}: its {kind.keys_noun} are not sorted and distinct; {fix}")
            break
    held = np.zeros(len(keys), bool)
    lacking = 0
    for file_kind in kind.file_kinds:
        for entry in snapshot.entries(file_kind):
            stored = read_keys(snapshot.root / entry.path, file_kind)
            known = index.keys.known(stored)
            if entry.path in index.files:
                lacking += int((~known).sum())
            if len(keys):
                found = keys.searchsorted(stored[known])
                held[found] = True
    if lacking:
        problems.append(f"{where}: lacks {lacking} {kind.keys_noun} of the {kind.files_noun} it covers; {fix}")
    if not held.all():
        problems.append(f"{where}: holds {int((~held).sum())} {kind.keys_noun} the store does not; {fix}")
    return problems
