"""Building document rows and writing them to the store: shared by crawl, WARC and file ingest.

``build_document`` turns one body plus its provenance into a row of the
documents schema (hashes, extraction, domains). ``DocumentSink`` buffers rows,
drops documents the store already holds, and writes and commits them in
chunks, so a killed run keeps every committed chunk and a rerun stores nothing
twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from provenance import extract as extraction
from provenance.store import FileEntry, Run, Snapshot, safe_name

SOURCES = ("crawl", "warc", "wet", "jsonl", "parquet")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_doc_id(url: str, raw_sha256: str) -> str:
    """Same bytes at the same URL are the same document, whenever and however they arrived."""
    return hashlib.sha256(f"{url}\0{raw_sha256}".encode()).hexdigest()[:32]


@lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract

    # suffix_list_urls=() keeps tldextract on its bundled list: no network, ever.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65536)
def domains_of(url: str | None) -> tuple[str | None, str | None]:
    """(host, registered domain) of a URL; IP addresses are their own registered domain."""
    if not url:
        return None, None
    try:
        host = (urlsplit(url).hostname or "").lower() or None
    except ValueError:
        return None, None
    if host is None:
        return None, None
    parts = _tld_extractor()(host)
    registered = getattr(parts, "top_domain_under_public_suffix", None)
    if registered is None:  # tldextract < 5.3
        registered = parts.registered_domain
    return host, registered or host


def header_value(headers: Iterable[tuple[str, str]] | None, name: str) -> str | None:
    name = name.lower()
    for key, value in headers or ():
        if key.lower() == name:
            return value
    return None


def build_document(
    *,
    url: str,
    body: bytes | None,
    source: str,
    crawl_id: str,
    run_id: str,
    fetched_at: datetime | None = None,
    final_url: str | None = None,
    http_status: int | None = None,
    headers: list[tuple[str, str]] | None = None,
    content_type: str | None = None,
    text: str | None = None,
    html: str | None = None,
    title: str | None = None,
    metadata: dict | None = None,
    extractor: str | None = None,
    extracted: extraction.Extracted | None = None,
    **provenance,
) -> dict:
    """One documents-schema row. Give ``body`` (bytes as received), or ``html``/``text`` (ingest).

    When only ``text`` is given the document has no raw body: ``raw`` holds the
    UTF-8 text so that raw_sha256 still pins exactly what was stored. ``extractor``
    names one of provenance.extract.EXTRACTORS (None: its default). ``extracted``: the result of
    ``provenance.extract.extract`` on this body, when it was computed elsewhere (a crawl's
    extraction processes, which import only the extractor).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown document source {source!r}")
    if content_type is None:
        content_type = header_value(headers, "content-type")
    note = None
    if body is None:
        if html is not None:
            body = html.encode("utf-8")
            content_type = content_type or "text/html; charset=utf-8"
        elif text is not None:
            body = text.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        else:
            raise ValueError("a document needs a body, html or text")
    if text is None:
        if extracted is None:
            extracted = extraction.extract(body, content_type, url=final_url or url, extractor=extractor)
        text, charset = extracted.text, extracted.charset
        title = title or extracted.title
        extractor, extractor_version, note = extracted.extractor, extracted.extractor_version, extracted.note
    else:
        charset, extractor, extractor_version = "utf-8", "none", None
    raw_sha256 = sha256_hex(body)
    host, registered = domains_of(final_url or url)
    if fetched_at is not None and fetched_at.tzinfo is None:
        fetched_at = fetched_at.replace(tzinfo=timezone.utc)
    meta = dict(metadata or {})
    if note:
        meta["extraction_note"] = note
    return {
        "doc_id": make_doc_id(url, raw_sha256),
        "url": url,
        "final_url": final_url or url,
        "domain": host,
        "registered_domain": registered,
        "crawl_id": crawl_id,
        "run_id": run_id,
        "source": source,
        "fetched_at": fetched_at,
        "http_status": http_status,
        "headers": [{"name": k, "value": v} for k, v in headers] if headers is not None else None,
        "content_type": extraction.media_type(content_type),
        "charset": charset,
        "raw": body,
        "raw_sha256": raw_sha256,
        "raw_length": len(body),
        "text": text,
        "text_sha256": sha256_hex(text.encode("utf-8")) if text is not None else None,
        "title": title,
        "extractor": extractor,
        "extractor_version": extractor_version,
        "etag": header_value(headers, "etag"),
        "last_modified": header_value(headers, "last-modified"),
        "metadata": json.dumps(meta, ensure_ascii=False, default=str) if meta else None,
        **provenance,
    }


def existing_doc_ids(snapshot: Snapshot) -> set[str]:
    """Every doc_id in the store (reads only the doc_id column)."""
    ids: set[str] = set()
    for path in snapshot.paths("documents"):
        ids.update(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
    return ids


class KnownCaptures:
    """(doc_id, fetched_at) of every capture the store holds: documents and recorded re-captures.

    A crawl's own fetch rows are left out: they would make the set grow with every re-crawl, and a crawl's
    fetch and an import's capture at the very same microsecond are no real case (the versions view counts such
    a pair once anyway).

    Read from the store the first time an import meets a document it already holds (an import of new pages
    never reads it), so importing the same WARC twice records each capture once.
    """

    def __init__(self, store):
        self.store = store
        self._seen: set | None = None

    def is_new(self, doc_id: str, fetched_at: datetime) -> bool:
        """True (and noted) when the store has no capture of doc_id at fetched_at."""
        if self._seen is None:
            self._seen = self._load()
        key = (doc_id, fetched_at)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def stored(self, keys) -> None:
        """Captures of documents just committed (once loaded, the set follows the store)."""
        if self._seen is not None:
            self._seen.update(keys)

    def _load(self) -> set:
        snapshot, seen = self.store.snapshot(), set()
        for path in snapshot.paths("documents"):
            t = pq.read_table(path, columns=["doc_id", "fetched_at"])
            seen.update(zip(t.column("doc_id").to_pylist(), t.column("fetched_at").to_pylist()))
        for path in snapshot.paths("fetches"):
            t = pq.read_table(path, columns=["doc_id", "fetched_at", "outcome"])
            t = t.filter(pc.equal(t.column("outcome"), "recaptured"))
            seen.update(zip(t.column("doc_id").to_pylist(), t.column("fetched_at").to_pylist()))
        return seen


@dataclass
class DocumentSink:
    """Buffers document rows and commits them in chunks; skips documents already stored.

    ``flush_rows``/``flush_bytes`` bound both memory and how much a kill can lose. With ``captures``
    (imports), a dated row whose doc_id is already stored, at a time the store has no capture of it at, becomes
    a ``fetches`` row (outcome ``recaptured``): a capture of those bytes at its own time, which places the
    document in the ``versions`` view (an older capture imported after a later one) and shows a page that changed
    and changed back (A, B, A). A crawl records its own fetch rows.
    """

    run: Run
    crawl_id: str
    known_ids: set[str]
    flush_rows: int = 5000
    flush_bytes: int = 64 * 1024 * 1024
    written: int = 0
    skipped_existing: int = 0
    files: list[FileEntry] = field(default_factory=list)
    _rows: list[dict] = field(default_factory=list)
    _bytes: int = 0
    extra_commit: list = field(default_factory=list)  # (kind, rows, subdir, meta) committed with the next chunk
    captures: KnownCaptures | None = None  # given (imports): record re-captures of stored documents
    _recaptures: list[dict] = field(default_factory=list)
    _pending: set = field(default_factory=set)  # (doc_id, fetched_at) of the rows not committed yet

    def __post_init__(self):
        # Documents other runs commit while this one works are added to known_ids as the run reads them.
        self.run.known_doc_ids = self.known_ids

    def add(self, row: dict) -> bool:
        """Queue a row; False (and no document stored) when the store already has this doc_id."""
        if row["doc_id"] in self.known_ids:
            self.skipped_existing += 1
            key = (row["doc_id"], row.get("fetched_at"))
            if self.captures is not None and key[1] is not None and key not in self._pending \
                    and self.captures.is_new(*key):
                self._recaptures.append({
                    "run_id": self.run.run_id, "crawl_id": self.crawl_id, "url": row["url"],
                    "final_url": row.get("final_url"), "fetched_at": row["fetched_at"],
                    "http_status": row.get("http_status"), "outcome": "recaptured", "doc_id": row["doc_id"],
                    "bytes": row.get("raw_length"), "source": row.get("source")})
                if len(self._recaptures) >= self.flush_rows:
                    self.flush()
            return False
        self.known_ids.add(row["doc_id"])
        if self.captures is not None:
            self._pending.add((row["doc_id"], row.get("fetched_at")))
        self._rows.append(row)
        self._bytes += row.get("raw_length") or 0
        if len(self._rows) >= self.flush_rows or self._bytes >= self.flush_bytes:
            self.flush()
        return True

    def add_side_rows(self, kind: str, rows: list[dict], subdir: str, meta: dict | None = None) -> None:
        """Rows of another kind (e.g. fetches, tags) to commit in the same log entry as the next document chunk."""
        self.extra_commit.append((kind, rows, subdir, meta))

    def flush(self) -> None:
        add: list[FileEntry] = []
        if self._rows:
            # Every key of every row: from_pylist alone takes the columns of the first row only,
            # silently dropping e.g. a previous_doc_id that only later rows carry.
            columns = list(dict.fromkeys(key for row in self._rows for key in row))
            table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in self._rows])
            add.append(self.run.write("documents", table, safe_name(self.crawl_id), meta={"crawl_id": self.crawl_id}))
        if self._recaptures:
            self.extra_commit.append(("fetches", self._recaptures, safe_name(self.crawl_id), None))
        for kind, rows, subdir, meta in self.extra_commit:
            if rows:
                add.append(self.run.write(kind, pa.Table.from_pylist(rows), subdir, meta=meta))
        # What was committed: without documents another run stored meanwhile (Run.commit).
        documents = [e for e in self.run.commit(add=add) if e.kind == "documents"]
        self.files.extend(documents)
        self.written += sum(e.rows for e in documents)
        self.skipped_existing += len(self._rows) - sum(e.rows for e in documents)
        if self.captures is not None:
            self.captures.stored(self._pending)
        self._rows, self._bytes, self.extra_commit, self._recaptures, self._pending = [], 0, [], [], set()
