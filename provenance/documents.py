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


@dataclass
class DocumentSink:
    """Buffers document rows and commits them in chunks; skips documents already stored.

    ``flush_rows``/``flush_bytes`` bound both memory and how much a kill can lose.
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

    def add(self, row: dict) -> bool:
        """Queue a row; False (and nothing stored) when the store already has this doc_id."""
        if row["doc_id"] in self.known_ids:
            self.skipped_existing += 1
            return False
        self.known_ids.add(row["doc_id"])
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
            entry = self.run.write("documents", table, safe_name(self.crawl_id),
                                   meta={"crawl_id": self.crawl_id})
            add.append(entry)
            self.files.append(entry)
            self.written += len(self._rows)
        for kind, rows, subdir, meta in self.extra_commit:
            if rows:
                add.append(self.run.write(kind, pa.Table.from_pylist(rows), subdir, meta=meta))
        self.run.commit(add=add)
        self._rows, self._bytes, self.extra_commit = [], 0, []
