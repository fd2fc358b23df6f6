"""``provenance export``: a training set chosen by a SQL predicate, with a manifest that defends it.

The predicate is SQL over ``documents`` joined with ``doc_flags`` (e.g.
``NOT flagged``, ``coalesce(llm_score, 0) < 0.5 AND domain = 'example.org'``).
The output directory gets:

  documents.parquet   the selected documents in doc_id order (without the raw body unless asked;
                      with their flags and scores from doc_flags under ``--with-tags``); with
                      ``--shard-rows N``, files of at most N rows instead,
                      documents-00000-of-00012.parquet ..., one after another in doc_id order
  manifest.json       query, input files and their sha256, counts kept and
                      excluded by category and tag, every detector that vetted
                      the set (plugin, versions, config hash, how many kept
                      documents it covered), the text-and-data-mining opt-outs
                      honoured (``respect_opt_out``) and what each excluded,
                      what was kept (domains, languages, crawls, dates), the
                      columns, tool version and time; paths relative to the
                      export directory (``--absolute-paths``: absolute)
  README.md           a dataset card with Hugging Face YAML front matter

It is assembled in a temporary directory and renamed into place, so a failed
export leaves nothing half-written; an earlier export it replaces is moved
aside, not deleted, until the new one is in place, and the next run cleans up
(or restores) what a killed export left. The manifest follows schemas/manifest.v2.json.

The predicate is untrusted text: it must be exactly one boolean expression
(``provenance.sql.boolean_predicate``), and it runs on a sandboxed connection
that reads only the snapshot's Parquet files and writes only the temporary
directory. ``--overwrite`` replaces only a directory that holds an earlier
export of this tool and nothing else.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import provenance
from provenance import exitcodes, objectstore, schemas
from provenance.plugins.consent import RESERVATION_TAGS
from provenance.sql import (NOT_FLAG_CATEGORIES, NOT_FLAG_TAGS, SCORE_CATEGORIES, UserSQLError, boolean_predicate,
                            connect, first_line, sql_list, sql_string)
from provenance.store import Store, coverage_kind, fsync_dir, is_sorted_file, utcnow

MANIFEST_VERSION = 2  # 2: paths relative to the export directory; summary, columns, with_tags
TOOL_NAME = "provenance-guard"
DEFAULT_WHERE = "NOT flagged"
EXPORT_MEMORY_MB = 1024  # DuckDB's memory for one export; a 1M-document export peaked at 5 GB without a bound
# The documents go out in doc_id order: merged from the document files when each is sorted (_write_merged, below),
# else through an external sort of our own (_write_sorted): DuckDB's ORDER BY
# of ~35 columns of 2 KB rows fails to pin a block once the rows outgrow its memory limit, spilling or not.
# They are first split by doc_id prefix into ranges of at most this share of the memory limit (uncompressed),
# each then sorted in memory (the range, and one row group of it in order at a time).
EXPORT_BUCKET_SHARE = 0.25
# Rows per Parquet row group written: a row group is held whole until written (DuckDB's default, 122,880 rows,
# is 250 MB of 2 KB documents).
EXPORT_ROW_GROUP_ROWS = 10_000
# The split passes (_split_by_prefix): the rows of a batch a pass cuts into ranges, as many as make about
# EXPORT_SPLIT_BATCH_BYTES of the store's average document, within these bounds (_split_batch_rows). Few rows
# cost time: DuckDB's batches of about 1,000 rows, cut 256 ways, made a pass 7x slower at 3M documents. Many
# bytes cost time too: a buffer over 8 MB goes back to the kernel as soon as it is freed (jemalloc's "huge"
# allocations) and the next batch's pages fault in anew: 8,192 rows of 2 KB documents (16 MB) cost a
# 1M-document export 2.1 million page faults and 8.6 s in the kernel, 2,048 rows (4 MB) 0.8 million and 3.9 s.
EXPORT_SPLIT_BATCH_ROWS = (1024, 8192)
EXPORT_SPLIT_BATCH_BYTES = 4 << 20
# A pass of more ranges takes batches of enough rows to give each range this many on average, up to
# EXPORT_SPLIT_BATCH_MAX_BYTES: cutting and joining cost per slice and column, so 2,048-row batches cut 256 ways
# (slices of 8 rows) made the split of 1M documents 2.7x as slow as cut 16 ways (10.4 s against 3.8 s); batches
# of 16,384 rows (32 MB) brought it to 5.0 s, and 64 MB gained nothing more. Their faults cost less than that.
EXPORT_SPLIT_SLICE_ROWS = 64
EXPORT_SPLIT_BATCH_MAX_BYTES = 32 << 20
# Characters of doc_id per pass (16**2 = 256 range files open at once).
EXPORT_SPLIT_CHARS = 2
# Each range's rows are held until this many bytes, written as one batch; all ranges' held rows together take
# at most EXPORT_SPLIT_HELD_SHARE of the memory limit (256 ranges under 1 GB: 512 KB each).
EXPORT_SPLIT_HELD_BYTES = 4 << 20
EXPORT_SPLIT_HELD_SHARE = 1 / 8
# How long jemalloc keeps freed pages for reuse during an export (jemalloc's own default; pyarrow sets 0).
EXPORT_JEMALLOC_DECAY_MS = 10_000
# Held batches handed to the split's writing thread and not yet written (each at most EXPORT_SPLIT_HELD_BYTES).
EXPORT_SPLIT_PENDING_WRITES = 16
# The range files are not compressed. LZ4 wrote 56% of the bytes, but compressed each column's buffer of each
# held batch as a frame of its own, and with 256 ranges a held batch is 512 KB of 33 columns: at 10M documents
# the split then spent more time in LZ4 than it saved in writing (an export of 10M in a 3 GB memory cgroup,
# page cache included: 344.8 s with LZ4, 257.1 s without, though 25 GB of range files were written instead of
# 14.5 GB; 1M: 20.9 and 16.8 s; docs/SCALE.md). zstd level 1 (33% of the bytes) was slower still.
EXPORT_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)
EXPORT_SETTINGS = {"enable_progress_bar": False}  # DuckDB's bar on stderr, once per long statement
# The selection (doc_ids) is joined on the way into the sort when its hash table, at about this many bytes a
# row, takes at most this share of the memory limit; a bigger one is joined range by range.
EXPORT_JOIN_ROW_BYTES = 64
EXPORT_EARLY_FILTER_SHARE = 1 / 8
# A store whose document files are each in doc_id order (store.SORTED_BY) is exported by merging them
# (_write_merged): no temporary files, each document read once. Each file being read holds one row group
# decoded (pyarrow decodes a whole row group, then hands it out a batch at a time) and its pages' buffers: at
# 100 open files of 1,024-row groups of 2 KB documents (2.3 MB decoded), 5 MB of Arrow memory and 10 MB of
# RSS each, hence EXPORT_MERGE_GROUP_FACTOR times the largest row group a file. All of them together take at
# most EXPORT_MERGE_SHARE of the memory limit (DuckDB, which only streams the selection meanwhile, takes its
# own); a store of more files is sorted through range files (``provenance store compact`` merges small files,
# ``--target-mb`` into bigger ones; docs/SCALE.md).
EXPORT_MERGE_GROUP_FACTOR = 4
EXPORT_MERGE_SHARE = 1
EXPORT_MERGE_BATCH_ROWS = 1024  # rows a batch from a file (a slice of its decoded row group: no copy)
EXPORT_MERGE_READ_BUFFER = 256 << 10  # bytes read from a file at a time, not a row group's column chunks at once
# Each merge step takes the documents of one doc_id range of about this share of the memory limit from
# every file, sorts and writes them; the next steps are read and sorted by a second thread meanwhile.
EXPORT_MERGE_STEP_SHARE = 1 / 16
EXPORT_MERGE_BOUND_CHARS = 12  # hex characters of the steps' doc_id bounds
EXPORT_MERGE_AHEAD = 2  # steps read ahead of the one being written: with one, the steps' uneven times left
# each thread waiting on the other (28 s of a 141 s export of 10M documents); with two, 6 s of 120 s
# An export whose store's document files take more than this share of its memory (memory_bytes: the machine's,
# or its cgroup's when lower) drops the pages it has read from the store, and those it has written, from the page
# cache as it goes (POSIX_FADV_DONTNEED, as HDFS's datanodes drop cache behind reads and writes): it reads each
# byte once and writes the output once, so caching them only evicts everything else, and on a VM an over-full
# page cache costs the kernel more per byte (docs/SCALE.md). True or False forces it either way.
EXPORT_DROP_BEHIND: bool | None = None
EXPORT_DROP_BEHIND_SHARE = 1 / 4
SELECTED_FROM = "documents JOIN doc_flags USING (doc_id)"
EXPORT_FILES = ("documents.parquet", "manifest.json", "README.md")  # what an export directory holds, and shards:
SHARD_NAME = "documents-{index:05d}-of-{count:05d}.parquet"  # Hugging Face's names for a split's files
SHARD_GLOB = "documents-*-of-*.parquet"
SHARD_PATTERN = re.compile(r"documents-\d{5,}-of-\d{5,}\.parquet")
# --with-tags: the doc_flags columns added to each exported document.
TAG_COLUMNS = ("flagged", "flags", "n_tags", "categories", "category_scores",
               *(f"{c}_score" for c in SCORE_CATEGORIES))
TOP_DOMAINS = 50  # domains listed in the manifest (the card shows the first 10); the rest are counted
# Hugging Face's size_categories buckets: (upper bound, label); the last is open-ended.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T"), (None, "n>1T"))
LANGUAGE_MIN_SHARE = 0.01  # a language is listed in the card's front matter from this share of kept documents
# respect_opt_out leaves out documents the consent detector tagged with one of these (TDMRep reservation, noai),
# and those the host's tdmrep.json reserved when the crawl fetched them (the consent view's tdm_reserved).
OPT_OUT_SIGNALS = tuple(f"consent:{t}" for t in RESERVATION_TAGS)
OPT_OUT_TAGS_SQL = (f"SELECT doc_id, 'consent:' || tag AS signal FROM tags WHERE detector = 'consent' "
                    f"AND category = 'consent' AND tag IN ({', '.join(sql_string(t) for t in RESERVATION_TAGS)}) "
                    f"UNION SELECT doc_id, 'consent:tdm_reserved' FROM consent WHERE tdm_reserved = 'true'")


class ExportError(Exception):
    """An export that cannot be made (the store holds no documents, ...)."""

    exit_code = exitcodes.FAILURE


class ExportUsageError(ExportError):
    """An export asked for wrongly (bad predicate, output directory in the way): exit 2, nothing written."""

    exit_code = exitcodes.USAGE


def is_export_file(name: str) -> bool:
    """Whether a file of this name belongs in an export directory (``--overwrite`` replaces nothing else)."""
    return name in EXPORT_FILES or SHARD_PATTERN.fullmatch(name) is not None


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output directory that is in the way; ``--overwrite`` may replace an earlier export only.

    An earlier export is a directory whose manifest.json this tool wrote and that
    holds nothing but the files an export writes: replacing any other directory
    could delete a user's files.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportUsageError(f"{out_dir}: is a file, not a directory; choose another --out directory")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ExportUsageError(f"{out_dir}: exists and is not empty (use --overwrite to replace an earlier export)")
    others = sorted(p.name for p in out_dir.iterdir() if not is_export_file(p.name))
    if others or not _is_manifest_of_this_tool(out_dir / "manifest.json"):
        found = f"it also holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else \
            "it has no manifest.json written by provenance export"
        raise ExportUsageError(f"{out_dir}: --overwrite replaces only an earlier export, and {found}; "
                               f"choose another --out directory")


def _is_manifest_of_this_tool(path: Path | str) -> bool:
    try:
        if objectstore.is_uri(path):
            with objectstore.open_input(path) as fh:
                manifest = json.loads(fh.read(16 << 20))
        else:
            manifest = json.loads(path.read_text())
    except (OSError, ValueError, objectstore.ObjectStoreError):
        return False
    return (isinstance(manifest, dict) and isinstance(manifest.get("tool"), dict)
            and manifest["tool"].get("name") == TOOL_NAME and "manifest_version" in manifest)


def _coverage_table(con, snapshot) -> None:
    rows = []
    for c in snapshot.coverage:
        if coverage_kind(c) not in ("doc", "corpus"):  # state rows: vetted only once finish covers them; chain
            continue  # records name capture files, no rows
        if c.get("corpus"):
            for f in c["doc_files"]:
                rows.append((c["detector"], c["tag_key"], str(snapshot.root / f), 0, 2**62))
        else:
            for start, end in c["ranges"]:
                rows.append((c["detector"], c["tag_key"], str(snapshot.root / c["doc_file"]), start, end))
    con.execute("CREATE TEMP TABLE coverage (detector VARCHAR, tag_key VARCHAR, file VARCHAR, "
                "row_start BIGINT, row_end BIGINT)")
    if rows:
        con.executemany("INSERT INTO coverage VALUES (?, ?, ?, ?, ?)", rows)


def _detector_descriptions(store: Store) -> dict[tuple[str, str], dict]:
    """(detector, tag_key) -> description recorded by the tag runs that used it."""
    found = {}
    for record in store.runs():
        if record.get("command") != "tag":
            continue
        for d in record.get("config", {}).get("detectors", []):
            found[(d["detector"], d["tag_key"])] = d
    return found


def run_export(store: Store, out_dir: Path, where: str = DEFAULT_WHERE, include_raw: bool = False,
               overwrite: bool = False, respect_opt_out: bool = False, with_tags: bool = False,
               absolute_paths: bool = False, memory_mb: int | None = None, shard_rows: int | None = None) -> dict:
    """Export what ``where`` selects to ``out_dir``; ``memory_mb`` bounds DuckDB (default EXPORT_MEMORY_MB);
    ``shard_rows`` cuts the documents into files of at most that many rows (default: one file).
    ``out_dir`` may be an ``s3://BUCKET/PREFIX`` (see ``_export_to_object_store``)."""
    if shard_rows is not None and shard_rows < 1:
        raise ExportUsageError(f"--shard-rows must be at least 1, not {shard_rows}")
    if objectstore.is_uri(str(out_dir)):
        return _export_to_object_store(store, str(out_dir), where=where, include_raw=include_raw,
                                       overwrite=overwrite, respect_opt_out=respect_opt_out, with_tags=with_tags,
                                       memory_mb=memory_mb, shard_rows=shard_rows)
    out_dir = Path(out_dir).absolute()
    recover_interrupted_export(out_dir)
    check_output_dir(out_dir, overwrite)
    snapshot = store.snapshot()
    doc_paths = snapshot.paths("documents")
    if not doc_paths:
        raise ExportError(f"{store.root}: the store holds no documents")
    tmp_dir = _staging_dir(out_dir, "tmp", os.getpid())
    shutil.rmtree(tmp_dir, ignore_errors=True)  # left by a killed process whose pid this one reuses
    tmp_dir.mkdir(parents=True)
    try:
        with _memory_pool():
            manifest = _export_into(store, snapshot, doc_paths, tmp_dir, out_dir, where, include_raw,
                                    respect_opt_out, with_tags, absolute_paths,
                                    memory_mb if memory_mb is not None else EXPORT_MEMORY_MB, shard_rows)
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest


@contextlib.contextmanager
def _memory_pool():
    """Arrow's allocations during the export from jemalloc, keeping freed pages for EXPORT_JEMALLOC_DECAY_MS (or
    from the C library's malloc where pyarrow has no jemalloc), instead of pyarrow's default, mimalloc, unless
    ARROW_DEFAULT_MEMORY_POOL chose a pool.

    The export allocates and frees buffers of tens of MB many times a second, on three threads. mimalloc (which
    backs them with huge pages) and pyarrow's jemalloc settings (decay 0) hand freed pages straight back to the
    kernel, which zeroes them again on the next allocation: a 1M-document export took a third longer with
    mimalloc, most of the difference CPU in the kernel (the figures per pool: docs/SCALE.md, "Export at 10M, the
    next round"). Buffers keep the pool that made them, so switching back afterwards is safe; what jemalloc kept
    is handed back then.
    """
    previous = pa.default_memory_pool()
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or previous.backend_name != "mimalloc":
        yield
        return
    try:
        pa.jemalloc_set_decay_ms(EXPORT_JEMALLOC_DECAY_MS)  # for arenas made from now on: this export's, if first
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        pool.release_unused()


def _export_to_object_store(store: Store, uri: str, overwrite: bool, **options) -> dict:
    """Export to ``s3://BUCKET/PREFIX``: made whole in a local temporary directory (``TMPDIR``) as a local export is,
    then uploaded, ``manifest.json`` last: a prefix with a manifest holds a complete export. Refuses a prefix
    holding anything but an earlier export (and that unless ``overwrite``), like a local ``--out``. The manifest
    names the store by its absolute path (a path relative to a bucket means nothing) and the export's place as
    ``location``."""
    label = objectstore.canonical(uri)
    objectstore.check_bucket(uri)
    existing = objectstore.list_files(uri)
    if existing == [uri]:
        raise ExportUsageError(f"{label}: is an object, not a prefix; choose another --out")
    names = [objectstore.canonical(f)[len(label) + 1:] for f in existing]
    if names:
        if not overwrite:
            raise ExportUsageError(f"{label}: holds objects (use --overwrite to replace an earlier export)")
        others = sorted(n for n in names if not is_export_file(n))
        if others or not _is_manifest_of_this_tool(objectstore.join(uri, "manifest.json")):
            found = f"it also holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others else \
                "it has no manifest.json written by provenance export"
            raise ExportUsageError(f"{label}: --overwrite replaces only an earlier export, and {found}; "
                                   "choose another --out prefix")
    with tempfile.TemporaryDirectory(prefix="provenance-export-") as tmp:
        local = Path(tmp) / (objectstore.name_of(uri) or "export")
        manifest = run_export(store, local, overwrite=False, absolute_paths=True, **options)
        manifest["location"] = label
        (local / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        data = [o["path"] for o in manifest["outputs"]]
        if "manifest.json" in names:  # the earlier export is incomplete from now on: say so first
            objectstore.delete(objectstore.join(uri, "manifest.json"))
        for name in data:
            objectstore.upload(local / name, objectstore.join(uri, name))
        for name in sorted(set(names) - set(data) - {"README.md", "manifest.json"}):  # the earlier export's shards
            objectstore.delete(objectstore.join(uri, name))
        for name in ("README.md", "manifest.json"):  # the manifest last: it marks a whole export
            objectstore.upload(local / name, objectstore.join(uri, name))
    return manifest


def _export_into(store: Store, snapshot, doc_paths: list[Path], tmp_dir: Path, out_dir: Path, where: str,
                 include_raw: bool, respect_opt_out: bool, with_tags: bool, absolute_paths: bool,
                 memory_mb: int, shard_rows: int | None = None) -> dict:
    """Write documents.parquet (or its shards), manifest.json and README.md into ``tmp_dir`` (which exists) and
    return the manifest.

    The predicate runs on a connection that can write nothing but ``tmp_dir`` (our own COPY below). DuckDB's
    memory is bounded; what does not fit (joins, aggregates) spills to ``tmp_dir/.spill``, which is created
    with ``tmp_dir`` and removed, with the sort's buckets, before ``tmp_dir`` becomes the export.
    """
    spill_dir, buckets_dir = tmp_dir / ".spill", tmp_dir / ".buckets"
    # Ranges of the external sort (_write_sorted): sized by the whole store, an upper bound of the selection.
    doc_bytes, doc_rows, group_bytes = _document_size(doc_paths, include_raw)
    levels = _range_levels(doc_bytes, memory_mb * 2**20 * EXPORT_BUCKET_SHARE)
    batch_rows = _split_batch_rows(doc_bytes, doc_rows, 16 ** min(EXPORT_SPLIT_CHARS, levels))
    con = connect(store, sandbox=True, snapshot=snapshot, writable_dirs=[tmp_dir], spill_dir=spill_dir,
                  memory_limit_mb=memory_mb, settings=EXPORT_SETTINGS)
    try:
        try:
            where = boolean_predicate(con, where, SELECTED_FROM)
        except UserSQLError as exc:
            raise ExportUsageError(str(exc)) from None
        con.execute(f"CREATE TEMP VIEW located AS SELECT doc_id, filename AS _file, file_row_number AS _row "
                    f"FROM read_parquet({sql_list(doc_paths)}, filename=true, file_row_number=true)")
        chosen = f"SELECT doc_id FROM {SELECTED_FROM} WHERE ({where})"
        try:
            con.execute(f"CREATE TEMP TABLE chosen AS {chosen}")
        except duckdb.Error as exc:  # it parsed and bound, but failed on the data (a bad cast, a file it may not read)
            raise ExportUsageError(f"--where {where!r} failed: {first_line(exc)}") from None
        con.execute(f"CREATE TEMP TABLE opted_out AS {OPT_OUT_TAGS_SQL}")
        kept_sql = "SELECT doc_id FROM chosen"
        selection = chosen  # what the manifest records: the whole selection as one query
        if respect_opt_out:
            kept_sql += " WHERE doc_id NOT IN (SELECT doc_id FROM opted_out)"
            selection += f" AND doc_id NOT IN (SELECT doc_id FROM ({OPT_OUT_TAGS_SQL}))"
        con.execute(f"CREATE TEMP TABLE selected AS {kept_sql}")
        _coverage_table(con, snapshot)

        columns = "d.*" if include_raw else "d.* EXCLUDE (raw)"
        source = "documents d"
        if with_tags:
            columns += "".join(f", f.{c}" for c in TAG_COLUMNS)
            source += " JOIN doc_flags f USING (doc_id)"
        output = _DocumentFiles(tmp_dir, shard_rows, drop_behind=_drop_behind(doc_paths))
        # Sorted document files are merged with the selection in doc_id order, step by step. Else the selection
        # is a semi-join: on the way in when its hash table is small, else in each sorted range (at 10M
        # documents the join of the whole selection spilled every document's text to disk, 10 GB).
        kept = con.execute("SELECT count(*) FROM selected").fetchall()[0][0]  # all: con.sql below needs it done
        tags = "".join(f", f.{c}" for c in TAG_COLUMNS) if with_tags else ""
        merged = _mergeable(doc_paths, group_bytes, memory_mb << 20) and _write_merged(
            con, doc_paths, f"SELECT {columns} FROM {source}",
            f"SELECT s.doc_id{tags} FROM selected s{' JOIN doc_flags f USING (doc_id)' * with_tags} "
            f"ORDER BY s.doc_id", output, doc_bytes, memory_mb << 20)
        if not merged and kept * EXPORT_JOIN_ROW_BYTES <= memory_mb * 2**20 * EXPORT_EARLY_FILTER_SHARE:
            _write_sorted(con, f"SELECT {columns} FROM {source} WHERE d.doc_id IN (SELECT doc_id FROM selected)",
                          output, buckets_dir, levels, memory_mb << 20, batch_rows)
        elif not merged:
            _write_sorted(con, f"SELECT {columns} FROM {source}", output, buckets_dir, levels, memory_mb << 20,
                          batch_rows, keep="selected")
        manifest = _manifest(con, store, snapshot, where, selection, output, respect_opt_out,
                             out_dir=None if absolute_paths else out_dir, with_tags=with_tags)
        (tmp_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (tmp_dir / "README.md").write_text(dataset_card(manifest, out_dir.name))
    finally:
        con.close()  # DuckDB's spill files go with it; the export directory holds export files only
        shutil.rmtree(spill_dir, ignore_errors=True)
        shutil.rmtree(buckets_dir, ignore_errors=True)
    return manifest


def _document_size(doc_paths: list[Path], include_raw: bool) -> tuple[int, int, int]:
    """(uncompressed bytes of the columns an export writes, rows, the most of those bytes in one row group) of the
    documents files, from their footers."""
    total, rows, most = 0, 0, 0
    for path in doc_paths:
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            size = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                       if include_raw or group.column(c).path_in_schema != "raw")
            total, most = total + size, max(most, size)
    return total, rows, most


def _range_levels(expected_bytes: float, bucket_bytes: float) -> int:
    """How many leading characters of doc_id make ranges of at most ``bucket_bytes`` (16**k of them, from 16:
    one code path at every size)."""
    k = 1
    while expected_bytes / 16 ** k > bucket_bytes and k < 4:
        k += 1
    return k


def _drop_behind(doc_paths: list[Path]) -> bool:
    """Whether this export drops the pages it reads and writes from the page cache (EXPORT_DROP_BEHIND)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    if EXPORT_DROP_BEHIND is not None:
        return EXPORT_DROP_BEHIND
    return sum(p.stat().st_size for p in doc_paths) > memory_bytes() * EXPORT_DROP_BEHIND_SHARE


def memory_bytes(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The memory this process may fill, page cache included: the machine's, or its memory cgroup's limit when
    lower (a container's; the page cache of the files it reads and writes is charged to it)."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # v2: one hierarchy
                limit = cgroup_root / path.lstrip("/") / "memory.max"
            elif "memory" in controllers.split(","):  # v1
                limit = cgroup_root / "memory" / path.lstrip("/") / "memory.limit_in_bytes"
            else:
                continue
            if limit.exists() and limit.read_text().strip() != "max":
                memory = min(memory, int(limit.read_text()))
    except (OSError, ValueError):  # no cgroups here (not Linux), or one we cannot read: the machine's
        pass
    return memory


def _drop_pages(path: Path, start: int, end: int) -> None:
    """Tell the kernel the bytes ``start`` to ``end`` of ``path`` will not be read again: their clean pages leave
    the page cache, and the writing back of dirty ones begins (they leave at a later call)."""
    if end > start:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class _GrowingFileHash:
    """The sha256 of a file being appended to, taken as it grows: ``update()`` after each write reads the bytes
    written since the last, still in the page cache. Hashing the file once written read it all again, from the
    disk once it outgrew the page cache (8 GB at 10M documents)."""

    def __init__(self, path: Path):
        self.path, self._digest, self.hashed = path, hashlib.sha256(), 0

    def update(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self.hashed)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                self._digest.update(chunk)
                self.hashed += len(chunk)

    def hexdigest(self) -> str:
        self.update()
        return self._digest.hexdigest()


class _DocumentFiles:
    """Where the sorted documents go: ``documents.parquet``, or with ``shard_rows`` files of at most that many
    rows, each begun when the one before is full, so that read one after another they are in doc_id order.
    Shards are named when the last is closed (``SHARD_NAME``: their number is known only then). Each file's
    sha256 is taken as it is written."""

    def __init__(self, directory: Path, shard_rows: int | None, drop_behind: bool = False):
        self.directory, self.shard_rows, self.drop_behind = directory, shard_rows, drop_behind
        self.paths: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._hashes: list[_GrowingFileHash] = []
        self._rows = 0  # in the file being written
        self._written_back = self._dropped = 0  # bytes of the file being written (drop_behind)

    def _next_path(self) -> Path:
        name = "documents.parquet" if self.shard_rows is None else f"documents-{len(self.paths):05d}.parquet"
        self.paths.append(self.directory / name)
        self._hashes.append(_GrowingFileHash(self.paths[-1]))
        self._written_back = self._dropped = 0
        return self.paths[-1]

    def write(self, table: pa.Table) -> None:
        """Append rows that follow every row written so far in doc_id order."""
        while table.num_rows:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._next_path(), table.schema, compression="zstd")
                self._rows = 0
            room = table.num_rows if self.shard_rows is None else self.shard_rows - self._rows
            self._writer.write_table(table.slice(0, room), row_group_size=EXPORT_ROW_GROUP_ROWS)
            self._hashes[-1].update()  # the writer's file stream is unbuffered: its row groups are in the file
            if self.drop_behind:  # what the last write began writing back is likely on disk: drop it
                path, end = self.paths[-1], self._hashes[-1].hashed
                _drop_pages(path, self._dropped, self._written_back)
                _drop_pages(path, self._written_back, end)
                self._dropped, self._written_back = self._written_back, end
            self._rows += min(room, table.num_rows)
            table = table.slice(room)
            if self._rows == self.shard_rows:
                self._writer.close()
                self._writer = None

    def write_empty(self, con, select_sql: str) -> None:
        """Nothing was selected: one file with the columns and no rows."""
        con.execute(f"COPY ({select_sql} LIMIT 0) TO {sql_string(self._next_path())} "
                    f"(FORMAT parquet, COMPRESSION zstd)")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.shard_rows is not None:
            named = [self.directory / SHARD_NAME.format(index=i, count=len(self.paths)) for i in range(len(self.paths))]
            for old, new, digest in zip(self.paths, named, self._hashes):
                os.replace(old, new)
                digest.path = new
            self.paths = named

    def sha256(self, path: Path) -> str:
        """The sha256 of the written file ``path``, once closed."""
        return self._hashes[self.paths.index(path)].hexdigest()


def _write_sorted(con, select_sql: str, output: _DocumentFiles, buckets_dir: Path, levels: int, memory_bytes: int,
                  batch_rows: int, keep: str | None = None) -> None:
    """Write the rows of ``select_sql`` (which has a doc_id column) to ``output`` ordered by doc_id, in memory
    bounded by two ranges whatever their number: an external sort by range.

    doc_ids are hex digests, so their first ``levels`` characters split the rows into 16**levels ranges of about
    equal size (``_range_levels`` picks the number). A split pass streams the rows from DuckDB in Arrow batches
    and appends each row to its range's Arrow IPC file (``_split_by_prefix``): one pass for up to two characters
    (256 ranges), so the rows are written and read once more than a sort in memory up to 16**2 ranges (10M
    documents of 2 KB under the default limit), twice beyond. Each range, in order, is then read back, sorted
    in memory and written on to the output, and its file deleted; the next range is read and sorted by
    a second thread while one is written. Ranges in order, each in order: the
    whole in doc_id order. With ``keep`` (a relation with a doc_id column), only its doc_ids are written: they
    are split the same way and each range is filtered by its own share of them (a join of the whole selection
    spilled every document's text at 10M documents).
    """
    def read_range(docs: Path, kept: Path | None) -> pa.Table:
        """A range read back, filtered to the kept doc_ids and sorted."""
        return _sorted_selected(_read_range(docs), None if kept is None else _read_range(kept).column("doc_id"))

    def write_ranges(ranges: list[tuple[Path, Path | None]]) -> None:
        """Sort and write the ranges, in order; the next one is read back and sorted by a second thread while
        one is written (both release the GIL), so reading, sorting and compressing overlap; at most three ranges
        are held (the one written, the next and its sorted copy while it is sorted)."""
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="export-range") as reader:
            ahead = reader.submit(read_range, *ranges[0]) if ranges else None
            for i, (doc_file, kept_file) in enumerate(ranges):
                table = ahead.result()
                ahead = reader.submit(read_range, *ranges[i + 1]) if i + 1 < len(ranges) else None
                output.write(table)
                del table
                doc_file.unlink()
                if kept_file is not None:
                    kept_file.unlink()

    def sort_ranges(docs, kept, start: int, directory: Path) -> None:
        """Split ``docs`` (and ``kept``: queries, or the IPC files a pass wrote) by the characters from
        ``start``, then sort each range, or split it further."""
        width = min(EXPORT_SPLIT_CHARS, levels - start)
        # kept first: the top level's two are queries on one connection, which runs one at a time
        held = min(EXPORT_SPLIT_HELD_BYTES, int(memory_bytes * EXPORT_SPLIT_HELD_SHARE) // 16 ** width)
        kept_files = {} if kept is None else _split_by_prefix(kept, directory / "kept", start, width, held,
                                                               EXPORT_SPLIT_BATCH_ROWS[1])
        doc_files = _split_by_prefix(docs, directory / "docs", start, width, held, batch_rows)
        ranges = []
        for key, doc_file in doc_files.items():  # in key order: the ranges in doc_id order
            kept_file = kept_files.get(key)
            if kept is not None and kept_file is None:
                doc_file.unlink()  # nothing of this range is kept
            elif start + width == levels:
                ranges.append((doc_file, kept_file))
            else:
                sort_ranges(doc_file, kept_file, start + width, directory / str(key))
                doc_file.unlink()
                if kept_file is not None:
                    kept_file.unlink()
        write_ranges(ranges)
        shutil.rmtree(directory, ignore_errors=True)

    buckets_dir.mkdir(exist_ok=True)
    try:
        sort_ranges(lambda: con.sql(select_sql).to_arrow_reader(batch_rows),
                    None if keep is None else
                    lambda: con.sql(f"SELECT doc_id FROM {keep}").to_arrow_reader(EXPORT_SPLIT_BATCH_ROWS[1]),
                    0, buckets_dir / "split")
        if not output.paths:
            output.write_empty(con, select_sql)
    finally:
        output.close()


def _mergeable(doc_paths: list[Path], group_bytes: int, memory_bytes: int) -> bool:
    """Whether the export can merge the document files: each is in doc_id order, and they can be open together,
    each holding a row group of at most ``group_bytes`` (EXPORT_MERGE_SHARE of the memory limit, half the
    open-file limit)."""
    import resource

    fits = len(doc_paths) * group_bytes * EXPORT_MERGE_GROUP_FACTOR <= memory_bytes * EXPORT_MERGE_SHARE
    if not fits or len(doc_paths) > resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2:
        return False
    return all(is_sorted_file(p, "documents") for p in doc_paths)


class _SortedStream:
    """Record batches in doc_id order (a sorted document file, or DuckDB's ordered selection), taken one doc_id
    range after another: ``take_below(bound)`` reads on until a row at ``bound`` or past it, and returns the
    rows before it; what it read past stays for the next range."""

    def __init__(self, batches):
        self._batches = batches
        self._held: collections.deque[pa.RecordBatch] = collections.deque()
        self._done = False

    def take_below(self, bound: str | None) -> list[pa.RecordBatch]:
        """The rows whose doc_id is below ``bound`` (all that are left, with None)."""
        while not self._done and (bound is None or not self._held or self._last_id() < bound):
            batch = next(self._batches, None)
            if batch is None:
                self._done = True
            elif batch.num_rows:
                self._held.append(batch)
        if bound is None:
            taken, self._held = list(self._held), collections.deque()
            return taken
        taken = []
        while self._held:
            batch = self._held[0]
            if batch.column("doc_id")[-1].as_py() < bound:
                taken.append(self._held.popleft())
                continue
            below = pc.sum(pc.less(batch.column("doc_id"), bound)).as_py() or 0  # sorted: the first rows
            if below:
                taken.append(batch.slice(0, below))
                self._held[0] = batch.slice(below)
            break
        return taken

    def _last_id(self) -> str:
        return self._held[-1].column("doc_id")[-1].as_py()


def _file_batches(path: Path, schema: pa.Schema, drop_behind: bool = False):
    """The rows of the document file ``path`` with the columns of ``schema``, a few at a time: as they are
    when the file has the store's current columns, else conformed (an older schema's file lacks some). With
    ``drop_behind``, the pages of each row group leave the page cache once it has been read."""
    parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=EXPORT_MERGE_READ_BUFFER)
    have = parquet.schema_arrow
    same = all(have.get_field_index(f.name) >= 0 and have.field(f.name).type == f.type for f in schema)
    batches = parquet.iter_batches(EXPORT_MERGE_BATCH_ROWS, columns=[f.name for f in schema if f.name in have.names],
                                   use_threads=False)
    if drop_behind:  # after each row group, its bytes and all before it: where the next one begins
        meta = parquet.metadata
        group_ends = zip(np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)]),
                         [_row_group_offset(meta.row_group(g)) for g in range(1, meta.num_row_groups)]
                         + [path.stat().st_size])
        rows, (group_rows, group_end), dropped = 0, next(group_ends, (None, 0)), 0
    for batch in batches:
        if same:
            yield batch.select(schema.names)
        else:
            yield pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
                 for f in schema], schema=schema)
        if drop_behind:  # the batch's row group is decoded: once handed out whole, its bytes are not read again
            rows += batch.num_rows
            while group_rows is not None and rows >= group_rows:
                _drop_pages(path, dropped, group_end)
                dropped = group_end
                group_rows, group_end = next(group_ends, (None, group_end))


def _row_group_offset(group) -> int:
    """Where a row group's bytes begin in its Parquet file: its first column chunk's first page (writers write
    the chunks in the schema's order; were it not so, a drop would only make a page be read again)."""
    column = group.column(0)
    return column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset


def _write_merged(con, doc_paths: list[Path], select_sql: str, selection_sql: str, output: _DocumentFiles,
                  doc_bytes: int, memory_bytes: int) -> bool:
    """Write the documents ``selection_sql`` selects (its doc_id, and any other columns appended to each document) to
    ``output`` in doc_id order, by merging the document files, each in doc_id order: no temporary files, every
    document read once, in memory bounded by the open files and the steps in hand (written, and read ahead).

    Step by step, each the documents of one doc_id range (hex bounds: doc_ids are hex digests, so the ranges are
    about equal; any other string is still placed right), the rows of the range are taken from every file and from
    the selection, which DuckDB streams in doc_id order; they are sorted, filtered to the selection and written.
    The next steps (EXPORT_MERGE_AHEAD) are read and sorted by a second thread while one is written. The columns
    are those of ``select_sql`` (the documents view's, with DuckDB's Arrow types, as the sorting path writes).
    False, having written nothing, when a column of the documents view is not of the store's schema."""
    out_schema = con.sql(f"{select_sql} LIMIT 0").to_arrow_table().schema
    appended = con.sql(selection_sql).columns[1:]
    stored = schemas.load("documents").arrow  # what the files hold (one of an older version: conformed)
    if any(n not in stored.names and n not in appended for n in out_schema.names):
        return False
    doc_schema = pa.schema([stored.field(n) for n in out_schema.names if n not in appended])
    files = [_SortedStream(_file_batches(p, doc_schema, output.drop_behind)) for p in doc_paths]
    selection = con.sql(selection_sql).to_arrow_reader(EXPORT_SPLIT_BATCH_ROWS[1])
    chosen = _SortedStream(iter(selection))
    steps = max(1, int(np.ceil(doc_bytes / (memory_bytes * EXPORT_MERGE_STEP_SHARE))))
    space = 16 ** EXPORT_MERGE_BOUND_CHARS
    bounds = [f"{i * space // steps:0{EXPORT_MERGE_BOUND_CHARS}x}" for i in range(1, steps)] + [None]

    pending: list[pa.Table] = []
    try:
        try:
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="export-merge") as reader:
                # One thread: the steps run in order, each reading on from where the last left the streams.
                def read_next():
                    ahead.append(reader.submit(_merge_step, files, chosen, unread.popleft(), doc_schema, out_schema))

                unread, ahead = collections.deque(bounds), collections.deque()
                while unread and len(ahead) < EXPORT_MERGE_AHEAD:
                    read_next()
                while ahead:
                    table = ahead.popleft().result()
                    if unread:
                        read_next()
                    if table is not None and table.num_rows:
                        pending.append(table)
                    rows = sum(t.num_rows for t in pending)  # written in whole row groups, but for the last
                    if rows >= EXPORT_ROW_GROUP_ROWS or (not ahead and rows):
                        joined = pa.concat_tables(pending)
                        whole = rows if not ahead else rows // EXPORT_ROW_GROUP_ROWS * EXPORT_ROW_GROUP_ROWS
                        output.write(joined.slice(0, whole))
                        pending = [joined.slice(whole)]
        finally:
            selection.close()  # DuckDB's reader holds its connection until closed
        if not output.paths:
            output.write_empty(con, select_sql)
    finally:
        output.close()
    return True


def _merge_step(files: list[_SortedStream], chosen: _SortedStream, bound: str | None, doc_schema: pa.Schema,
                out_schema: pa.Schema) -> pa.Table | None:
    """One step of ``_write_merged``: the documents of ``files`` below ``bound`` (and past the last step's) that
    ``chosen`` selects, sorted, with the columns the selection appends, as ``out_schema``."""
    pieces = [b for f in files for b in f.take_below(bound)]
    picked = chosen.take_below(bound)
    if not pieces or not picked:
        return None
    picked = pa.Table.from_batches(picked)
    table = _sorted_selected(pa.Table.from_batches(pieces, doc_schema), picked.column("doc_id"))
    table = table.cast(pa.schema([out_schema.field(n) for n in doc_schema.names]))
    if picked.num_columns > 1:  # columns the selection appends (--with-tags)
        extra = picked.take(pc.index_in(table.column("doc_id"), value_set=picked.column("doc_id")))
        for name in picked.column_names[1:]:
            table = table.append_column(extra.schema.field(name), extra.column(name))
    return table.select(out_schema.names)


def _sorted_selected(table: pa.Table, kept: pa.ChunkedArray | pa.Array | None) -> pa.Table:
    """The rows of ``table`` whose doc_id is in ``kept`` (all with None), in doc_id order: one take of the
    whole table (a take of each of its many chunks joined the chunks again every time: 2x the CPU), with the
    filter folded into its order (no copy before the sort)."""
    order = pc.sort_indices(table, sort_keys=[("doc_id", "ascending")])  # stable: byte order, as DuckDB's
    if kept is not None:
        keep = pc.is_in(table.column("doc_id"), value_set=kept)
        order = order.filter(keep.take(order))
    return table.take(order)


def _split_by_prefix(rows, directory: Path, start: int, width: int, buffer_bytes: int,
                     batch_rows: int) -> dict[int, Path]:
    """Append each row of ``rows`` (a function that starts an Arrow reader, or the IPC file of an earlier pass)
    to the IPC file of its range: the bytes of doc_id from ``start``, ``width`` of them, as one number (so that
    the ranges' order is doc_id's byte order, whatever the characters). Returns the files written, by range, in
    range order.

    Each batch is reordered once by range (a stable argsort of the numbers) and cut into one slice per range.
    A range's slices are held until they reach ``buffer_bytes`` and written as one batch (a batch joined and
    written costs per column, whatever its rows). Files stay open for the whole pass, at most 16**width
    of hex doc_ids (256: one pass per two characters). A second thread joins and writes the held batches
    while this one reads and cuts the next rows (at 10M documents the pass waited on the disk for a third of
    its time); at most EXPORT_SPLIT_PENDING_WRITES of them wait for it, and one thread writes every file, so
    each range's batches stay in order."""
    rows = pa.ipc.open_stream(rows) if isinstance(rows, Path) else rows()
    directory.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}  # touched by the writing thread only
    paths: dict[int, Path] = {}
    held: dict[int, list[pa.RecordBatch]] = {}
    held_bytes: dict[int, int] = {}
    pending: collections.deque[concurrent.futures.Future] = collections.deque()

    def append(key: int, slices: list[pa.RecordBatch]) -> None:  # on the writing thread
        if key not in writers:
            writers[key] = pa.ipc.new_stream(str(paths[key]), rows.schema, options=EXPORT_IPC_OPTIONS)
        writers[key].write_batch(pa.concat_batches(slices))

    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="export-split") as output:
            def write(key: int) -> None:
                paths.setdefault(key, directory / f"{key}.arrows")
                pending.append(output.submit(append, key, held.pop(key)))
                held_bytes[key] = 0
                while len(pending) > EXPORT_SPLIT_PENDING_WRITES or (pending and pending[0].done()):
                    pending.popleft().result()  # raises what the write raised

            for batch in _batches_of(rows, batch_rows):
                keys = _prefix_numbers(batch.column("doc_id"), start, width)
                order = np.argsort(keys, kind="stable")
                keys = keys[order]
                batch = batch.take(pa.array(order))
                row_bytes = batch.nbytes / batch.num_rows  # one estimate a batch: a slice's own nbytes costs 70 us
                cuts = np.flatnonzero(np.diff(keys)) + 1
                for first, end in zip(np.concatenate(([0], cuts)).tolist(),
                                      np.concatenate((cuts, [len(keys)])).tolist()):
                    key = int(keys[first])
                    held.setdefault(key, []).append(batch.slice(first, end - first))
                    held_bytes[key] = held_bytes.get(key, 0) + (end - first) * row_bytes
                    if held_bytes[key] >= buffer_bytes:
                        write(key)
            for key in list(held):
                write(key)
            while pending:
                pending.popleft().result()
    finally:
        closing = None  # every file closed even when one fails to (a full disk); the first error raised after
        for w in writers.values():  # the writing thread has finished: the with block waited for it
            try:
                w.close()
            except OSError as exc:
                closing = closing or exc
        rows.close()  # DuckDB's reader holds its connection until closed
    if closing is not None:
        raise closing
    return {key: paths[key] for key in sorted(paths)}


def _batches_of(reader, rows: int):
    """The batches of ``reader`` joined into batches of at least ``rows`` rows (the last may have fewer): a
    pass's cost per batch grows with its number of ranges. A batch that has them alone (DuckDB's, asked for
    ``rows``) is passed on as it is, not copied."""
    pending, count = [], 0
    for batch in reader:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            pending, count = [], 0
    if count:  # not a batch of no rows: the pass divides by a batch's rows
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _split_batch_rows(nbytes: int, rows: int, ranges: int = 16) -> int:
    """Rows of a split batch for documents of ``nbytes`` bytes in ``rows`` rows, cut into ``ranges`` by the first
    pass (see EXPORT_SPLIT_BATCH_ROWS and EXPORT_SPLIT_SLICE_ROWS)."""
    fewest, most = EXPORT_SPLIT_BATCH_ROWS
    row_bytes = max(nbytes, 1) / max(rows, 1)
    by_bytes = max(fewest, min(most, int(EXPORT_SPLIT_BATCH_BYTES / row_bytes)))
    by_ranges = min(ranges * EXPORT_SPLIT_SLICE_ROWS, max(fewest, int(EXPORT_SPLIT_BATCH_MAX_BYTES / row_bytes)))
    return max(by_bytes, by_ranges)


def _prefix_numbers(ids: pa.Array, start: int, width: int) -> np.ndarray:
    """For each string of ``ids``, its bytes start..start+width as one base-256 number (a missing byte counts
    as 0, so a shorter string comes first, as in byte order)."""
    ids = ids.cast(pa.large_binary())  # one layout (64-bit offsets) whatever the string type
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset:ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else \
        np.zeros(0, dtype=np.uint8)
    begins, lengths = offsets[:-1], np.diff(offsets)
    numbers = np.zeros(len(ids), dtype=np.int64)
    for i in range(width):
        present = lengths > start + i
        byte = np.zeros(len(ids), dtype=np.int64)
        byte[present] = data[begins[present] + start + i]
        numbers = numbers * 256 + byte
    return numbers


def _read_range(path: Path) -> pa.Table:
    """One range's IPC file as one table (its batches as chunks: taking from them costs less than joining them)."""
    with pa.ipc.open_stream(path) as reader:
        return reader.read_all()


# ----- staging: a kill at any point leaves the earlier export or the new one, and no litter -----------
def _staging_dir(out_dir: Path, kind: str, pid: int) -> Path:
    """``.<out>.tmp-<pid>`` (the export being built) or ``.<out>.old-<pid>`` (the one it replaces)."""
    return out_dir.parent / f".{out_dir.name}.{kind}-{pid}"


def _replace_dir(new: Path, out_dir: Path) -> None:
    """Put ``new`` at ``out_dir``. An earlier export is moved aside first, never deleted before the new one
    is in place: a kill between the two renames leaves it in ``.<out>.old-<pid>``, restored by the next run.

    ``new`` is on disk first, files and names, and so are the renames before the earlier export is deleted:
    after a power loss or a crash of the machine there is one whole export, the new or the old (which the next
    run puts back if the crash came between the renames), never a manifest beside a documents file the disk
    had not received yet."""
    _sync_tree(new)
    old = _staging_dir(out_dir, "old", os.getpid())
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(new, out_dir)
    fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def _sync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every directory, deepest first (a name is durable once its
    directory is)."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def recover_interrupted_export(out_dir: Path) -> None:
    """Clean up after an export to ``out_dir`` that was killed: drop its half-built directory and, if it was
    killed between moving the earlier export aside and renaming the new one into place, put the earlier
    one back. Staging directories of a process still running are left alone."""
    prefix = f".{out_dir.name}."
    if not out_dir.parent.is_dir():
        return
    for path in sorted(out_dir.parent.iterdir()):
        kind, _, pid = path.name.removeprefix(prefix).rpartition("-")
        if not path.name.startswith(prefix) or kind not in ("tmp", "old") or not pid.isdigit():
            continue
        if _pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists():
            os.replace(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _counts_by(con, sql: str) -> dict[str, int]:
    return {k: v for k, v in con.execute(sql).fetchall()}


def _opt_out(con, respect: bool) -> dict:
    """Which opt-out signals were honoured, how many documents the predicate chose that each excluded, and how
    many kept documents carry each (when not honoured) or were checked for them at all."""
    def per_signal(among: str) -> dict[str, int]:
        found = _counts_by(con, f"SELECT signal, count(DISTINCT doc_id) FROM opted_out "
                                f"WHERE doc_id IN (SELECT doc_id FROM {among}) GROUP BY 1")
        return {s: found.get(s, 0) for s in OPT_OUT_SIGNALS}

    excluded = per_signal("chosen") if respect else dict.fromkeys(OPT_OUT_SIGNALS, 0)
    return {
        "respected": respect,
        "signals": list(OPT_OUT_SIGNALS),
        "excluded_by_signal": excluded,
        "excluded": con.execute("SELECT count(*) FROM chosen WHERE doc_id NOT IN (SELECT doc_id FROM selected)"
                                ).fetchone()[0],
        "kept_with_signal": per_signal("selected"),
        # a reservation can only be honoured where the consent detector has looked
        "kept_documents_checked": con.execute(
            "SELECT count(DISTINCT l.doc_id) FROM coverage c JOIN located l ON l._file = c.file "
            "AND l._row >= c.row_start AND l._row < c.row_end "
            "WHERE c.detector = 'consent' AND l.doc_id IN (SELECT doc_id FROM selected)").fetchone()[0],
    }


def _summary(con, data_paths: list[Path]) -> dict:
    """What was kept: domains, languages (the language detector's tags), crawls or imports, and fetch dates.

    Read from the export's own documents files, which hold exactly the kept documents: each query over the
    store's documents with ``doc_id IN (SELECT doc_id FROM selected)`` was a semi-join of the whole store,
    and at 10M documents four of them spilled and took minutes."""
    kept = f"read_parquet({sql_list(data_paths)})"
    n_domains, first, last = con.execute(
        f"SELECT count(DISTINCT domain), min(fetched_at), max(fetched_at) FROM {kept}").fetchone()
    return {
        "domains": n_domains,
        "by_domain": _counts_by(con, f"SELECT coalesce(domain, '(none)'), count(*) FROM {kept} GROUP BY 1 "
                                     f"ORDER BY 2 DESC, 1 LIMIT {TOP_DOMAINS}"),
        "by_language": _counts_by(con, "SELECT substr(tag, 6), count(DISTINCT doc_id) FROM tags "
                                       "WHERE detector = 'language' AND category = 'language' "
                                       "AND starts_with(tag, 'lang_') AND doc_id IN (SELECT doc_id FROM selected) "
                                       "GROUP BY 1 ORDER BY 2 DESC, 1"),
        "by_crawl": _counts_by(con, f"SELECT crawl_id || ' (' || source || ')', count(*) FROM {kept} "
                                    f"GROUP BY 1 ORDER BY 2 DESC, 1"),
        "fetched_at": {"first": first.isoformat() if first else None, "last": last.isoformat() if last else None},
    }


def _columns(data_paths: list[Path]) -> list[dict]:
    con = duckdb.connect()
    return [{"name": name, "type": kind} for name, kind, *_ in
            con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_list(data_paths[:1])})").fetchall()]


def _manifest(con, store: Store, snapshot, where: str, selection: str, output: _DocumentFiles,
              respect_opt_out: bool = False, out_dir: Path | None = None, with_tags: bool = False) -> dict:
    """The manifest. Its paths are relative to ``out_dir`` (where the export will live, not its staging
    directory), or absolute when it is None: a manifest shared with others should not name the local disk."""
    def place(path: Path) -> str:
        path = Path(path).absolute()
        return str(path) if out_dir is None else os.path.relpath(path, out_dir)

    data_paths = output.paths

    total = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    kept = con.execute("SELECT count(*) FROM selected").fetchone()[0]
    excluded_tags = "FROM tags WHERE doc_id NOT IN (SELECT doc_id FROM selected)"
    kept_tags = "FROM tags WHERE doc_id IN (SELECT doc_id FROM selected)"
    counts = {
        "documents_in_store": total,
        "kept": kept,
        "excluded": total - kept,
        "excluded_by_category": _counts_by(con, f"SELECT category, count(DISTINCT doc_id) {excluded_tags} "
                                                "GROUP BY 1 ORDER BY 1"),
        "excluded_by_tag": _counts_by(con, f"SELECT category || ':' || tag, count(DISTINCT doc_id) {excluded_tags} "
                                           "GROUP BY 1 ORDER BY 1"),
        # excluded by the predicate, not flagged (consent tags are no flags), and not left out as opted out
        "excluded_without_tags": con.execute(
            "SELECT count(*) FROM doc_flags WHERE NOT flagged AND doc_id NOT IN (SELECT doc_id FROM selected)"
            + (" AND doc_id NOT IN (SELECT doc_id FROM opted_out)" if respect_opt_out else "")
        ).fetchone()[0],
        "kept_with_tags_by_tag": _counts_by(con, f"SELECT category || ':' || tag, count(DISTINCT doc_id) {kept_tags} "
                                                 "GROUP BY 1 ORDER BY 1"),
    }
    descriptions = _detector_descriptions(store)
    detectors = []
    for detector, tag_key, covered in con.execute(
        "SELECT c.detector, c.tag_key, count(DISTINCT l.doc_id) FROM coverage c "
        "JOIN located l ON l._file = c.file AND l._row >= c.row_start AND l._row < c.row_end "
        "WHERE l.doc_id IN (SELECT doc_id FROM selected) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall():
        d = dict(descriptions.get((detector, tag_key), {"detector": detector, "tag_key": tag_key}))
        d["kept_documents_covered"] = covered
        d["covers_all_kept"] = covered == kept
        detectors.append(d)
    inputs = [{"path": place(snapshot.root / e.path), "kind": e.kind, "rows": e.rows, "sha256": e.sha256}
              for kind in ("documents", "tags") for e in snapshot.entries(kind)]
    return {
        "manifest_version": MANIFEST_VERSION,
        "tool": {"name": TOOL_NAME, "version": provenance.__version__},
        "created_at": utcnow().isoformat(),
        "paths": "absolute" if out_dir is None else "relative",
        "store": place(store.root),
        "query": {"where": where, "sql": selection},
        "inputs": inputs,
        "outputs": [{"path": path.name, "rows": pq.ParquetFile(path).metadata.num_rows,
                     "bytes": path.stat().st_size, "sha256": output.sha256(path)} for path in data_paths],
        "counts": counts,
        "summary": _summary(con, data_paths),
        "columns": _columns(data_paths),
        "with_tags": with_tags,
        "detectors": detectors,
        "opt_out": _opt_out(con, respect_opt_out),
    }


def size_category(n: int) -> str:
    """Hugging Face's ``size_categories`` bucket for ``n`` rows."""
    return next(label for bound, label in SIZE_CATEGORIES if bound is None or n < bound)


def card_front_matter(m: dict, name: str) -> list[str]:
    """The YAML metadata block the Hugging Face Hub reads from a dataset's README.md (strings as JSON,
    which YAML reads as they are). ``license`` is left empty on purpose: only the user knows it."""
    kept = m["counts"]["kept"]
    summary = m.get("summary", {})
    languages = [code for code, n in summary.get("by_language", {}).items()
                 if code != "und" and n >= LANGUAGE_MIN_SHARE * kept]
    lines = ["---", f"pretty_name: {json.dumps(pretty_name(name))}",
             "license:  # fill in: the licence this data may be shared under (the pages belong to their "
             "publishers), e.g. other"]
    if languages:
        lines += ["language:", *(f"- {json.dumps(code)}" for code in languages)]
    lines += ["size_categories:", f"- {json.dumps(size_category(kept))}",
              "source_datasets:", "- original",
              "tags:", "- provenance-guard",
              "configs:", "- config_name: default", f"  data_files: {data_files(m)}", "---", ""]
    return lines


def data_files(m: dict) -> str:
    """The export's documents file, or a glob of its shards."""
    outputs = m["outputs"]
    return outputs[0]["path"] if len(outputs) == 1 and outputs[0]["path"] == "documents.parquet" else SHARD_GLOB


def pretty_name(name: str) -> str:
    return f"{name}: web documents vetted by {TOOL_NAME}"


def dataset_card(m: dict, name: str = "export") -> str:
    """README.md of an export: front matter, then the selection, exclusions, what was kept, columns, detectors."""
    c = m["counts"]
    summary = m.get("summary", {})
    lines = [
        *card_front_matter(m, name),
        f"# Dataset card: {name}", "",
        f"Exported by {m['tool']['name']} {m['tool']['version']} on {m['created_at']} from the store "
        f"`{m['store']}`{' (relative to this directory)' if m.get('paths') == 'relative' else ''}.", "",
        "## Selection", "",
        f"- Predicate over `documents JOIN doc_flags`: `{m['query']['where']}`",
        f"- Kept **{c['kept']}** of {c['documents_in_store']} documents; excluded {c['excluded']}.",
        (f"- Data: `documents.parquet` (sha256 `{m['outputs'][0]['sha256'][:16]}…`); full details in `manifest.json`."
         if data_files(m) == "documents.parquet" else
         f"- Data: {len(m['outputs'])} files `{SHARD_GLOB}` of at most {max(o['rows'] for o in m['outputs'])} rows, "
         f"in doc_id order one after another; each one's sha256 in `manifest.json`, with full details."),
        "", "## Why documents were excluded", "",
    ]
    # Tags that flag (the reasons a default export leaves a document out) first; descriptive ones after.
    flagging = {k: v for k, v in c["excluded_by_tag"].items()
                if k.split(":", 1)[0] not in NOT_FLAG_CATEGORIES and k not in NOT_FLAG_TAGS}
    descriptive = {k: v for k, v in c["excluded_by_tag"].items() if k not in flagging}
    if flagging:
        lines += ["| category:tag | documents |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in flagging.items())]
        lines.append("\nA document may carry several tags, so the rows can add up to more than the excluded count.")
    else:
        lines.append("No excluded document carries a flagging tag.")
    if descriptive:
        lines.append("\nDescriptive tags (they never flag) on excluded documents: "
                     + ", ".join(f"{k} {v}" for k, v in descriptive.items()) + ".")
    if c["excluded_without_tags"]:
        lines.append(f"\n{c['excluded_without_tags']} untagged documents were excluded by the predicate itself.")
    if summary:
        lines += ["", "## What was kept", ""]
        dates = summary["fetched_at"]
        lines.append(f"- Fetched from {dates['first'] or 'unknown'} to {dates['last'] or 'unknown'}.")
        lines.append("- Sources (crawl or import, and kind): "
                     + (", ".join(f"{k} {v}" for k, v in summary["by_crawl"].items()) or "none") + ".")
        if summary["by_language"]:
            lines.append("- Languages (language detector): "
                         + ", ".join(f"{k} {v}" for k, v in summary["by_language"].items()) + ".")
        shown = list(summary["by_domain"].items())[:10]
        lines += ["", f"{summary['domains']} domain(s){'; the largest' if summary['domains'] > len(shown) else ''}:",
                  "", "| domain | documents |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in shown)]
    if m.get("columns"):
        lines += ["", f"## Columns of {data_files(m)}", ""]
        if m.get("with_tags"):
            lines.append(f"With `--with-tags`: {', '.join(f'`{t}`' for t in TAG_COLUMNS)} are each document's "
                         f"row of the `doc_flags` view.\n")
        lines += ["| column | type |", "| --- | --- |",
                  *(f"| {col['name']} | `{col['type']}` |" for col in m["columns"])]
    lines += ["", "## Text-and-data-mining opt-outs", ""]
    o = m.get("opt_out")
    if o and o["respected"]:
        lines.append(f"Publishers' opt-outs were honoured: documents tagged {', '.join(f'`{s}`' for s in o['signals'])} "
                     f"were left out ({o['excluded']} documents the selection chose).")
        lines += ["", "| signal | documents excluded |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in o["excluded_by_signal"].items()]
    elif o:
        lines.append(f"Publishers' opt-outs ({', '.join(f'`{s}`' for s in o['signals'])}) were NOT honoured "
                     f"(export without `--respect-opt-out`).")
        reserved = {k: v for k, v in o["kept_with_signal"].items() if v}
        if reserved:
            lines.append("Kept documents that carry one: " + ", ".join(f"{k} {v}" for k, v in reserved.items()) + ".")
    if o and o["kept_documents_checked"] < c["kept"]:
        lines.append(f"\n{c['kept'] - o['kept_documents_checked']} of {c['kept']} kept documents were not checked "
                     f"by the consent detector: their opt-outs are unknown (run `provenance tag`).")
    lines += ["", "## Detectors that vetted it", ""]
    if m["detectors"]:
        lines += ["| detector | version | plugin | config | kept documents covered |", "| --- | --- | --- | --- | --- |"]
        for d in m["detectors"]:
            lines.append(f"| {d['detector']} | {d.get('detector_version', '?')} | {d.get('plugin', '?')} "
                         f"{d.get('plugin_version', '')} | `{d.get('config_hash', d['tag_key'])}` | "
                         f"{d['kept_documents_covered']} of {c['kept']} |")
    else:
        lines.append("No detector has run over these documents: they are unvetted.")
    return "\n".join(lines) + "\n"
