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
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from provenance import doc_index
from provenance import extract as extraction
from provenance.arrays import unique_sorted
from provenance.doc_index import FrozenKeys, bitmap_bits, mark_prefixes
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
    return host, _registered_domain(host)


@lru_cache(maxsize=65536)
def _registered_domain(host: str) -> str:
    """Cached by host as well as by URL: a crawl's or an import's URLs are all different, their hosts are not."""
    parts = _tld_extractor()(host)
    registered = getattr(parts, "top_domain_under_public_suffix", None)
    if registered is None:  # tldextract < 5.3
        registered = parts.registered_domain
    return registered or host


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


_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _hex_key(doc_id) -> bytes | None:
    """The 16 bytes of a doc_id of 32 lower-case hex digits (what ``make_doc_id`` makes), else None."""
    if isinstance(doc_id, str) and len(doc_id) == 32:
        try:
            key = bytes.fromhex(doc_id)
        except ValueError:
            return None
        if key.hex() == doc_id:  # fromhex also takes upper case and spaces
            return key
    return None


def _hex_keys(doc_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 rows of 16 bytes, one per doc_id of 32 lower-case hex digits; mask of those doc_ids), vectorised."""
    doc_ids = doc_ids.cast(pa.large_string())
    n = len(doc_ids)
    offsets = np.frombuffer(doc_ids.buffers()[1], np.int64)[doc_ids.offset:doc_ids.offset + n + 1]
    data = np.frombuffer(doc_ids.buffers()[2], np.uint8) if doc_ids.buffers()[2] else np.zeros(0, np.uint8)
    hexed = np.diff(offsets) == 32
    if doc_ids.null_count:
        hexed &= doc_ids.is_valid().to_numpy(zero_copy_only=False)
    nibbles = _HEX_VALUE[data[offsets[:-1][hexed, None] + np.arange(32)]]
    valid = (nibbles < 16).all(axis=1)
    hexed[hexed] = valid
    nibbles = nibbles[valid]
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2], hexed


class CompactKeySet:
    """A set of fixed-width byte keys in about ``width`` bytes each, for sets that grow with the corpus.

    The keys are a sorted numpy array (dtype ``S<width>``) plus a Python set of the keys added since the last
    merge; every ``MERGE_AT`` additions the set is merged into the array (``np.insert``: linear, no sort).
    A Python set of 10M doc_ids takes about 1.2 GB; this takes 160 MB (16-byte keys), plus 2x that while
    merging. With ``base`` (a store's doc_id index, memory-mapped: ``provenance.doc_index``), the keys there
    are members too and only the others are kept here. numpy drops trailing zero bytes of an ``S`` value, so
    keys are kept without them (still one value per key: all keys have the same width).
    """

    MERGE_AT = 1 << 18

    def __init__(self, width: int, base: FrozenKeys | None = None):
        self.width = width
        self.base = base
        self._sorted = np.zeros(0, dtype=f"S{width}")
        self._recent: set[bytes] = set()
        self._index_bits = 0
        self._shift = 32
        self._bits = bytearray(1)

    def _index(self, keys: np.ndarray) -> None:
        """Mark ``keys`` (of the sorted array) in a bitmap of their first 32 bits' top bits, about 8 bits a
        key: a key whose bit is clear is not there, without a binary search (most new keys)."""
        want = bitmap_bits(len(self._sorted))
        if want > self._index_bits:  # grown: a bigger bitmap, of every key
            self._index_bits, self._shift = want, 32 - want
            self._bits = bytearray(1 << (want - 3))
            keys = self._sorted
        mark_prefixes(np.frombuffer(self._bits, np.uint8), keys, self.width, self._shift)

    def __len__(self) -> int:
        self._merge()  # the recent keys may repeat sorted ones (add does not look there)
        return len(self._sorted) + (len(self.base) if self.base is not None else 0)

    def __contains__(self, key: bytes) -> bool:
        if self.base is not None and key in self.base:
            return True
        h = int.from_bytes(key[:4], "big") >> self._shift
        key = key.rstrip(b"\0")
        if key in self._recent:
            return True
        if not (self._bits[h >> 3] >> (h & 7)) & 1:
            return False
        i = int(self._sorted.searchsorted(key))
        return i < len(self._sorted) and self._sorted[i] == key

    def add(self, key: bytes) -> None:
        self._recent.add(key.rstrip(b"\0"))
        if len(self._recent) >= self.MERGE_AT:
            self._merge()

    def add_rows(self, rows: np.ndarray) -> None:
        """Add keys given as uint8 rows of ``width`` bytes (vectorised; duplicates and known keys dropped)."""
        if len(rows) == 0:
            return
        keys = unique_sorted(np.ascontiguousarray(rows, dtype=np.uint8).view(f"S{self.width}").reshape(-1))
        if self.base is not None:
            keys = keys[~self.base.known(keys)]
        if len(self._sorted):
            where = self._sorted.searchsorted(keys)
            new = self._sorted[np.minimum(where, len(self._sorted) - 1)] != keys
            keys = keys[new]
            self._sorted = np.insert(self._sorted, where[new], keys)
        else:  # the first (a whole store's doc_ids at a run's start): already sorted
            self._sorted = keys
        self._index(keys)
        if self._recent:
            self._recent -= set(keys.tolist())  # tolist() gives them without trailing zero bytes, as kept there

    def _merge(self) -> None:
        if self._recent:
            keys, self._recent = np.array(list(self._recent), dtype=f"S{self.width}"), set()
            self.add_rows(keys.view(np.uint8).reshape(-1, self.width))

    def own_keys(self) -> np.ndarray:
        """The keys kept here (not in ``base``), sorted, dtype ``S<width>``."""
        self._merge()
        return self._sorted

    def __iter__(self):
        if self.base is not None:
            yield from self.base
        for key in self.own_keys().tolist():
            yield key.ljust(self.width, b"\0")


class DocIdSet:
    """A set of doc_ids, compact: 16 bytes per doc_id of 32 lower-case hex digits (every doc_id
    ``make_doc_id`` makes), a plain set for any other. Exact: the 16 bytes are the whole doc_id.

    The doc_ids a run must not store twice (every stored one, and the ones it stored itself) grow with the
    corpus: a Python set of them takes about 120 bytes each, 1.2 GB at 10M documents.
    """

    def __init__(self, doc_ids: Iterable[str] = (), index: doc_index.KeyIndex | None = None):
        self._keys = CompactKeySet(16, base=index.keys if index is not None else None)
        self._other: set[str] = set(index.other) if index is not None else set()
        self._last: tuple = (None, None)
        self.update(doc_ids)

    def __len__(self) -> int:
        return len(self._keys) + len(self._other)

    def __contains__(self, doc_id) -> bool:
        key = _hex_key(doc_id)
        self._last = (doc_id, key)
        return doc_id in self._other if key is None else key in self._keys

    def add(self, doc_id: str) -> None:
        # DocumentSink asks whether a doc_id is known, then adds it: its key is still at hand.
        key = self._last[1] if self._last[0] == doc_id else _hex_key(doc_id)
        if key is None:
            self._other.add(doc_id)
        else:
            self._keys.add(key)

    def update(self, doc_ids) -> None:
        if isinstance(doc_ids, (pa.Array, pa.ChunkedArray)):
            return self.add_array(doc_ids)
        for doc_id in doc_ids:
            self.add(doc_id)

    def add_array(self, doc_ids) -> None:
        """Add an Arrow column of doc_ids (vectorised for the hex ones)."""
        chunks = doc_ids.chunks if isinstance(doc_ids, pa.ChunkedArray) else [doc_ids]
        for chunk in chunks:
            rows, hexed = _hex_keys(chunk)
            self._keys.add_rows(rows)
            if not hexed.all():
                self._other.update(v for v in chunk.filter(pa.array(~hexed)).to_pylist() if v is not None)

    def __iter__(self):
        for key in self._keys:
            yield key.hex()
        yield from list(self._other)


def file_doc_id_keys(path) -> tuple[np.ndarray, list[str]]:
    """A document file's doc_ids: the hex ones as uint8 rows of 16 bytes, and the others as they are."""
    rows, others = [], []
    for chunk in pq.read_table(path, columns=["doc_id"]).column("doc_id").chunks:
        r, hexed = _hex_keys(chunk)
        rows.append(r)
        if not hexed.all():
            others.extend(v for v in chunk.filter(pa.array(~hexed)).to_pylist() if v is not None)
    return (np.concatenate(rows) if rows else np.zeros((0, 16), np.uint8)), others


def existing_doc_ids(snapshot: Snapshot) -> DocIdSet:
    """Every doc_id in the store, as a compact set: the store's doc_id index (memory-mapped) and the doc_id
    column of the document files it does not cover; writes a new index when those have grown
    (``provenance.doc_index``)."""
    index, keys, others = doc_index.read_uncovered(snapshot, doc_index.DOC_IDS,
                                                   lambda path, _kind: file_doc_id_keys(path))
    ids = DocIdSet(index=index)
    ids._keys.add_rows(keys.view(np.uint8).reshape(-1, 16))
    ids._other.update(others)
    return ids


class KnownCaptures:
    """(doc_id, fetched_at) of every capture the store holds: documents and recorded re-captures.

    A crawl's own fetch rows are left out: they would make the set grow with every re-crawl, and a crawl's
    fetch and an import's capture at the very same microsecond are no real case (the versions view counts such
    a pair once anyway). Rows without a fetched_at are left out too: only dated captures are ever asked about.

    Read from the store the first time an import meets a document it already holds (an import of new pages
    never reads it), so importing the same WARC twice records each capture once. The store's captures come from
    its capture index (``doc_index.CAPTURES``, memory-mapped: the kernel's page cache, not this run's memory)
    and the files it does not cover; the run keeps in its own memory only those and its own, 24 bytes each
    (16 bytes of doc_id, 8 of microseconds since the epoch) for a hex doc_id at a time with a time zone, a plain
    set for any other.
    """

    def __init__(self, store):
        self.store = store
        self._seen: CompactKeySet | None = None
        self._other: set = set()

    @staticmethod
    def _key(doc_id, fetched_at) -> bytes | None:
        key = _hex_key(doc_id)
        if key is None or not isinstance(fetched_at, datetime) or fetched_at.utcoffset() is None:
            return None
        return key + ((fetched_at - _EPOCH) // _MICROSECOND).to_bytes(8, "big", signed=True)

    def _contains(self, doc_id, fetched_at) -> bool:
        key = self._key(doc_id, fetched_at)
        return (doc_id, fetched_at) in self._other if key is None else key in self._seen

    def _add(self, doc_id, fetched_at) -> None:
        key = self._key(doc_id, fetched_at)
        if key is None:
            self._other.add((doc_id, fetched_at))
        else:
            self._seen.add(key)

    def is_new(self, doc_id: str, fetched_at: datetime) -> bool:
        """True (and noted) when the store has no capture of doc_id at fetched_at."""
        if self._seen is None:
            self._load()
        if self._contains(doc_id, fetched_at):
            return False
        self._add(doc_id, fetched_at)
        return True

    def stored(self, keys) -> None:
        """Captures of documents just committed (once loaded, the set follows the store)."""
        if self._seen is not None:
            for doc_id, fetched_at in keys:
                self._add(doc_id, fetched_at)

    def _load(self) -> None:
        def read(path, kind):
            rows, other = file_capture_keys(read_captures(path, kind))
            return rows, [_capture_to_json(c) for c in other]

        index, keys, other = doc_index.read_uncovered(self.store.snapshot(), doc_index.CAPTURES, read)
        self._seen = CompactKeySet(24, base=index.keys if index is not None else None)
        self._seen.add_rows(keys.view(np.uint8).reshape(-1, 24))
        self._other = {_capture_from_json(v) for v in (index.other if index is not None else []) + other}


def read_captures(path, kind: str) -> pa.Table:
    """A file's captures as (doc_id, fetched_at): every document of a document file, the ``recaptured`` rows of a
    fetch file (a crawl's own fetches are not captures ``KnownCaptures`` is asked about)."""
    if kind == "documents":
        return pq.read_table(path, columns=["doc_id", "fetched_at"])
    t = pq.read_table(path, columns=["doc_id", "fetched_at", "outcome"])
    return t.filter(pc.equal(t.column("outcome"), "recaptured")).select(["doc_id", "fetched_at"])


def file_capture_keys(t: pa.Table) -> tuple[np.ndarray, list[tuple]]:
    """The captures of a table of (doc_id, fetched_at): the keyed ones (hex doc_id, a time with a zone) as uint8
    rows of 24 bytes, the other dated ones as (doc_id, fetched_at) pairs. Rows without a time are left out."""
    t = t.filter(t.column("fetched_at").is_valid()).combine_chunks()
    doc_ids = t.column("doc_id").chunk(0) if t.num_rows else pa.array([], pa.string())
    times = t.column("fetched_at").chunk(0) if t.num_rows else pa.array([], pa.timestamp("us", "UTC"))
    rows, hexed = _hex_keys(doc_ids)
    zoned = pa.types.is_timestamp(times.type) and times.type.tz is not None
    keyed = hexed if zoned else np.zeros(len(t), bool)
    micros = pc.cast(pc.cast(times.filter(pa.array(keyed)), pa.timestamp("us", "UTC")), pa.int64()) \
        if keyed.any() else pa.array([], pa.int64())
    keys = np.empty((int(keyed.sum()), 24), np.uint8)
    keys[:, :16] = rows[keyed[hexed]]
    keys[:, 16:] = micros.to_numpy().astype(">i8").view(np.uint8).reshape(-1, 8)
    other = []
    if not keyed.all():
        rest = t.filter(pa.array(~keyed))
        other = list(zip(rest.column("doc_id").to_pylist(), rest.column("fetched_at").to_pylist()))
    return keys, other


def _capture_to_json(capture: tuple) -> list:
    doc_id, fetched_at = capture
    return [doc_id, fetched_at.isoformat()]


def _capture_from_json(value: list) -> tuple:
    return value[0], datetime.fromisoformat(value[1])


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
    known_ids: DocIdSet
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
