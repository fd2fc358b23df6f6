"""`provenance ingest` for JSONL and Parquet: provenance, idempotency, and bad input that loses nothing."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version

import pyarrow as pa
import pyarrow.parquet as pq

import provenance
from provenance.extract import DEFAULT_EXTRACTOR
from provenance.store import Store

HTML = ("<html><head><title>Page {i}</title></head><body><article><p>"
        + "A paragraph with enough ordinary words to be kept by the extractor as main text. " * 3
        + " Number {i}.</p></article></body></html>")


def _write_jsonl(path, lines):
    with open(path, "wb") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())


def test_jsonl_ingest_stores_documents_with_provenance(tmp_path, cli):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"url": f"https://site{i}.example.com/a", "html": HTML.format(i=i),
                        "fetched_at": "2019-05-01T12:00:00Z", "lang": "en"} for i in range(3)]
                 + [{"url": "https://plain.example.org/t", "text": "just some text"}])
    proc = cli("ingest", src, "--store", tmp_path / "s", check=0)
    assert "4 stored" in proc.stdout
    con = provenance.connect(tmp_path / "s")
    rows = con.execute("SELECT url, source, text, text_sha256, raw, raw_sha256, title, extractor, fetched_at, "
                       "domain, registered_domain, metadata, source_file, source_line FROM documents ORDER BY url"
                       ).fetchall()
    assert len(rows) == 4
    for (url, source, text, text_sha, raw, raw_sha, title, extractor, fetched_at, domain, reg, meta,
         source_file, line) in rows:
        assert source == "jsonl" and source_file == str(src) and line >= 1
        assert raw_sha == hashlib.sha256(raw).hexdigest()
        assert text_sha == hashlib.sha256(text.encode()).hexdigest()
        if "plain" not in url:
            assert "Number" in text and title and extractor == DEFAULT_EXTRACTOR
            assert fetched_at.year == 2019 and domain.startswith("site") and reg == "example.com"
            assert json.loads(meta) == {"lang": "en"}
        else:
            assert text == "just some text" and extractor == "none" and fetched_at is None


def test_ingest_extractor_setting_is_used_and_recorded(tmp_path, cli):
    src, config = tmp_path / "in.jsonl", tmp_path / "provenance.toml"
    page = ("<html><head><title>Menu test</title></head><body><nav><ul>"
            + "".join(f"<li><a href='/m{i}'>Menu entry {i}</a></li>" for i in range(10)) + "</ul></nav>"
            + HTML.split("<body>")[1].format(i=7).replace("</body>", "<footer>Site footer line</footer></body>"))
    _write_jsonl(src, [{"url": "https://site.example.com/a", "html": page}])
    config.write_text('[ingest]\nextractor = "resiliparse"\n')
    cli("ingest", src, "--store", tmp_path / "s", env={"PROVENANCE_CONFIG": str(config)}, check=0)
    con = provenance.connect(tmp_path / "s")
    text, extractor, extractor_version, run_config = con.execute(
        "SELECT text, extractor, extractor_version, r.config FROM documents JOIN runs r USING (run_id)").fetchone()
    assert (extractor, extractor_version) == ("resiliparse", version("resiliparse"))
    assert "ordinary words to be kept" in text and "Number 7." in text
    assert "Menu entry" not in text and "Site footer" not in text
    assert json.loads(run_config)["extractor"] == "resiliparse"


def test_ingesting_the_same_file_twice_stores_nothing_twice(tmp_path, cli):
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [{"url": f"https://e.com/{i}", "text": f"text {i}"} for i in range(5)])
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    proc = cli("ingest", src, "--store", tmp_path / "s", check=0)
    assert "0 stored, 5 already stored" in proc.stdout
    con = provenance.connect(tmp_path / "s")
    assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM documents").fetchone() == (5, 5)


def test_bad_lines_are_reported_with_file_and_line_and_good_lines_are_kept(tmp_path, cli):
    src = tmp_path / "mixed.jsonl"
    _write_jsonl(src, [
        {"url": "https://e.com/1", "text": "good one"},
        b'{"url": "https://e.com/2", "text": \n',                      # line 2: invalid JSON
        b'{"url": "https://e.com/3", "text": "caf\xe9 latin-1"}\n',     # line 3: invalid UTF-8
        {"text": "no url here"},                                       # line 4: missing url
        {"url": "https://e.com/5"},                                    # line 5: neither text nor html
        {"url": "https://e.com/6", "text": "good two", "fetched_at": "yesterday"},  # line 6: bad time
        {"url": "https://e.com/7", "text": "good three"},
    ])
    proc = cli("ingest", src, "--store", tmp_path / "s", check=3)  # 3 = partial success
    err = proc.stderr
    assert f"{src}:line 2: invalid JSON" in err
    assert f"{src}:line 3: invalid UTF-8" in err
    assert f"{src}:line 4: missing 'url'" in err
    assert f"{src}:line 5: needs 'text' or 'html'" in err
    assert f"{src}:line 6: bad 'fetched_at'" in err
    con = provenance.connect(tmp_path / "s")
    assert sorted(r[0] for r in con.execute("SELECT url FROM documents").fetchall()) == [
        "https://e.com/1", "https://e.com/7"]
    run = con.execute("SELECT status, stats FROM runs WHERE command = 'ingest'").fetchone()
    assert run[0] == "partial" and json.loads(run[1])["problems"] == 5


def test_parquet_ingest_and_corrupt_parquet(tmp_path, cli):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"url": ["https://p.com/1", "https://p.com/2"], "text": ["one", "two"],
                             "fetched_at": ["2018-01-01T00:00:00Z", None]}), src)
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    assert provenance.connect(tmp_path / "s").execute(
        "SELECT count(*) FROM documents WHERE source = 'parquet'").fetchone()[0] == 2
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    proc = cli("ingest", broken, "--store", tmp_path / "s")
    assert proc.returncode == 1 and f"{broken}: not a readable Parquet file" in proc.stderr
    assert Store.open(tmp_path / "s").snapshot().entries("documents")  # earlier data untouched


def test_binary_and_huge_html_bodies_are_stored_without_crashing(tmp_path, cli):
    src = tmp_path / "odd.jsonl"
    huge = "<html><body>" + "<p>" + "word " * 2_000_000 + "</p></body></html>"  # ~10 MB, over the limit
    _write_jsonl(src, [{"url": "https://e.com/huge", "html": huge},
                       {"url": "https://e.com/bin", "html": "\x00\x01\x02 not really html \ufffd"},
                       {"url": "https://e.com/broken", "html": "<html><body><p>unclosed <div><table><tr><td>cell"}])
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    rows = dict(provenance.connect(tmp_path / "s").execute(
        "SELECT url, metadata FROM documents").fetchall())
    assert "extraction limit" in json.loads(rows["https://e.com/huge"])["extraction_note"]
    assert len(rows) == 3


def test_unknown_format_and_missing_file_fail_cleanly(tmp_path, cli):
    (tmp_path / "x.csv").write_text("a,b\n")
    proc = cli("ingest", tmp_path / "x.csv", "--store", tmp_path / "s")
    assert proc.returncode == 1 and "unknown input format" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("ingest", tmp_path / "nope.jsonl", "--store", tmp_path / "s")
    assert proc.returncode == 1 and "no such file" in proc.stderr


def test_a_directory_ingests_known_formats_and_skips_the_rest(tmp_path, cli):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_text(json.dumps({"url": "https://a.org/", "text": "a"}) + "\n")
    (d / "sub" / "b.jsonl").write_text(json.dumps({"url": "https://b.org/", "text": "b"}) + "\n")
    (d / "LICENSE").write_text("not data")
    (d / "sub" / "notes.csv").write_text("a,b\n")
    proc = cli("ingest", d, "--store", tmp_path / "s", check=0)
    assert "2 stored" in proc.stdout and "2 file(s)" in proc.stdout
    # Skipped files are said, not silently dropped (exit 0 all the same: a README beside data is normal).
    assert "2 file(s) skipped (unknown format: LICENSE, notes.csv)" in proc.stdout
    stats = json.loads(provenance.connect(tmp_path / "s").execute(
        "SELECT stats FROM runs WHERE command = 'ingest'").fetchone()[0])
    assert stats["skipped_unknown_format"] == [str(d / "LICENSE"), str(d / "sub" / "notes.csv")]


def test_many_bad_records_print_at_most_20_lines(tmp_path, cli):
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps({"link": f"https://a.org/{i}", "text": "x"}) + "\n" for i in range(5000)))
    proc = cli("ingest", src, "--store", tmp_path / "s", check=3)
    lines = proc.stderr.splitlines()
    assert len(lines) == 21 and lines[-1].startswith("provenance: bad input: 4980 more not shown")
    assert "5000 bad" in proc.stdout
