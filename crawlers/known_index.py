"""Every version of every URL the store holds, sorted by host on disk, so a crawl's start reads only its sites.

A crawl starts by working out the latest version the store holds of each URL on its sites (``KnownVersions`` in
``crawlers/session.py``). Over the store's files that query reads the URL column of every document and capture
fetch (6 to 8 s at 10M documents for a crawl of one site), because a store's files mix sites: a file of 5,000
imported pages holds hundreds of them, so no choice of files avoids reading most of the store.

This index keeps, for each (URL, doc_id), the latest time the store saw that document at that URL (documents and
capture fetches) and the document's validators, in Parquet files ("runs") each sorted by the URL's host written
backwards (``com.example.www``: a site and its subdomains are one range) in row groups of ``ROW_GROUP_ROWS``.
DuckDB reads only the row groups whose host range meets the crawl's sites (their min/max statistics), then the
crawl's query adds the files committed since the index was written and works out each URL's latest version over
all of it, as over the files themselves. Every version is kept, not only each URL's latest: a later fetch may
confirm an older document of a URL (a page that went A, B, A), and the crawl then needs that document's
validators.

Upkeep, as a log-structured merge: once the rows of the files the index does not cover reach an eighth of its
rows, the crawl that finds them writes them as one more run (DuckDB groups and sorts them under ``MEMORY_MB``,
spilling); once there are ``MAX_RUNS`` runs, the next write merges them all and the new files into one. A row is
so rewritten about once per 2.6-fold growth of the store, not at every eighth. Like the doc_id index
(``provenance/doc_index.py``) it is derived data, used only when every file it names is live or was removed by a
commit the snapshot knows (documents and fetches are only added; compaction keeps every row), written under
temporary names, the metadata (``<log seq>-<rows>.json``) last; runs no newer metadata names are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from provenance import doc_index
from provenance.sql import CAPTURE_OUTCOMES, sql_list, sql_string
from provenance.store import Snapshot, atomic_write_text, make_dirs

log = logging.getLogger("provenance.crawl")

INDEX_DIR = Path("_index") / "url_versions"
FORMAT = 1
MIN_ROWS = 100_000  # no index for fewer uncovered rows than this: small stores read their files
REWRITE_SHARE = 8  # a new run once the uncovered rows are 1/REWRITE_SHARE of the index's
MAX_RUNS = 8  # with this many runs, the next write merges them into one
ROW_GROUP_ROWS = 8_192  # a crawl of one site reads about one row group of its pages' neighbours on each side
MEMORY_MB = 512  # DuckDB's limit while it writes an index (it spills beyond)
FILE_KINDS = ("documents", "fetches")

# The host of a URL as urlsplit(url).hostname gives it (after any user info, before any port, without an IPv6
# literal's brackets), lower case and without a trailing dot.
URL_HOST_SQL = (r"trim(lower(regexp_extract(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?(\[[^\]/?#]*\]|[^:/?#]*)',"
                r" 1)), '[].')")
# That host's labels backwards: a site's URLs are those whose key is the site's key or starts with it and a dot.
HOST_KEY_SQL = f"array_to_string(list_reverse(string_split({URL_HOST_SQL}, '.')), '.')"
_EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
_CAPTURES = ", ".join(sql_string(o) for o in CAPTURE_OUTCOMES)

# Every version of every URL: the old index's rows (the view ``indexed``), and the documents and capture fetches of
# the files it does not cover (the views ``documents`` and ``fetches``).
_VERSIONS_SQL = f"""
SELECT {HOST_KEY_SQL} AS host_key, url, doc_id, max(seen_at) AS seen_at,
       any_value(etag) FILTER (WHERE documented) AS etag,
       any_value(last_modified) FILTER (WHERE documented) AS last_modified,
       any_value(raw_sha256) FILTER (WHERE documented) AS raw_sha256,
       any_value(text_sha256) FILTER (WHERE documented) AS text_sha256,
       bool_or(documented) AS documented
FROM (
    SELECT url, doc_id, seen_at, etag, last_modified, raw_sha256, text_sha256, documented FROM indexed
    UNION ALL
    SELECT url, doc_id, coalesce(fetched_at, {_EPOCH}), etag, last_modified, raw_sha256, text_sha256, true
    FROM documents
    UNION ALL
    SELECT url, doc_id, coalesce(fetched_at, {_EPOCH}), NULL, NULL, NULL, NULL, false
    FROM fetches WHERE doc_id IS NOT NULL AND outcome IN ({_CAPTURES})
)
GROUP BY url, doc_id
ORDER BY host_key, url, doc_id
"""

_EMPTY_INDEXED_SQL = """
SELECT NULL::VARCHAR AS host_key, NULL::VARCHAR AS url, NULL::VARCHAR AS doc_id, NULL::TIMESTAMPTZ AS seen_at,
       NULL::VARCHAR AS etag, NULL::VARCHAR AS last_modified, NULL::VARCHAR AS raw_sha256,
       NULL::VARCHAR AS text_sha256, NULL::BOOLEAN AS documented
WHERE false
"""


@dataclass
class UrlIndex:
    """An index as read: its runs (Parquet files), the store files it covers, its rows (of every run)."""

    runs: list[Path]
    files: frozenset[str]
    rows: int
    name: str


def site_key(site: str) -> str:
    """A site's host key: its labels backwards (``www.example.com`` -> ``com.example.www``)."""
    return ".".join(reversed(site.lower().strip(".").split(".")))


def sites_filter(sites: list[str] | None) -> str:
    """An SQL condition on ``host_key`` that holds for every URL on one of ``sites`` (None: every URL), as ranges
    DuckDB can answer from row-group statistics: a site's key itself, and every key starting with it and a dot
    (``/`` follows ``.``; the range also holds e.g. ``com.example-x``, which the crawl's own scope drops)."""
    if sites is None:
        return "true"
    keys = sorted({site_key(s) for s in sites})
    if not keys:
        return "false"
    return " OR ".join(f"(host_key >= {sql_string(k)} AND host_key < {sql_string(k + '/')})" for k in keys)


def open_index(snapshot: Snapshot) -> UrlIndex | None:
    """The newest index this snapshot can use; None when there is none."""
    directory = snapshot.root / INDEX_DIR
    try:
        metas = sorted((p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith(".")),
                       reverse=True)
    except FileNotFoundError:
        return None
    for meta_path in metas:
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT or not doc_index.covers_live_files(meta["files"], snapshot, FILE_KINDS):
                continue
            runs = [directory / run for run in meta["runs"]]
            if not all(run.is_file() for run in runs):
                continue  # replaced by a newer index meanwhile: that one is usable, or the files are read
            return UrlIndex(runs, frozenset(meta["files"]), int(meta["rows"]), meta_path.name.split(".")[0])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(f"{meta_path}: URL version index unreadable ({exc}); reading the store's files instead")
    return None


def uncovered(snapshot: Snapshot, index: UrlIndex | None) -> dict[str, list[Path]]:
    """The document and fetch files ``index`` does not cover (every one without an index)."""
    return {kind: [snapshot.root / e.path for e in snapshot.entries(kind) if index is None or e.path not in index.files]
            for kind in FILE_KINDS}


def uncovered_rows(snapshot: Snapshot, index: UrlIndex | None) -> int:
    return sum(e.rows for kind in FILE_KINDS for e in snapshot.entries(kind)
               if index is None or e.path not in index.files)


def should_rewrite(index: UrlIndex | None, rows: int) -> bool:
    return rows >= max(MIN_ROWS, (index.rows if index is not None else 0) // REWRITE_SHARE)


def indexed_view(con, index: UrlIndex | None, sites: list[str] | None) -> None:
    """The view ``indexed`` on ``con``: the index's rows on ``sites`` (None: all of them); empty without one."""
    if index is None:
        con.execute(f"CREATE OR REPLACE TEMP VIEW indexed AS {_EMPTY_INDEXED_SQL}")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW indexed AS SELECT * FROM read_parquet({sql_list(index.runs)}) "
                    f"WHERE {sites_filter(sites)}")


def connect_uncovered(snapshot: Snapshot, index: UrlIndex | None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose views ``documents`` and ``fetches`` are the files ``index`` does not cover."""
    from provenance.sql import parquet_view

    con = duckdb.connect()
    for kind, paths in uncovered(snapshot, index).items():
        parquet_view(con, kind, kind, paths)
    return con


def write_index(snapshot: Snapshot, old: UrlIndex | None, scratch: Path) -> UrlIndex | None:
    """Write the versions of the files ``old`` does not cover as a new run beside ``old``'s (with ``MAX_RUNS``
    runs already, merged with all of them into one), with DuckDB spilling under ``scratch``; the new index, or None
    when it could not be written (a full disk: logged, the crawl goes on without it)."""
    directory = snapshot.root / INDEX_DIR
    make_dirs(directory)
    doc_index.drop_stale_temps(directory)
    merge = old is not None and len(old.runs) >= MAX_RUNS
    kept = [] if old is None or merge else list(old.runs)
    rows_before, rows_new = (old.rows if old is not None else 0), uncovered_rows(snapshot, old)
    name = f"{snapshot.log_seq:020d}-{rows_before + rows_new:012d}"
    tmp = directory / f".{name}.parquet.{os.getpid()}.tmp"
    log.info(f"writing the URL version index: {'all runs merged with ' if merge else ''}"
             f"{rows_new:,} rows of files it does not cover")
    con = connect_uncovered(snapshot, old)
    try:
        indexed_view(con, old if merge else None, None)
        scratch.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET memory_limit = '{MEMORY_MB}MB'")
        con.execute("SET temp_directory = ?", [str(scratch / "index-spill")])
        con.execute("SET preserve_insertion_order = true")  # the file keeps the ORDER BY: ranges for the statistics
        con.execute(f"COPY ({_VERSIONS_SQL}) TO {sql_string(str(tmp))} "
                    f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
        new_rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_string(str(tmp))})").fetchall()[0][0]
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, directory / f"{name}.parquet")
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, duckdb.IOException, duckdb.OutOfMemoryException)):
            log.warning(f"{snapshot.root}: could not write the URL version index ({exc}); crawls read the store's "
                        f"files until one can")
            return None
        raise
    finally:
        con.close()
    runs = kept + [directory / f"{name}.parquet"]
    rows = new_rows + (rows_before if kept else 0)
    files = sorted(e.path for kind in FILE_KINDS for e in snapshot.entries(kind))
    meta = {"format": FORMAT, "log_seq": snapshot.log_seq, "rows": rows, "runs": [r.name for r in runs],
            "files": files, "written_at_unix": time.time()}
    atomic_write_text(directory / f"{name}.json", json.dumps(meta))
    # Older metadata and the runs the new index no longer names go. A crawl that opened an older index keeps
    # reading its runs (a deleted file stays readable to a process that has it open); one that had not opened a
    # run yet reads the store's files instead (``load_known``).
    doc_index.drop_older(directory, name, keep=frozenset(r.name for r in runs))
    return UrlIndex(runs, frozenset(files), rows, name)


def verify(snapshot: Snapshot) -> list[str]:
    """Problems of the index the snapshot would use (one line each): rows out of host order, a (URL, doc_id) of the
    files it covers that it lacks, or one (or a document's validators) the store does not hold. Reads every
    document and fetch file (as ``store check`` reads every file). The times it keeps are not compared: after a
    compaction the latest capture of a version may be in a file the index no longer names."""
    index = open_index(snapshot)
    if index is None:
        return []
    from provenance.sql import parquet_view

    fix = f"delete {snapshot.root / INDEX_DIR} (the next crawl writes a new one)"
    where = snapshot.root / INDEX_DIR / f"{index.name}.json"
    con = duckdb.connect()
    try:
        # Per kind, a view of every file and one of the files the index covers.
        for kind in FILE_KINDS:
            parquet_view(con, kind, kind, snapshot.paths(kind))
            parquet_view(con, f"covered_{kind}", kind, [snapshot.root / e.path for e in snapshot.entries(kind)
                                                        if e.path in index.files])

        def keys(views: str) -> str:  # the (URL, doc_id) pairs of the views named ``<views>documents``, ``...fetches``
            return (f"SELECT url, doc_id FROM {views}documents UNION SELECT url, doc_id FROM {views}fetches "
                    f"WHERE doc_id IS NOT NULL AND outcome IN ({_CAPTURES})")

        validators = "doc_id, etag, last_modified, raw_sha256, text_sha256"
        con.execute(f"CREATE TEMP TABLE stored AS SELECT * FROM read_parquet({sql_list(index.runs)})")
        missing = con.execute(f"SELECT count(*) FROM ({keys('covered_')} "
                              f"EXCEPT SELECT url, doc_id FROM stored)").fetchall()[0][0]
        extra = con.execute(f"SELECT count(*) FROM (SELECT url, doc_id FROM stored "
                            f"EXCEPT ({keys('')}))").fetchall()[0][0]
        wrong = con.execute(f"SELECT count(*) FROM (SELECT {validators} FROM stored WHERE documented "
                            f"EXCEPT SELECT {validators} FROM documents)").fetchall()[0][0]
        unordered = con.execute(
            f"SELECT count(*) FROM (SELECT host_key, lag(host_key) OVER (PARTITION BY filename ORDER BY "
            f"file_row_number) AS before FROM read_parquet({sql_list(index.runs)}, filename = true, "
            f"file_row_number = true)) WHERE host_key < before"
        ).fetchall()[0][0]
    finally:
        con.close()
    problems = []
    if unordered:
        problems.append(f"{where}: the rows of its runs are not sorted by host; {fix}")
    if missing:
        problems.append(f"{where}: lacks {missing} URL versions of the document and fetch files it covers; {fix}")
    if extra or wrong:
        problems.append(f"{where}: holds {extra + wrong} URL versions the store does not; {fix}")
    return problems
