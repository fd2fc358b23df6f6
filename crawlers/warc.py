"""WARC, ARC and WET import: ``provenance ingest FILE.warc[.gz] | .arc[.gz] | .wet[.gz]``.

Called by ``provenance.ingest.ingest_file`` once per file, as
``ingest_warc(path, run, sink, result, problem, on_record, extractor=...)``; ``extractor`` is
``[ingest] extractor`` (a name in provenance.extract.EXTRACTORS), used for every HTML page.

What becomes a document
  * ``response`` records with HTTP status 200 and an HTML body (Content-Type text/html or
    application/xhtml+xml; sniffed when the header is missing): source 'warc'. The body is
    the HTTP payload after transfer and content decoding (chunked; gzip, deflate, br), with
    the capture's provenance: WARC-Target-URI, WARC-Date (fetched_at, UTC), WARC-Record-ID,
    file name and byte offset of the record, WARC-IP-Address.
  * ``conversion`` records (Common Crawl WET text): source 'wet', the record's UTF-8 text
    as is (no HTML extraction).
  * ``revisit`` records resolve to the record they repeat: by WARC-Refers-To, else by
    (WARC-Refers-To-Target-URI or WARC-Target-URI, WARC-Payload-Digest), looking in this
    file and in the files read before it in the same ingest. A revisit of the same URL is
    the same document (same URL, same bytes, same doc_id): it counts as "already stored"
    and in the stat ``revisit_unchanged``. A revisit of another URL (a URL-agnostic
    revisit) becomes a new document with its own URL, date and record id and the
    original's body. A revisit whose original is not in the input is a problem.
    A revisit whose own HTTP headers already say it is not an HTML 200 page (a 404, a CSS
    file, ...) is counted without looking for its original. A revisit read before its
    original (same file) is resolved at the end of the file.
Every other response or resource record is counted in ``result.records`` and in
``result.stats`` (skipped_not_200, skipped_not_html, skipped_not_http, skipped_resource,
revisit_not_html_200, revisit_of_bad_record), not stored: the guard keeps documents, not
crawl logs. request, metadata, warcinfo and ARC file headers are skipped silently.

Bad input: each case is one problem "FILE:offset N: what", and reading goes on
  * a record warcio cannot parse: skip to the next record start (the next gzip member whose
    data begins with a WARC/ARC header; in an uncompressed file the next "WARC/x.y" or ARC
    header line) and carry on from there;
  * a record shorter than its Content-Length (truncated file), not followed by a blank
    line and the next record (wrong Content-Length), or without a valid length: not stored,
    then skip as above; a record without WARC-Type, or a response without target URI: not
    stored;
  * a payload that cannot be decoded (corrupt gzip/brotli, broken chunking, a compressed
    stream that ends early without WARC-Truncated, brotli module missing) or that is bigger
    than MAX_PAYLOAD_BYTES before or after decoding: that record is not stored;
  * gzip members that do not line up with records (a whole file gzipped at once, or a
    record split over two members): read on from there as one gzip stream. Those documents
    have no warc_offset (no byte offset to seek to exists) but metadata gzip_member_offset
    and offset_in_gzip_stream;
  * LZ4, zstd, bzip2, xz or zip containers: one problem at offset 0 (not supported).

Why warcio and not fastwarc: warcio reads ARC as well as WARC, the recovery from broken
archives above is built on its record loader, and parsing is not what limits an import. On
the shared WARC with the most records (example.warc.gz, 2.5 MB, 822 records, 94 HTML pages)
warcio reads every record and payload in ~0.05 s, FastWARC 2.0 in ~0.013 s; this module
with text extraction switched off imports it in ~0.1 s; the real import takes ~3.3 s with
trafilatura and ~0.36 s with resiliparse (bench/warc.py). FastWARC would save ~10% of the
fast path's import and nothing measurable of the quality path's.

Memory: one record's payload at a time (at most MAX_PAYLOAD_BYTES, also after decoding),
plus the revisit index (URL, digest and record id of every response record of the run).

Why payloads are decoded here rather than with warcio's content_stream(): warcio prints
and swallows a gzip error in the middle of a body (a corrupt page would be stored as if
complete), its brotli hook fails with brotli >= 1.1 (AttributeError), and it has no limit
on decompressed size.
"""

from __future__ import annotations

import logging
import re
import tempfile
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from warcio.archiveiterator import ArchiveIterator
from warcio.recordloader import ArcWarcRecordLoader

from provenance import objectstore
from provenance.documents import DocumentSink, build_document
from provenance.extract import HTML_TYPES, looks_like_html, media_type

if TYPE_CHECKING:
    from provenance.ingest import IngestResult
    from provenance.store import Run

# Bigger payloads are reported, never loaded: one record must not take the machine's memory.
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024

COUNTED_TYPES = ("response", "revisit", "resource", "conversion")

# Containers warcio cannot read: name and what to do instead.
_UNSUPPORTED_MAGIC = (
    (b"\x04\x22\x4d\x18", "LZ4-compressed", "decompress it first (lz4 -d)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (zstd -d)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (xz -d)"),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2)"),
    (b"PK\x03\x04", "a zip archive (WACZ?)", "unzip it and ingest the WARC files inside"),
)
_GZIP_MAGIC = b"\x1f\x8b\x08"
# An ARC v1 record header line: URL IP-address Archive-date Content-type Archive-length.
# The URL may contain spaces (seen in real ARCs), hence the lazy [^\r\n]*.
_ARC_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*:[^\r\n]*? \S+ \d{12,17} \S+ \d+\r?\n")
# A record start in an uncompressed file: a newline followed by a WARC version line or an ARC header.
_PLAIN_RECORD_START = re.compile(rb"\n(?=WARC/\d+\.\d+\r?\n|" + _ARC_LINE.pattern + rb")")
_BLOCK = 1 << 20  # read size for scanning and decompressing
# warcio logs each target URI it repairs (spaces -> %20) at WARNING: noise in an ingest log.
logging.getLogger("warcio.recordloader").setLevel(logging.ERROR)


class _MixedMember(Exception):
    """warcio found a gzip member holding more than one record."""


class _BadPayload(Exception):
    """The record is intact but its payload cannot be used; the message says why."""


class _Loader(ArcWarcRecordLoader):
    def load_http_headers(self, rec_type, uri, stream, length):
        if uri is None:  # warcio fails with AttributeError on a record without WARC-Target-URI
            return None
        return super().load_http_headers(rec_type, uri, stream, length)


class _Records(ArchiveIterator):
    """warcio's iterator with small changes, so that we can report problems ourselves."""

    # warcio writes this warning to stderr when a record is not followed by a blank line;
    # _handle turns that case into a problem with file and offset instead.
    INC_RECORD = ""

    def __init__(self, fileobj):
        # arc2warc=False: ARC records keep their own headers, so no random WARC-Record-ID is made up.
        super().__init__(fileobj, arc2warc=False)
        self.loader = _Loader(verify_http=False, arc2warc=False)

    def _raise_invalid_gzip_err(self):
        raise _MixedMember()


# ----- the facts of one record's WARC/ARC header -----------------------------------------------
@dataclass
class _Capture:
    rec_type: str
    url: str | None
    fetched_at: datetime | None
    date_raw: str | None
    record_id: str | None
    ip: str | None
    payload_digest: str | None
    refers_to: str | None
    refers_to_uri: str | None
    refers_to_date: str | None
    truncated: str | None  # WARC-Truncated: the crawler cut the payload (length, time, ...)
    profile: str | None
    language: str | None  # WARC-Identified-Content-Language (WET)
    version: str  # "WARC/1.0", "WARC/0.18", "ARC"

    @classmethod
    def of(cls, record) -> _Capture:
        h = record.rec_headers
        if record.format == "arc":
            date = h.get_header("archive-date")
            return cls(record.rec_type, _clean_url(h.get_header("uri")), _parse_date(date), date, None,
                       h.get_header("ip-address"), None, None, None, None, None, None, None, "ARC")
        date = h.get_header("WARC-Date")
        return cls(
            record.rec_type, _clean_url(h.get_header("WARC-Target-URI")), _parse_date(date), date,
            h.get_header("WARC-Record-ID"), h.get_header("WARC-IP-Address"),
            _strip(h.get_header("WARC-Payload-Digest")), _strip(h.get_header("WARC-Refers-To")),
            _clean_url(h.get_header("WARC-Refers-To-Target-URI")), h.get_header("WARC-Refers-To-Date"),
            h.get_header("WARC-Truncated"), h.get_header("WARC-Profile"),
            h.get_header("WARC-Identified-Content-Language"), h.protocol or "WARC",
        )

    def metadata(self) -> dict:
        """Record facts worth keeping beside the document (only those present)."""
        meta = {
            "warc_type": self.rec_type,
            "warc_version": self.version,
            "warc_payload_digest": self.payload_digest,
            "warc_truncated": self.truncated,
            "warc_refers_to": self.refers_to,
            "language": self.language,
            # fetched_at is empty when the date is not a valid W3C date: keep what the file said.
            "warc_date": self.date_raw if self.fetched_at is None else None,
        }
        return {k: v for k, v in meta.items() if v}


def _strip(value: str | None) -> str | None:
    return value.strip() or None if value else None


def _clean_url(value: str | None) -> str | None:
    """Undo two known writer bugs: '<uri>' (wget 1.19) and raw spaces (as warcio does for WARC)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value.replace(" ", "%20") or None


_W3C_DATE = re.compile(
    r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?)?)?)?\s*(Z|[+-]\d\d:?\d\d)?",
    re.ASCII)


def _parse_date(value: str | None) -> datetime | None:
    """WARC-Date (W3C-DTF at any precision, e.g. '2014-01', '2019-08-15T01:02') or ARC's
    14-digit date -> aware UTC datetime; None when it is not a valid date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit() and 4 <= len(value) <= 17:  # ARC: YYYYMMDDhhmmss, sometimes shorter
        v = value[:14] + "0101000000"[len(value[:14]) - 4:]  # missing month/day -> 01, time -> 00
        value = f"{v[:4]}-{v[4:6]}-{v[6:8]}T{v[8:10]}:{v[10:12]}:{v[12:14]}Z"
    m = _W3C_DATE.fullmatch(value)
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, tz = m.groups()
    try:
        parsed = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(second or 0), int((fraction or "0")[:6].ljust(6, "0")), tzinfo=timezone.utc)
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        parsed -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return parsed


def _http_status(http_headers) -> int | None:
    code = (http_headers.get_statuscode() or "").strip()
    return int(code) if code.isdigit() else None


def _may_be_html_200(revisit_http_headers) -> bool:
    """Whether a revisit can stand for an HTML 200 page, judged by its own HTTP headers (which
    describe the new response: identical-payload-digest revisits keep them); unknown -> True."""
    if revisit_http_headers is None:
        return True
    if _http_status(revisit_http_headers) not in (None, 200, 304):  # 304: not modified, body unchanged
        return False
    content_type = revisit_http_headers.get_header("Content-Type")
    return not content_type or media_type(content_type) in HTML_TYPES


# ----- payload decoding -------------------------------------------------------------------------
def _read_payload(record, limit: int) -> bytes:
    """The record's remaining bytes (the HTTP body, or the whole block when there are no HTTP
    headers), refusing to load more than ``limit``."""
    declared = record.payload_length if record.http_headers else record.length
    if declared is not None and declared > limit:
        raise _BadPayload(f"payload of {declared} bytes is over the {limit}-byte limit; not loaded")
    data = record.raw_stream.read(limit + 1)
    if len(data) > limit:
        raise _BadPayload(f"payload is over the {limit}-byte limit; not loaded")
    return data


def _decode_http_body(raw: bytes, http_headers, cut_by_crawler: bool = False,
                      limit: int | None = None) -> tuple[bytes, list[str]]:
    """HTTP body as stored -> body as the server meant it: de-chunked, then decompressed.

    Returns (body, notes); raises _BadPayload when the body cannot be decoded. A stream that
    ends early is accepted (with a note) only when the crawler said it cut it (WARC-Truncated).
    """
    limit = MAX_PAYLOAD_BYTES if limit is None else limit
    notes: list[str] = []
    body = raw
    if "chunked" in (http_headers.get_header("Transfer-Encoding") or "").lower():
        body = _dechunk(body, notes, cut_by_crawler)
    codings = [c.strip().lower() for c in (http_headers.get_header("Content-Encoding") or "").split(",")]
    for coding in reversed([c for c in codings if c and c != "identity"]):  # applied in order, undone in reverse
        body = _decompress(body, coding, notes, cut_by_crawler, limit)
    return body, notes


def _dechunk(data: bytes, notes: list[str], cut_by_crawler: bool) -> bytes:
    chunks, pos = [], 0
    while True:
        eol = data.find(b"\n", pos)
        size_text = data[pos:eol if eol >= 0 else len(data)].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = None
        if size is None and pos == 0:
            # Many crawlers store the body de-chunked but keep the header (warcio does the same).
            notes.append("Transfer-Encoding: chunked, but the body is stored de-chunked")
            return data
        if size is None or eol < 0:
            if pos >= len(data.rstrip()):  # ends cleanly after a chunk, just without the 0-chunk
                notes.append("chunked body has no final zero-length chunk")
                break
            if cut_by_crawler and eol < 0:
                notes.append("chunked body cut by the crawler (WARC-Truncated)")
                break
            raise _BadPayload(f"broken chunked encoding at body byte {pos}: bad chunk-size line {size_text[:20]!r}")
        if size == 0:
            break  # trailers after the last chunk are ignored
        start = eol + 1
        chunk = data[start:start + size]
        chunks.append(chunk)
        if len(chunk) < size:
            if cut_by_crawler:
                notes.append("chunked body cut by the crawler (WARC-Truncated)")
                break
            raise _BadPayload(f"chunked body ends inside a chunk ({len(chunk)} of {size} bytes): truncated")
        pos = start + size
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        elif pos < len(data):
            raise _BadPayload(f"broken chunked encoding at body byte {pos}: chunk not followed by CRLF")
    return b"".join(chunks)


def _brotli_decompressor():
    try:
        import brotli
    except ImportError:
        return None
    return brotli


def _decompress(body: bytes, coding: str, notes: list[str], cut_by_crawler: bool, limit: int) -> bytes:
    finished = True
    try:
        if coding in ("gzip", "x-gzip", "deflate"):
            if coding != "deflate" and not body.startswith(b"\x1f\x8b"):
                raise zlib.error("no gzip header")
            decompressor = zlib.decompressobj(31 if coding != "deflate" else 15)
            try:
                out = decompressor.decompress(body, limit + 1)
            except zlib.error:
                if coding != "deflate":
                    raise
                decompressor = zlib.decompressobj(-15)  # 'deflate' is often sent raw, without zlib header
                out = decompressor.decompress(body, limit + 1)
            finished = decompressor.eof
        elif coding == "br":
            brotli = _brotli_decompressor()
            if brotli is None:
                raise _BadPayload("Content-Encoding br, but the brotli module is not installed (pip install brotli)")
            decompressor = brotli.Decompressor()
            try:
                out = decompressor.process(body, output_buffer_limit=limit + 1)
            except TypeError:  # brotli < 1.2 has no output limit
                out = decompressor.process(body)
            finished = decompressor.is_finished()
        else:
            raise _BadPayload(f"unsupported Content-Encoding {coding!r}")
    except _BadPayload:
        raise
    except Exception as exc:  # zlib.error, brotli.error
        if looks_like_html(None, body[:1024]):
            # The crawler stored the body already decoded but kept the header (common).
            notes.append(f"Content-Encoding: {coding}, but the body is stored decoded")
            return body
        raise _BadPayload(f"Content-Encoding {coding}: cannot decode the body ({exc})") from None
    if len(out) > limit:
        raise _BadPayload(f"Content-Encoding {coding}: body decodes to more than {limit} bytes; not loaded")
    if not finished:
        if not cut_by_crawler:
            raise _BadPayload(f"Content-Encoding {coding}: compressed body ends early (truncated); "
                              f"{len(out)} bytes decoded")
        notes.append(f"{coding} body cut by the crawler (WARC-Truncated); decoded what there is")
    return out


# ----- revisits ---------------------------------------------------------------------------------
@dataclass
class _Original:
    """A response record a later revisit may refer to."""

    url: str
    record_id: str | None
    date_raw: str | None
    doc_id: str | None  # None: it did not become a document
    bad: bool  # it was a problem (so its revisits are not counted as "not HTML 200")
    path: str | Path  # a local path or an s3:// URI (with its endpoint query)
    offset: int  # in the file, or in the gzip stream that starts at stream_base
    stream_base: int | None


class _RevisitIndex:
    """Originals by WARC-Record-ID and by (URL, payload digest), for one ingest run."""

    def __init__(self):
        self.by_id: dict[str, _Original] = {}
        self.by_url_digest: dict[tuple[str, str], _Original] = {}

    def add(self, capture: _Capture, original: _Original) -> None:
        if capture.record_id:
            self.by_id[capture.record_id] = original
        if capture.payload_digest and capture.url:
            key = (capture.url, capture.payload_digest)
            known = self.by_url_digest.get(key)
            # Same URL and payload digest: same body. Keep one that became a document, if any.
            if known is None or (known.doc_id is None and original.doc_id is not None):
                self.by_url_digest[key] = original

    def find(self, revisit: _Capture) -> _Original | None:
        if revisit.refers_to and revisit.refers_to in self.by_id:
            return self.by_id[revisit.refers_to]
        if revisit.payload_digest:
            return self.by_url_digest.get((revisit.refers_to_uri or revisit.url, revisit.payload_digest))
        return None


# One index per ingest run, so a revisit can find its original in a file read earlier.
_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _Revisit:
    capture: _Capture
    http_headers: object  # warcio StatusAndHeaders or None
    where: str
    warc_offset: int | None
    extra: dict


# ----- finding the next record after a bad one --------------------------------------------------
def _starts_record(data: bytes | None) -> bool:
    return bool(data) and (data.startswith(b"WARC/") or _ARC_LINE.match(data) is not None)


def _gzip_member_starts_record(fh, at: int) -> bool:
    fh.seek(at)
    try:
        head = zlib.decompressobj(31).decompress(fh.read(64 * 1024), 512)
    except zlib.error:
        return False
    return _starts_record(head)


def _next_record_start(fh, pos: int, size: int, gzipped: bool) -> int | None:
    """Offset of the first record start at or after ``pos``, or None."""
    while pos < size:
        if gzipped:
            fh.seek(pos)
            data = fh.read(_BLOCK + 2)
            i = data.find(_GZIP_MAGIC)
            while 0 <= i < _BLOCK:
                if _gzip_member_starts_record(fh, pos + i):
                    return pos + i
                i = data.find(_GZIP_MAGIC, i + 1)
        else:
            fh.seek(pos - 1)  # from one byte back, so that a record starting at pos is seen after its '\n'
            data = fh.read(_BLOCK + 64 * 1024)
            for m in _PLAIN_RECORD_START.finditer(data):
                if m.start() >= _BLOCK:
                    break
                return pos - 1 + m.start() + 1
        pos += _BLOCK
    return None


def _gunzip(src, dst, until: int | None = None) -> str | None:
    """Decompress the gzip members in ``src`` into ``dst`` (up to about ``until`` bytes), keeping
    every byte that decodes, in bounded memory. Returns why it stopped early, or None.

    (gzip.GzipFile would raise at a truncated end and lose the data of that last read.)
    """
    def room() -> bool:
        return until is None or dst.tell() < until

    decompressor, in_member = zlib.decompressobj(31), False
    while room() and (block := src.read(_BLOCK)):
        data = block
        while data and room():
            try:
                dst.write(decompressor.decompress(data, _BLOCK))
            except zlib.error as exc:
                return f"corrupt gzip data ({exc})"
            in_member = not decompressor.eof
            if decompressor.eof:  # next member, if any
                data = decompressor.unused_data
                if data and not data.startswith(b"\x1f\x8b"):
                    return "data after a gzip member is not gzip"
                decompressor = zlib.decompressobj(31)
            else:
                data = decompressor.unconsumed_tail
    if not room():
        return None  # decompressed as much as was asked for
    dst.write(decompressor.flush())  # output zlib still holds, when the input ends mid-member
    return "gzip stream ends early (file truncated)" if in_member else None


def _describe(exc: BaseException) -> str:
    """One readable line: binary garbage quoted by warcio's messages becomes '?'."""
    text = "".join(c if " " <= c <= "~" else "?" for c in " ".join(str(exc).split()))
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----- the import of one file -------------------------------------------------------------------
def ingest_warc(path: Path, run: Run, sink: DocumentSink, result: IngestResult,
                problem: Callable[[str, str], None], on_record: Callable[[], None] | None,
                extractor: str | None = None) -> None:
    """Import one WARC/ARC/WET file into ``sink``; see the module docstring for the rules."""
    _FileImport(path if objectstore.is_uri(path) else Path(path), run, sink, result, problem, on_record,
                extractor).read_file()


@dataclass
class _Source:
    """Where records are read from: the file itself, or (``base`` set) a decompressed copy of the
    gzip stream that starts at byte ``base`` of the file, for members not aligned with records."""

    fh: object
    size: int
    gzipped: bool
    base: int | None = None
    skip: int = 0  # records at the start already imported (see _read_gzip_stream)

    def where(self, offset: int) -> str:
        return f"offset {offset}" if self.base is None else f"offset {self.base} (+{offset} in its gzip stream)"

    def warc_offset(self, offset: int) -> int | None:
        return offset if self.base is None else None  # no byte offset to seek to inside a gzip stream

    def extra(self, offset: int) -> dict:
        return {} if self.base is None else {"gzip_member_offset": self.base, "offset_in_gzip_stream": offset}


class _FileImport:
    def __init__(self, path, run, sink, result, problem, on_record, extractor=None):
        self.path, self.run, self.sink, self.result = path, run, sink, result
        # An s3:// object is read as a stream of ranged GETs (objectstore.open_any); provenance records its
        # canonical URI (no endpoint query) as source_file, and the key's last part as warc_filename.
        self.label, self.filename = objectstore.label(path), objectstore.name_of(path)
        self.extractor = extractor
        self.problem, self.on_record = problem, on_record
        self.index: _RevisitIndex = _INDEXES.setdefault(run, _RevisitIndex())
        self.deferred: list[_Revisit] = []  # revisits read before their original

    def count(self, stat: str) -> None:
        self.result.stats[stat] = self.result.stats.get(stat, 0) + 1

    def read_file(self) -> None:
        with objectstore.open_any(self.path) as fh:
            head = fh.read(8)
            for magic, what, hint in _UNSUPPORTED_MAGIC:
                if head.startswith(magic):
                    self.problem("offset 0", f"{what} file: not supported; {hint}")
                    return
            self._read_all(_Source(fh, objectstore.size_of(self.path, fh), head.startswith(b"\x1f\x8b")))
        for revisit in self.deferred:
            original = self.index.find(revisit.capture)
            if original is None:
                c = revisit.capture
                self.problem(revisit.where, f"revisit of {c.url} refers to a record not in this input "
                                            f"(WARC-Refers-To {c.refers_to or '-'}, "
                                            f"WARC-Payload-Digest {c.payload_digest or '-'})")
                continue
            try:
                outcome = self._resolve(revisit, original)
            except Exception as exc:  # a bad record must never stop the import
                outcome = ("bad", f"revisit of {revisit.capture.url}: {_describe(exc)}")
            self._commit(outcome, revisit.where)

    def _read_all(self, src: _Source) -> None:
        start: int | None = 0
        while start is not None:  # each pass ends at the end of the file or at a bad record
            start = self._read_from(src, start)

    def _read_from(self, src: _Source, start: int) -> int | None:
        """Read records from byte ``start``. Returns where to carry on after a bad record, or None."""
        src.fh.seek(start)
        records = _Records(src.fh)
        previous = start
        while True:
            offset = records.offset  # start of the next record (warcio sets it as the last one ends)
            try:
                record = next(records)
            except StopIteration:
                return self._after_last_record(src, records.offset)
            except _MixedMember:
                if src.base is None:
                    return self._read_gzip_stream(src, previous, skip=1)
                return self._resync(src, offset, "gzip data inside the gzip stream")
            except Exception as exc:
                return self._resync(src, offset, f"unreadable record: {_describe(exc)}")
            previous = offset
            if src.skip:  # imported before warcio saw that the gzip member holds more records
                src.skip -= 1
                records.read_to_end()
                continue
            verdict, message = self._handle(records, record, src, offset)
            if verdict == "split" and src.base is None:
                return self._read_gzip_stream(src, offset, skip=0)
            if verdict:
                return self._resync(src, offset, message or "record continues past its gzip member")

    def _read_gzip_stream(self, src: _Source, member_start: int, skip: int) -> None:
        """Read from ``member_start`` to the end of the file as one gzip stream.

        warcio needs one gzip member per record. When members do not line up with records
        (a whole file gzipped at once, or a record split over members) the rest of the file is
        decompressed to a temporary file and read as an uncompressed WARC, with the same resync
        on bad records. ``skip``: records at ``member_start`` already imported.
        """
        self.problem(f"offset {member_start}",
                     "gzip members do not line up with WARC records (the whole file gzipped at once, or a "
                     "record split over members): read on as one gzip stream; documents from here have no "
                     "warc_offset (`warcio recompress` fixes the file)")
        with tempfile.TemporaryFile() as plain:
            src.fh.seek(member_start)
            stopped = _gunzip(src.fh, plain)
            if stopped:  # truncated or corrupt: what came out before is still read
                self.problem(f"offset {member_start}", f"{stopped} after {plain.tell()} decompressed bytes; "
                                                       "the records before that point are imported")
            size = plain.tell()
            self._read_all(_Source(plain, size, gzipped=False, base=member_start, skip=skip))
        return None

    def _after_last_record(self, src: _Source, end: int) -> int | None:
        """warcio stopped at ``end``: fine at the end of the file or before padding, else resync."""
        if end >= src.size:
            return None
        src.fh.seek(end)
        if not src.fh.read(64 * 1024).strip(b"\r\n\t \x00"):
            return None
        return self._resync(src, end, "unreadable data after the last readable record (a truncated or "
                                      "corrupt record)")

    def _resync(self, src: _Source, bad_offset: int, message: str) -> int | None:
        """Report a bad record at ``bad_offset`` and find the next record start after it."""
        resume = _next_record_start(src.fh, bad_offset + 1, src.size, src.gzipped)
        tail = (f"; skipped {resume - bad_offset} bytes to the next record at {src.where(resume)}"
                if resume is not None else "; no readable record after it")
        self.problem(src.where(bad_offset), message + tail)
        return resume

    # -- one record ---------------------------------------------------------------------------
    def _handle(self, records, record, src: _Source, offset: int):
        """Process the record at ``offset``. Returns (None, None) when reading can go on, ("bad",
        message) when the record's framing is broken (caller resyncs), ("split", "") when it
        continues in the next gzip member."""
        where, warc_offset, extra = src.where(offset), src.warc_offset(offset), src.extra(offset)
        capture = _Capture.of(record)
        rec_type = capture.rec_type or "untyped"
        counted = rec_type in COUNTED_TYPES
        if counted:
            self.result.records += 1
            if self.on_record:
                self.on_record()
        length = record.rec_headers.get_header("length" if record.format == "arc" else "Content-Length")
        if length is None or not length.strip().isdigit():  # warcio would read it as empty, or to the end
            return "bad", f"{rec_type} record has no valid length ({length!r})"
        outcome = None
        if counted:
            outcome = self._outcome(record, capture, where, warc_offset, extra)
        elif capture.rec_type is None and record.format == "warc":
            outcome = ("bad", "record without WARC-Type (corrupt header?)")

        # Drain the rest of the record (warcio also reads the blank lines after it), then check
        # that it ended where its Content-Length said, before anything from it is kept.
        errors_before = records.err_count
        try:
            records.read_to_end()
        except Exception as exc:
            return "bad", f"unreadable {rec_type} record: {_describe(exc)}"
        missing = getattr(record.raw_stream, "limit", 0)  # bytes promised by Content-Length, not in the file
        if missing:
            decompressor = getattr(records.reader, "decompressor", None)
            if decompressor is not None and decompressor.eof and decompressor.unused_data:
                # The member ended cleanly and more follow: the record goes on in them. It is read
                # (and counted) again from the gzip stream.
                self.result.records -= counted
                return "split", ""
            self._remember(capture, None, True, src, offset)
            return "bad", (f"{rec_type} record truncated: {missing} of its {record.length} bytes "
                           "are missing (file cut short or corrupt)")
        if records.err_count > errors_before and not _starts_record(records.next_line):
            self._remember(capture, None, True, src, offset)
            return "bad", (f"{rec_type} record is not followed by the next record: its Content-Length "
                           f"({record.length}) is wrong")
        doc_id = self._commit(outcome, where) if outcome else None
        self._remember(capture, doc_id, bool(outcome) and outcome[0] == "bad", src, offset)
        return None, None

    def _remember(self, capture: _Capture, doc_id: str | None, bad: bool, src: _Source, offset: int) -> None:
        """Index a response record for the revisits that may refer to it."""
        if capture.rec_type == "response" and capture.url:
            self.index.add(capture, _Original(capture.url, capture.record_id, capture.date_raw, doc_id, bad,
                                              self.path, offset, src.base))

    def _commit(self, outcome: tuple, where: str) -> str | None:
        """Apply an outcome; returns the doc_id when it was a document."""
        kind, value = outcome
        if kind == "doc":
            if self.sink.add(value):
                self.result.stored += 1
            else:
                self.result.already_stored += 1
            return value["doc_id"]
        if kind == "skip":
            self.count(value)
        elif kind == "unchanged":  # a revisit: the same URL and bytes as a stored document
            self.result.already_stored += 1
            self.count("revisit_unchanged")
            return value
        elif kind == "defer":
            self.deferred.append(value)
        elif kind == "bad":
            self.problem(where, value)
        return None

    def _outcome(self, record, capture: _Capture, where: str, warc_offset: int | None, extra: dict) -> tuple:
        """What this record yields: ("doc", row) | ("skip", stat) | ("unchanged", doc_id) |
        ("defer", revisit) | ("bad", message). Reads the payload only when it is needed."""
        try:
            if capture.rec_type == "resource":
                return "skip", "skipped_resource"
            if capture.rec_type == "conversion":
                return self._conversion(record, capture, warc_offset, extra)
            if capture.rec_type == "revisit":
                revisit = _Revisit(capture, record.http_headers, where, warc_offset, extra)
                if not _may_be_html_200(record.http_headers):
                    return "skip", "revisit_not_html_200"  # no need to find the original
                original = self.index.find(capture)
                return ("defer", revisit) if original is None else self._resolve(revisit, original)
            return self._response(record, capture, warc_offset, extra)
        except _BadPayload as exc:
            return "bad", f"{capture.rec_type} record for {capture.url}: {exc}"
        except Exception as exc:  # a bad record must never stop the import
            return "bad", f"{capture.rec_type} record for {capture.url}: cannot read it: {_describe(exc)}"

    def _response(self, record, capture: _Capture, warc_offset, extra) -> tuple:
        http = record.http_headers
        if not capture.url:
            return "bad", "response record without a target URI"
        if http is None or not capture.url.lower().startswith(("http://", "https://")):
            return "skip", "skipped_not_http"  # dns:, whois:, and HTTP records without a response
        status = _http_status(http)
        if status != 200:
            return "skip", "skipped_not_200"
        content_type = http.get_header("Content-Type")
        if content_type and media_type(content_type) not in HTML_TYPES:
            return "skip", "skipped_not_html"  # decided before reading the body
        body, notes = _decode_http_body(_read_payload(record, MAX_PAYLOAD_BYTES), http,
                                       cut_by_crawler=bool(capture.truncated))
        if not looks_like_html(content_type, body):
            return "skip", "skipped_not_html"
        return "doc", self._document(capture, body, http.headers, content_type, status, notes, warc_offset, extra)

    def _conversion(self, record, capture: _Capture, warc_offset, extra) -> tuple:
        if not capture.url:
            return "bad", "conversion record without WARC-Target-URI"
        raw = _read_payload(record, MAX_PAYLOAD_BYTES)
        meta = {**capture.metadata(), **extra}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="replace")
            meta["text_note"] = f"invalid UTF-8 from byte {exc.start} replaced with U+FFFD"
        return "doc", build_document(
            url=capture.url, body=None, text=text, source="wet", crawl_id=self.sink.crawl_id,
            run_id=self.run.run_id, fetched_at=capture.fetched_at, metadata=meta,
            warc_record_id=capture.record_id, warc_filename=self.filename, warc_offset=warc_offset,
            resolved_ip=capture.ip, source_file=self.label,
        )

    def _resolve(self, revisit: _Revisit, original: _Original) -> tuple:
        """A revisit whose original is known -> its outcome."""
        capture = revisit.capture
        if original.doc_id is None:
            return "skip", "revisit_of_bad_record" if original.bad else "revisit_not_html_200"
        if original.url == capture.url:
            return "unchanged", original.doc_id
        # A URL-agnostic revisit: the original's body at this revisit's URL is a new document.
        try:
            body, http, notes = self._reread(original)
        except _BadPayload as exc:
            return "bad", f"revisit of {capture.url}: cannot re-read its original at offset {original.offset}: {exc}"
        headers = revisit.http_headers.headers if revisit.http_headers else http.headers
        extra = {**revisit.extra, "warc_refers_to": original.record_id,
                 "warc_refers_to_target_uri": original.url, "warc_refers_to_date": original.date_raw,
                 "warc_profile": capture.profile}
        if revisit.http_headers:
            extra["revisit_http_status"] = _http_status(revisit.http_headers)
        return "doc", self._document(capture, body, headers, http.get_header("Content-Type"), 200, notes,
                                     revisit.warc_offset, {k: v for k, v in extra.items() if v})

    def _reread(self, original: _Original):
        """(body, http headers, notes) of the response record at ``original``'s offset."""
        try:
            with objectstore.open_any(original.path) as fh:
                if original.stream_base is None:
                    fh.seek(original.offset)
                    return self._read_original(fh, original)
                # Inside a gzip stream (badly gzipped files only): decompress up to the record.
                with tempfile.TemporaryFile() as plain:
                    fh.seek(original.stream_base)
                    _gunzip(fh, plain, until=original.offset + MAX_PAYLOAD_BYTES + (1 << 20))
                    plain.seek(original.offset)
                    return self._read_original(plain, original)
        except _BadPayload:
            raise
        except Exception as exc:
            raise _BadPayload(_describe(exc)) from None

    @staticmethod
    def _read_original(fh, original: _Original):
        record = next(_Records(fh))  # errors are turned into _BadPayload by _reread
        capture = _Capture.of(record)
        if capture.record_id != original.record_id or record.http_headers is None:
            raise _BadPayload("the record found there is not the original")
        body, notes = _decode_http_body(_read_payload(record, MAX_PAYLOAD_BYTES), record.http_headers,
                                        cut_by_crawler=bool(capture.truncated))
        return body, record.http_headers, notes

    def _document(self, capture: _Capture, body: bytes, headers, content_type, status, notes,
                  warc_offset, extra) -> dict:
        meta = {**capture.metadata(), **extra}
        if notes:
            meta["payload_notes"] = notes
        return build_document(
            url=capture.url, body=body, source="warc", crawl_id=self.sink.crawl_id, run_id=self.run.run_id,
            fetched_at=capture.fetched_at, http_status=status, headers=list(headers), content_type=content_type,
            metadata=meta, warc_record_id=capture.record_id, warc_filename=self.filename,
            warc_offset=warc_offset, resolved_ip=capture.ip, source_file=self.label, extractor=self.extractor,
        )
