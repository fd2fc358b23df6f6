"""Store maintenance: ``provenance store check | compact | vacuum``. Each holds the store alone (the write
lock exclusively: no writing run may be staging files or committing meanwhile).

check    replays the whole log (no checkpoint), compares every checkpoint with that replay, and verifies that
         every live file exists with the size and sha256 its commit recorded; lists orphans (files no entry
         names). Read-only: it takes the lock so that a writer's staged files are not reported as orphans,
         and does none of a writer's repairs.
compact  merges small live files of one kind, directory and meta into files of about COMPACT_ROWS rows or
         COMPACT_BYTES bytes, each group in one commit that adds the merged file and removes the small ones;
         document files are written in doc_id order (``store.SORTED_BY``), and one written unsorted by an
         earlier version is rewritten sorted even alone.
         Kinds: tags, errors, fetches; documents only when nothing names them (see ``_named_doc_files``);
         state and references never:
           * coverage records name document files by path and *row position* (``doc_file`` + ``ranges``),
             corpus records list ``doc_files`` and ``state_files``: a merged file would be new to every
             detector (a rerun of all of them) and the rows of the old files would be covered under names
             that no longer exist. Rewriting coverage in the same commit is possible but is a second copy of
             the runner's bookkeeping; not done.
           * references are versioned sets replaced whole (``provenance reference add``).
         A kill leaves staged files no commit names (deleted by the next writer); a rerun continues.
vacuum   deletes files no live entry names: orphans at once, removed files once ``grace_s`` has passed
         since their removal (readers of an older snapshot may still read them until then).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from provenance import doc_index, documents
from provenance import store as store_mod
from provenance.arrays import unique_sorted
from provenance.crawlers import known_index
from provenance.store import DATA_KINDS, FileEntry, Snapshot, Store, new_run_id

COMPACT_ROWS = 100_000
COMPACT_BYTES = 128 * 1024 * 1024
COMPACT_KINDS = ("tags", "errors", "fetches", "documents")


# ----- check ---------------------------------------------------------------------------------------
def check_store(store: Store) -> tuple[list[str], dict]:
    """(one line per problem, counts). Holds the lock, changes nothing."""
    run_id = new_run_id("store-check")
    with store._lock("store check", run_id):
        problems: list[str] = []
        names, log_seq, checkpoints = store._log_entry_names()
        legacy = len(names) - log_seq
        snap = store._replay(Snapshot(store.root, {}, {}, []), names, 0, log_seq, warn_torn=False)
        if snap.torn is not None:
            problems.append(f"{snap.torn.path}: the last commit entry is {snap.torn.reason} (a crash during a "
                            f"commit); the next writing run sets it aside")
        for seq, path in sorted(checkpoints):
            if seq > snap.log_seq:
                problems.append(f"{path}: checkpoint beyond the last entry ({snap.log_seq}); the next writing run "
                                f"deletes it")
                continue
            try:
                from_ckpt = store._load_checkpoint(path, seq, names, legacy)
            except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path}: checkpoint unusable ({exc}); readers fall back to an older one; the next "
                                f"writing run writes a new one")
                continue
            upto = store._replay(Snapshot(store.root, {}, {}, []), names[:legacy + seq], 0, seq, warn_torn=False)
            if (from_ckpt.files, from_ckpt.removed, from_ckpt.coverage) != (upto.files, upto.removed, upto.coverage):
                problems.append(f"{path}: checkpoint differs from the log's entries 1..{seq}; delete it (readers "
                                f"then use an older one or the whole log)")
        verified = 0
        for entry in sorted(snap.files.values(), key=lambda f: f.path):
            path = store.root / entry.path
            if not path.is_file():
                problems.append(f"{entry.path}: missing (live {entry.kind} file, {entry.rows} rows); restore it "
                                f"from a backup")
                continue
            size = path.stat().st_size
            if size != entry.bytes:
                problems.append(f"{entry.path}: {size} bytes, the commit recorded {entry.bytes}")
            elif store_mod.file_sha256(path) != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from the one its commit recorded")
            else:
                verified += 1
        removed_on_disk = 0
        for rel in _data_files(store.root):
            if rel in snap.files:
                continue
            if rel in snap.removed:
                removed_on_disk += 1  # kept for readers of older snapshots; vacuum deletes it
            else:
                problems.append(f"{rel}: orphan (no commit names it: a run died before committing it); "
                                f"`provenance store vacuum` deletes it")
        problems.extend(doc_index.verify(snap, _doc_id_keys))
        problems.extend(doc_index.verify(snap, _capture_keys, doc_index.CAPTURES))
        problems.extend(known_index.verify(snap))
        counts = {"entries": snap.log_seq, "checkpoints": len(checkpoints), "live_files": len(snap.files),
                  "verified": verified, "removed_on_disk": removed_on_disk}
        return problems, counts


def _doc_id_keys(path: Path, _kind: str = "documents") -> np.ndarray:
    """A document file's hex doc_ids as sorted distinct 16-byte keys (what the doc_id index holds)."""
    rows, _others = documents.file_doc_id_keys(path)
    return unique_sorted(np.ascontiguousarray(rows).view("S16").reshape(-1))


def _capture_keys(path: Path, kind: str) -> np.ndarray:
    """A document or fetch file's keyed captures as sorted distinct 24-byte keys (what the capture index holds)."""
    rows, _others = documents.file_capture_keys(documents.read_captures(path, kind))
    return unique_sorted(np.ascontiguousarray(rows).view("S24").reshape(-1))


def _data_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for kind in DATA_KINDS if (root / kind).is_dir()
                  for p in (root / kind).rglob("*.parquet"))


# ----- compact -------------------------------------------------------------------------------------
def _named_doc_files(snap: Snapshot) -> set[str]:
    """Document files something refers to by path: coverage records and tag/state files' meta."""
    named = set()
    for record in snap.coverage:
        if "doc_file" in record:
            named.add(record["doc_file"])
        named.update(record.get("doc_files", []))
    named.update(f.meta["doc_file"] for f in snap.files.values() if "doc_file" in f.meta)
    return named


def compaction_plan(snap: Snapshot, target_rows: int = COMPACT_ROWS,
                    target_bytes: int = COMPACT_BYTES) -> list[tuple[str, str, dict, list[FileEntry]]]:
    """Groups to merge: (kind, directory, meta, files), each of two or more small files, or of one document file
    not yet in doc_id order (written before document files were sorted: rewritten sorted, an export merges it)."""
    named_docs = _named_doc_files(snap)
    groups: dict[tuple, list[FileEntry]] = defaultdict(list)
    unsorted: set[str] = set()
    plan = []
    for entry in sorted(snap.files.values(), key=lambda f: f.path):
        if entry.kind not in COMPACT_KINDS or (entry.kind == "documents" and entry.path in named_docs):
            continue
        meta = {k: v for k, v in entry.meta.items() if k != "doc_file"}  # per source file: not kept when merged
        key = (entry.kind, entry.path.rsplit("/", 1)[0], json.dumps(meta, sort_keys=True))
        if entry.kind in store_mod.SORTED_BY and not store_mod.is_sorted_file(snap.root / entry.path, entry.kind):
            unsorted.add(entry.path)
        if entry.rows < target_rows // 2 and entry.bytes < target_bytes // 2:
            groups[key].append(entry)
        elif entry.path in unsorted:  # big, but not sorted: rewritten alone
            plan.append((key[0], key[1], meta, [entry]))
    for (kind, directory, meta), files in groups.items():
        bin_: list[FileEntry] = []
        for entry in files:
            bin_.append(entry)
            if sum(f.rows for f in bin_) >= target_rows or sum(f.bytes for f in bin_) >= target_bytes:
                if len(bin_) > 1 or bin_[0].path in unsorted:
                    plan.append((kind, directory, json.loads(meta), bin_))
                bin_ = []
        if len(bin_) > 1 or (bin_ and bin_[0].path in unsorted):
            plan.append((kind, directory, json.loads(meta), bin_))
    return plan


def compact_store(store: Store, target_rows: int = COMPACT_ROWS, target_bytes: int = COMPACT_BYTES) -> dict:
    """Merge small files (see the module doc); one commit per merged file. Returns counts."""
    summary = {"merged_files": 0, "into": 0, "rows": 0}
    with store.run("store compact", {"target_rows": target_rows, "target_bytes": target_bytes},
                   exclusive=True) as run:
        plan = compaction_plan(store.snapshot(), target_rows, target_bytes)
        for kind, directory, meta, files in plan:
            tables = [pq.read_table(store.root / f.path) for f in files]
            table = pa.concat_tables(tables, promote_options="permissive")
            subdir = directory.split("/", 1)[1] if "/" in directory else ""
            merged = run.write(kind, table, subdir, meta=meta)
            if merged.rows != sum(f.rows for f in files):
                raise store_mod.StoreError(f"{merged.path}: merged {merged.rows} rows from files of "
                                           f"{sum(f.rows for f in files)}; nothing committed")
            run.commit(add=[merged], remove=[f.path for f in files])
            summary["merged_files"] += len(files)
            summary["into"] += 1
            summary["rows"] += merged.rows
        run.stats.update(summary)
    return summary


# ----- vacuum --------------------------------------------------------------------------------------
def vacuum_store(store: Store, grace_s: float) -> dict:
    """Delete orphans and files removed more than ``grace_s`` ago. Returns counts."""
    with store.run("store vacuum", {"grace_s": grace_s}, removed_grace_s=grace_s, exclusive=True) as run:
        deleted = run.deleted
        snap = store.snapshot()
        waiting = [p for p, at in snap.removed.items() if (store.root / p).exists()]
        summary = {"deleted_files": len(deleted), "deleted_bytes": sum(size for _p, size in deleted),
                   "kept_in_grace": len(waiting),
                   "next_due_h": round(max(0.0, min((snap.removed[p] + grace_s - time.time()) / 3600
                                                    for p in waiting)), 2) if waiting else None}
        run.stats.update(summary)
    return summary
