"""WARC/ARC/WET import (provenance.crawlers.warc): documents, provenance, revisits, bad input.

The first tests build small archives with warcio's writer and need nothing else; the
``shared`` ones read the real (valid and deliberately broken) archives in ../shared/data/warc
and skip when it is absent.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from datetime import datetime
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

import provenance.extract
from provenance.crawlers import warc
from provenance.documents import DocumentSink
from provenance.extract import looks_like_html
from provenance.ingest import IngestError, IngestResult, detect_format, run_ingest
from provenance.store import Store

SHARED = Path(os.environ.get("PROVENANCE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WARC_DIR = SHARED / "data" / "warc"

PAGE_A = (b"<!doctype html><html><head><title>Alpha page</title></head><body><article><h1>Alpha</h1><p>"
          + b"Alpha paragraph about web archives and where text comes from. " * 12 + b"</p></article></body></html>")
PAGE_B = (b"<!doctype html><html><head><title>Bravo page</title></head><body><article><p>"
          + b"Bravo paragraph, sent gzip-compressed in two HTTP chunks. " * 12 + b"</p></article></body></html>")
DATE_A = "2020-01-02T03:04:05Z"
DATE_REVISIT = "2020-02-02T00:00:00Z"
DATE_MIRROR = "2020-03-03T12:30:00Z"


# ----- helpers ------------------------------------------------------------------------------------
def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def http(status: str, content_type: str, *extra: tuple[str, str]) -> StatusAndHeaders:
    return StatusAndHeaders(status, [("Content-Type", content_type), *extra], protocol="HTTP/1.1")


def chunked(body: bytes, pieces: int = 2) -> bytes:
    step = -(-len(body) // pieces)
    parts = [body[i:i + step] for i in range(0, len(body), step)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def build_sample(path: Path, gz: bool = True) -> dict[str, str]:
    """A small crawl: two HTML 200 pages (one chunked + gzip), a PNG, a 404, a request, a
    metadata record, a revisit of page A, a URL-agnostic revisit of A, a revisit of a record
    that is not in the file. Returns the WARC-Record-IDs by name."""
    ids: dict[str, str] = {}
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=gz)

        def write(name, record):
            ids[name] = record.rec_headers.get_header("WARC-Record-ID")
            writer.write_record(record)

        write("warcinfo", writer.create_warcinfo_record(path.name, {"software": "test_warc"}))
        write("a", writer.create_warc_record(
            "http://example.com/a", "response", payload=BytesIO(PAGE_A),
            http_headers=http("200 OK", "text/html; charset=utf-8", ("ETag", '"a1"')),
            warc_headers_dict={"WARC-Date": DATE_A, "WARC-IP-Address": "93.184.216.34"}))
        write("request", writer.create_warc_record(
            "http://example.com/a", "request", payload=BytesIO(b""),
            http_headers=StatusAndHeaders("GET /a HTTP/1.1", [("Host", "example.com")], is_http_request=True)))
        write("png", writer.create_warc_record(
            "http://example.com/logo.png", "response", payload=BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
            http_headers=http("200 OK", "image/png")))
        write("404", writer.create_warc_record(
            "http://example.com/missing", "response", payload=BytesIO(b"<html><body>Not found</body></html>"),
            http_headers=http("404 Not Found", "text/html")))
        write("metadata", writer.create_warc_record(
            "http://example.com/a", "metadata", payload=BytesIO(b"via: http://example.com/\r\n"),
            warc_content_type="application/warc-fields"))
        digest_a = "sha1:" + base64.b32encode(hashlib.sha1(PAGE_A).digest()).decode()  # as the writer computes it
        write("revisit", writer.create_revisit_record(
            "http://example.com/a", digest_a, "http://example.com/a", DATE_A,
            http_headers=http("200 OK", "text/html; charset=utf-8"), warc_headers_dict={"WARC-Date": DATE_REVISIT}))
        write("mirror", writer.create_revisit_record(
            "http://mirror.example.org/a", digest_a, "http://example.com/a", DATE_A,
            warc_headers_dict={"WARC-Date": DATE_MIRROR}))
        write("gone", writer.create_revisit_record(
            "http://example.com/gone", "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "http://example.com/gone",
            DATE_A, warc_headers_dict={"WARC-Date": DATE_REVISIT}))
        write("b", writer.create_warc_record(
            "http://example.com/b", "response", payload=BytesIO(chunked(gzip.compress(PAGE_B))),
            http_headers=http("200 OK", "text/html", ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")),
            warc_headers_dict={"WARC-Date": DATE_A}))
    return ids


def record_offsets(path: Path) -> dict[str, int]:
    """WARC-Record-ID -> byte offset, read independently with plain warcio."""
    offsets = {}
    with open(path, "rb") as fh:
        records = ArchiveIterator(fh)
        for record in records:
            record_id = record.rec_headers.get_header("WARC-Record-ID")
            offsets[record_id] = records.get_record_offset()
    return offsets


def ingest(store_dir: Path, *paths: Path) -> IngestResult:
    return run_ingest(Store.open(store_dir, create=True), list(paths))


def documents(store_dir: Path) -> list[dict]:
    rows = []
    for path in Store.open(store_dir).snapshot().paths("documents"):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def by_url(store_dir: Path) -> dict[str, dict]:
    return {row["url"]: row for row in documents(store_dir)}


@pytest.fixture
def no_extraction(monkeypatch):
    """Text extraction is not what these tests check, and it is most of the time taken."""
    def extract(body, content_type, url=None, extractor=None):
        return provenance.extract.Extracted(None, None, None, "none", None, note="skipped in test")
    monkeypatch.setattr(provenance.extract, "extract", extract)


# ----- built archives ---------------------------------------------------------------------------
def test_documents_provenance_and_revisits(tmp_path):
    sample = tmp_path / "sample.warc.gz"
    ids = build_sample(sample)
    offsets = record_offsets(sample)
    result = ingest(tmp_path / "store", sample)

    docs = by_url(tmp_path / "store")
    assert sorted(docs) == ["http://example.com/a", "http://example.com/b", "http://mirror.example.org/a"]
    a = docs["http://example.com/a"]
    assert a["source"] == "warc" and a["http_status"] == 200 and a["content_type"] == "text/html"
    assert a["raw"] == PAGE_A and "Alpha paragraph" in a["text"]
    assert a["warc_record_id"] == ids["a"]
    assert a["warc_filename"] == "sample.warc.gz" and a["source_file"] == str(sample)
    assert a["warc_offset"] == offsets[ids["a"]] > 0
    assert a["fetched_at"] == utc(DATE_A)
    assert a["resolved_ip"] == "93.184.216.34" and a["etag"] == '"a1"'
    assert {"name": "Content-Type", "value": "text/html; charset=utf-8"} in a["headers"]
    assert json.loads(a["metadata"])["warc_payload_digest"].startswith("sha1:")

    # chunked + gzip: stored as the server meant the body
    assert docs["http://example.com/b"]["raw"] == PAGE_B

    # the URL-agnostic revisit: its own URL, date and record, the original's body
    mirror = docs["http://mirror.example.org/a"]
    assert mirror["raw"] == PAGE_A and mirror["warc_record_id"] == ids["mirror"]
    assert mirror["fetched_at"] == utc(DATE_MIRROR) and mirror["warc_offset"] == offsets[ids["mirror"]]
    assert json.loads(mirror["metadata"])["warc_refers_to_target_uri"] == "http://example.com/a"

    # 4 responses + 3 revisits considered; the same-URL revisit is the unchanged page A
    assert (result.records, result.stored, result.already_stored) == (7, 3, 1)
    assert result.stats == {"skipped_not_html": 1, "skipped_not_200": 1, "revisit_unchanged": 1}
    assert [(p.where, p.message.split(" (")[0]) for p in result.problems] == [
        (f"offset {offsets[ids['gone']]}", "revisit of http://example.com/gone refers to a record not in this input")]

    again = ingest(tmp_path / "store", sample)  # the same file again stores nothing twice
    assert (again.stored, again.already_stored) == (0, 4)
    assert len(documents(tmp_path / "store")) == 3


def test_the_ingest_extractor_is_used_and_recorded(tmp_path):
    sample = tmp_path / "sample.warc.gz"
    build_sample(sample)
    run_ingest(Store.open(tmp_path / "store", create=True), [sample], extractor="resiliparse")
    docs = by_url(tmp_path / "store")
    assert len(docs) == 3  # a, b and the URL-agnostic revisit of a: each extracted by resiliparse
    for doc in docs.values():
        assert (doc["extractor"], doc["extractor_version"]) == ("resiliparse", version("resiliparse"))
    assert docs["http://example.com/a"]["text"].startswith("Alpha\n\nAlpha paragraph about web archives")
    assert "Bravo paragraph, sent gzip-compressed" in docs["http://example.com/b"]["text"]


def test_wet_conversion_records(tmp_path):
    wet = tmp_path / "sample.warc.wet"
    text = "Plain text of a page, as Common Crawl extracted it.\nZweite Zeile: äöü."
    with open(wet, "wb") as fh:
        writer = WARCWriter(fh, gzip=False)
        writer.write_record(writer.create_warcinfo_record(wet.name, {"software": "test"}))
        for uri, payload in (("http://example.com/a", text.encode()), ("http://example.com/bad", b"ok \xff\xfe ok")):
            writer.write_record(writer.create_warc_record(
                uri, "conversion", payload=BytesIO(payload), warc_content_type="text/plain",
                warc_headers_dict={"WARC-Date": DATE_A, "WARC-Identified-Content-Language": "eng,deu"}))
    result = ingest(tmp_path / "store", wet)
    docs = by_url(tmp_path / "store")
    assert (result.records, result.stored, result.problems) == (2, 2, [])
    a = docs["http://example.com/a"]
    assert a["source"] == "wet" and a["text"] == text and a["raw"] == text.encode() and a["extractor"] == "none"
    assert a["fetched_at"] == utc(DATE_A) and json.loads(a["metadata"])["language"] == "eng,deu"
    bad = docs["http://example.com/bad"]
    assert bad["text"] == "ok \ufffd\ufffd ok" and "invalid UTF-8" in json.loads(bad["metadata"])["text_note"]


@pytest.mark.parametrize("gz", [False, True], ids=["warc", "warc.gz"])
def test_truncated_file_keeps_the_records_before(tmp_path, gz, no_extraction):
    sample = tmp_path / ("sample.warc.gz" if gz else "sample.warc")
    ids = build_sample(sample, gz=gz)
    last = record_offsets(sample)[ids["b"]]  # page B is the last record: cut inside its body
    cut = tmp_path / ("cut.warc.gz" if gz else "cut.warc")
    cut.write_bytes(sample.read_bytes()[:-30])

    result = ingest(tmp_path / "store", cut)
    assert sorted(by_url(tmp_path / "store")) == ["http://example.com/a", "http://mirror.example.org/a"]
    truncated = [p for p in result.problems if "truncated" in p.message]
    assert [(p.file, p.where) for p in truncated] == [(str(cut), f"offset {last}")]


@pytest.mark.parametrize("gz", [False, True], ids=["warc", "warc.gz"])
def test_corrupt_record_in_the_middle_is_skipped(tmp_path, gz, no_extraction):
    sample = tmp_path / "sample.warc"
    ids = build_sample(sample, gz=gz)
    bad_at = record_offsets(sample)[ids["png"]]
    data = bytearray(sample.read_bytes())
    data[bad_at:bad_at + 40] = b"\x00" * 40  # the PNG record's "WARC/1.0" line (or its gzip header)
    broken = tmp_path / ("broken.warc.gz" if gz else "broken.warc")
    broken.write_bytes(bytes(data))

    result = ingest(tmp_path / "store", broken)
    # everything before and after the corrupt record is there
    assert sorted(by_url(tmp_path / "store")) == [
        "http://example.com/a", "http://example.com/b", "http://mirror.example.org/a"]
    assert result.problems[0].where == f"offset {bad_at}"
    assert "next record at offset" in result.problems[0].message


def test_whole_file_gzip_is_read_as_one_stream(tmp_path, no_extraction):
    plain = tmp_path / "plain.warc"
    ids = build_sample(plain, gz=False)
    offsets = record_offsets(plain)
    whole = tmp_path / "whole.warc.gz"
    whole.write_bytes(gzip.compress(plain.read_bytes()))  # `gzip file.warc`: one member, not one per record

    result = ingest(tmp_path / "store", whole)
    docs = by_url(tmp_path / "store")
    assert sorted(docs) == ["http://example.com/a", "http://example.com/b", "http://mirror.example.org/a"]
    assert "gzip members do not line up" in result.problems[0].message
    a = docs["http://example.com/a"]
    assert a["warc_offset"] is None  # no byte offset of a record exists in such a file
    assert json.loads(a["metadata"])["offset_in_gzip_stream"] == offsets[ids["a"]]

    cut = tmp_path / "whole-cut.warc.gz"  # ... and cut short: what decompresses is still read
    cut.write_bytes(whole.read_bytes()[:-100])
    result = ingest(tmp_path / "store2", cut)
    assert sorted(by_url(tmp_path / "store2")) == ["http://example.com/a", "http://mirror.example.org/a"]
    assert any("gzip stream ends early (file truncated)" in p.message for p in result.problems)


def test_payload_over_the_limit_is_a_problem(tmp_path, monkeypatch, no_extraction):
    sample = tmp_path / "sample.warc.gz"
    build_sample(sample)
    monkeypatch.setattr(warc, "MAX_PAYLOAD_BYTES", 300)
    result = ingest(tmp_path / "store", sample)
    assert not by_url(tmp_path / "store")  # both pages are over 300 bytes, B only once decompressed
    messages = [p.message for p in result.problems]
    assert any("http://example.com/a: payload of" in m and "over the 300-byte limit" in m for m in messages)
    assert any("http://example.com/b: Content-Encoding gzip: body decodes to more than 300 bytes" in m
               for m in messages)
    assert result.stats["revisit_of_bad_record"] == 2  # the revisits of A


def test_brotli_body(tmp_path, monkeypatch, no_extraction):
    brotli = pytest.importorskip("brotli")
    path = tmp_path / "br.warc"
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=False)
        writer.write_record(writer.create_warc_record(
            "http://example.com/a", "response", payload=BytesIO(brotli.compress(PAGE_A)),
            http_headers=http("200 OK", "text/html", ("Content-Encoding", "br"))))
    ingest(tmp_path / "store", path)
    assert by_url(tmp_path / "store")["http://example.com/a"]["raw"] == PAGE_A

    monkeypatch.setattr(warc, "_brotli_decompressor", lambda: None)  # as where brotli is not installed
    result = ingest(tmp_path / "store2", path)
    assert [p.where for p in result.problems] == ["offset 0"]
    assert "brotli module is not installed" in result.problems[0].message


def test_arc_file(tmp_path, no_extraction):
    def arc_record(url, ip, date, content_type, body):
        return f"{url} {ip} {date} {content_type} {len(body)}\n".encode() + body + b"\n"

    path = tmp_path / "sample.arc"
    path.write_bytes(
        arc_record("filedesc://sample.arc", "0.0.0.0", "20080430204825", "text/plain",
                   b"1 0 Test\nURL IP-address Archive-date Content-type Archive-length\n")
        + arc_record("http://example.com/a", "93.184.216.34", "20080430204826", "text/html",
                     b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + PAGE_A))
    result = ingest(tmp_path / "store", path)
    a = by_url(tmp_path / "store")["http://example.com/a"]
    assert result.problems == [] and a["raw"] == PAGE_A
    assert a["fetched_at"] == utc("2008-04-30T20:48:26Z") and a["resolved_ip"] == "93.184.216.34"
    assert a["warc_record_id"] is None  # ARC has no record ids, and none is made up
    assert a["warc_offset"] == path.read_bytes().index(b"http://example.com/a")


def test_unsupported_container(tmp_path):
    path = tmp_path / "x.warc.lz4"
    path.write_bytes(b"\x04\x22\x4d\x18" + b"\x00" * 100)
    result = ingest(tmp_path / "store", path)
    assert [(p.where, p.message.split(":")[0]) for p in result.problems] == [("offset 0", "LZ4-compressed file")]


@pytest.mark.parametrize("text, expected", [
    ("2020-01-02T03:04:05Z", "2020-01-02T03:04:05+00:00"),
    ("2014-02-10T00:00:01.01Z", "2014-02-10T00:00:01.010000+00:00"),
    ("2019-08-15T01:02", "2019-08-15T01:02:00+00:00"),  # WARC 1.1 allows lower precision
    ("2014-01", "2014-01-01T00:00:00+00:00"),
    ("2009-03-05T08:43:19-0800", "2009-03-05T16:43:19+00:00"),
    ("20080430204825", "2008-04-30T20:48:25+00:00"),  # ARC
    ("2008-10-294T05:21:46-0700", None),  # ClueWeb09's quirk: kept raw in metadata instead
    ("null", None),
])
def test_warc_dates(text, expected):
    parsed = warc._parse_date(text)
    assert (parsed.isoformat() if parsed else None) == expected


# ----- the shared archives ----------------------------------------------------------------------
# Deliberately broken archives: (documents that must survive, text one problem must contain).
BROKEN = {
    "webrecorder__warcio/test/data/example-trunc.warc": (0, "compressed body ends early"),
    "webrecorder__warcio/test/data/example-wrong-chunks.warc.gz": (1, "gzip members do not line up"),
    "webrecorder__warcio/test/data/example-bad-non-chunked.warc.gz": (1, "gzip members do not line up"),
    "webrecorder__warcio/test/data/example-bad.warc.gz.bad": (1, "gzip members do not line up"),
    "webrecorder__warcio/test/data/example-space-in-url.arc": (0, "truncated: 12 of its 1591 bytes"),
    "webrecorder__warcio/test/data/bad.arc": (0, "no valid length ('abc')"),
    "oduwsdl__ipwb/samples/warcs/broken.warc": (1, "Content-Length (7) is wrong"),
    "oduwsdl__ipwb/samples/warcs/redirect.warc": (0, "truncated: 9 of its 265 bytes"),
    "iipc__webarchive-commons/src/test/resources/org/archive/resource/html/link-extraction-test.warc":
        (5, "Content-Length (594) is wrong"),
    "chatnoir-eu__chatnoir-resiliparse/tests/data/clipped.warc.gz": (0, "truncated: 13068 of its 88275 bytes"),
    "chatnoir-eu__chatnoir-resiliparse/tests/data/warcfile.warc.lz4": (0, "LZ4-compressed file: not supported"),
    "chatnoir-eu__chatnoir-resiliparse/tests/data/block-sized-records.warc.lz4": (0, "LZ4-compressed"),
    "archivesunleashed__aut/src/test/resources/arc/badexample.arc.gz": (0, "Content-Length (680) is wrong"),
}
# Valid archives whose revisits refer to captures that are not in the file (a real problem).
UNRESOLVED_REVISITS = {"oduwsdl__ipwb/samples/warcs/sample-1.warc.gz": 1,
                       "webrecorder__pywb/sample_archive/warcs/dupes.warc.gz": 1}
# Revisits that refer to another file: ingested together, in this order.
TOGETHER = [
    ("ukwa__webarchive-discovery/warc-indexer/src/test/resources/gov.uk-revisit-warcs/"
     "BL-20140325121225068-00000-32090~opera~8443.warc.gz",
     "ukwa__webarchive-discovery/warc-indexer/src/test/resources/gov.uk-revisit-warcs/"
     "BL-20140325122341434-00000-32090~opera~8443.warc.gz"),
    ("webrecorder__pywb/sample_archive/warcs/example-url-agnostic-orig.warc.gz",
     "webrecorder__pywb/sample_archive/warcs/example-url-agnostic-revisit.warc.gz"),
]
# warcio's own brotli decoding fails with brotli >= 1.1, so these cannot be counted with it.
BROTLI = ("ukwa__webarchive-discovery/warc-indexer/src/test/resources/compression/transfer_compression_brotli.warc",
          "ukwa__webarchive-discovery/warc-indexer/src/test/resources/compression/transfer_compression_brotli.warc.gz")


def archives(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file() and detect_format(path) == "warc":
                out.append(path.relative_to(root).as_posix())
        except IngestError:
            continue
    return out


def warcio_expected_documents(paths: list[Path]) -> int:
    """Independent count with plain warcio: distinct (URL, body) of HTML 200 responses and of WET
    conversion records, plus revisits of such a response at another URL."""
    docs: set[tuple[str, str]] = set()
    bodies: dict[tuple[str, str], str] = {}  # (URL, payload digest) -> body hash
    revisits = []
    for path in paths:
        with open(path, "rb") as fh:
            for record in ArchiveIterator(fh, arc2warc=True):
                h = record.rec_headers
                uri, digest = h.get_header("WARC-Target-URI"), h.get_header("WARC-Payload-Digest")
                if record.rec_type == "conversion":
                    docs.add((uri, hashlib.sha256(record.content_stream().read()).hexdigest()))
                elif record.rec_type == "revisit":
                    revisits.append((uri, h.get_header("WARC-Refers-To-Target-URI") or uri, digest))
                elif (record.rec_type == "response" and record.http_headers and uri.startswith("http")
                      and record.http_headers.get_statuscode() == "200"):
                    body = record.content_stream().read()
                    if looks_like_html(record.http_headers.get_header("Content-Type"), body):
                        sha = hashlib.sha256(body).hexdigest()
                        docs.add((uri, sha))
                        bodies[(uri, digest)] = sha
    for uri, refers_to_uri, digest in revisits:
        if (refers_to_uri, digest) in bodies:
            docs.add((uri, bodies[(refers_to_uri, digest)]))
    return len(docs)


@pytest.mark.shared
def test_valid_shared_archives_match_a_warcio_count(shared_dir, tmp_path, no_extraction):
    root = shared_dir / "data" / "warc"
    together = {name for group in TOGETHER for name in group}
    groups = [[name] for name in archives(root) if name not in BROKEN and name not in together
              and name not in BROTLI] + [list(group) for group in TOGETHER]
    assert len(groups) > 60
    mismatches, total = [], 0
    for n, group in enumerate(groups):
        paths = [root / name for name in group]
        result = ingest(tmp_path / f"store{n}", *paths)
        stored = len(documents(tmp_path / f"store{n}"))
        expected = warcio_expected_documents(paths)
        total += stored
        unresolved = [p for p in result.problems if "refers to a record not in this input" in p.message]
        problems_ok = len(result.problems) == len(unresolved) == UNRESOLVED_REVISITS.get(group[0], 0)
        if stored != expected or not problems_ok:
            mismatches.append((group, stored, expected, [str(p) for p in result.problems]))
    assert not mismatches
    assert total > 300


@pytest.mark.shared
def test_broken_shared_archives_report_file_and_offset(shared_dir, tmp_path, no_extraction):
    root = shared_dir / "data" / "warc"
    for n, (name, (kept, expected_problem)) in enumerate(BROKEN.items()):
        path = root / name
        store = Store.open(tmp_path / f"store{n}", create=True)
        if name.endswith(".bad"):  # not a WARC file name: call the reader directly
            result = IngestResult()
            with store.run("ingest") as run:
                sink = DocumentSink(run, "bad", set())
                warc.ingest_warc(path, run, sink, result,
                                 lambda where, msg: result.problems.append((str(path), where, msg)), None)
                sink.flush()
            problems = [f"{f}:{w}: {m}" for f, w, m in result.problems]
        else:
            problems = [str(p) for p in run_ingest(store, [path]).problems]
        assert problems, name
        assert all(p.startswith(f"{path}:offset ") for p in problems), problems
        assert any(expected_problem in p for p in problems), (name, problems)
        assert len(documents(tmp_path / f"store{n}")) == kept, (name, problems)


@pytest.mark.shared
def test_compressed_bodies_decode_to_the_same_page(shared_dir, tmp_path, no_extraction):
    folder = shared_dir / "data" / "warc" / "ukwa__webarchive-discovery/warc-indexer/src/test/resources/compression"
    pytest.importorskip("brotli")
    hashes = set()
    for n, path in enumerate(sorted(folder.glob("transfer_compression_*.warc*"))):  # none, gzip, brotli
        result = ingest(tmp_path / f"s{n}", path)
        assert result.problems == [] and result.stored == 1, path
        hashes.add(documents(tmp_path / f"s{n}")[0]["raw_sha256"])
    assert len(hashes) == 1


@pytest.mark.shared
def test_revisits_resolve_across_files(shared_dir, tmp_path, no_extraction):
    root = shared_dir / "data" / "warc"
    first, second = (root / name for name in TOGETHER[0])
    alone = ingest(tmp_path / "alone", second)
    assert alone.problems and all("not in this input" in p.message for p in alone.problems)
    both = ingest(tmp_path / "both", first, second)
    assert both.problems == [] and both.stats["revisit_unchanged"] == len(alone.problems)

    orig, revisit = (root / name for name in TOGETHER[1])
    result = ingest(tmp_path / "agnostic", orig, revisit)
    docs = by_url(tmp_path / "agnostic")
    assert result.problems == [] and len(docs) == 2
    copy = docs["http://test@example.com/"]
    assert copy["warc_filename"] == revisit.name
    assert copy["raw_sha256"] == next(d for u, d in docs.items() if u != "http://test@example.com/")["raw_sha256"]


@pytest.mark.shared
def test_cli_exit_codes(shared_dir, tmp_path, cli):
    root = shared_dir / "data" / "warc"
    good = root / "webrecorder__warcio/test/data/example.warc.gz"
    proc = cli("ingest", good, "--store", tmp_path / "store", check=0)
    assert "1 stored" in proc.stdout
    broken = root / "oduwsdl__ipwb/samples/warcs/broken.warc"
    proc = cli("ingest", broken, "--store", tmp_path / "store", check=3)
    assert f"{broken}:offset 3058: response record is not followed by the next record" in proc.stderr
