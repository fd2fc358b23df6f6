"""User mistakes through the real CLI: each gets its exit code and a short message that says what is wrong.

The table is the contract: one row per mistake a real user makes (a typo in a
flag, a wrong path, a file that is not what it claims to be), the exit code it
must give (2 usage, 1 failure, 3 partial: see provenance/exitcodes.py), and
words its message must contain. Every row also checks that stderr holds no
traceback and stays short. Below the table: the safety net for the unexpected
(--debug / PROVENANCE_DEBUG=1) and a disk that fills up during an ingest.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from provenance.store import Store
from conftest import run_cli

GOOD = json.dumps({"url": "https://a.example/1", "text": "hello"}) + "\n"
BROKEN_HOOK = "import provenance\n\n@provenance.hookimpl\ndef register_detectorz():\n    return []\n"


def _parquet(columns: dict):
    return lambda path: pq.write_table(pa.table(columns), path)


def _truncated_gzip(path: Path) -> None:
    path.write_bytes(gzip.compress(GOOD.encode() * 2000)[:120])


@dataclass
class Mistake:
    name: str
    args: tuple  # {tmp}: this case's directory, {store}: a store with documents, {empty}: a store without
    code: int
    words: tuple
    files: dict = field(default_factory=dict)  # name in {tmp} -> str, bytes or a function writing the path


MISTAKES = [
    # ----- the command line itself
    Mistake("unknown option", ("ingest", "--bogus", "x"), 2, ("No such option '--bogus'", "ingest --help")),
    Mistake("unknown command", ("frobnicate",), 2, ("No such command 'frobnicate'",)),
    Mistake("bad --format", ("query", "select 1", "--store", "{store}", "--format", "xml"), 2,
            ("'--format'", "'xml' is not one of")),
    Mistake("--max-pages negative", ("crawl", "https://a.example/", "--max-pages", "-1", "--store", "{tmp}/s"), 2,
            ("--max-pages ([crawl] max_pages)", "expected integer >= 1")),
    Mistake("--max-pages not a number", ("crawl", "https://a.example/", "--max-pages", "abc",
                                         "--store", "{tmp}/s"), 2, ("'--max-pages'", "'abc'")),
    Mistake("--max-depth negative", ("crawl", "https://a.example/", "--max-depth", "-3", "--store", "{tmp}/s"), 2,
            ("--max-depth ([crawl] max_depth)", "expected integer >= 0")),
    Mistake("bad --isolation", ("tag", "--store", "{store}", "--isolation", "bogus"), 2, ("'--isolation'",)),
    Mistake("--config missing", ("query", "select 1", "--store", "{store}", "--config", "{tmp}/nope.toml"), 2,
            ("nope.toml", "not found")),
    Mistake("--config not TOML", ("query", "select 1", "--store", "{store}", "--config", "{tmp}/bad.toml"), 2,
            ("bad.toml", "line 1"), {"bad.toml": "[crawl\n"}),
    # ----- the store
    Mistake("query without a store", ("query", "select 1", "--store", "{tmp}/none"), 1,
            ("no provenance store here", "run crawl or ingest first")),
    Mistake("tag without a store", ("tag", "--store", "{tmp}/none"), 1, ("no provenance store here",)),
    Mistake("export without a store", ("export", "--out", "{tmp}/out", "--store", "{tmp}/none"), 1,
            ("no provenance store here",)),
    Mistake("export of an empty store", ("export", "--out", "{tmp}/out", "--store", "{empty}"), 1,
            ("holds no documents",)),
    Mistake("--store is a file", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/a.jsonl"), 2,
            ("is a file, not a store directory",), {"a.jsonl": GOOD}),
    Mistake("--store cannot be created", ("ingest", "{tmp}/a.jsonl", "--store", "/proc/no/such/store"), 1,
            ("cannot create the store", "/proc/no/such/store"), {"a.jsonl": GOOD}),
    Mistake("--store is another program's directory", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/other"), 1,
            ("is not empty and is not a provenance store",), {"a.jsonl": GOOD, "other/file.txt": "x"}),
    Mistake("store from a newer version", ("query", "select 1", "--store", "{tmp}/newer"), 1,
            ("newer than this tool reads",),
            {"newer/store.json": json.dumps({"format": "provenance-store", "version": 99})}),
    Mistake("export --out onto a file", ("export", "--out", "{tmp}/out.txt", "--store", "{store}"), 2,
            ("'--out'", "is a file"), {"out.txt": "x"}),
    Mistake("SQL error", ("query", "select * from nosuch", "--store", "{store}"), 2, ("SQL error", "nosuch")),
    Mistake("report without a store", ("report", "--out", "{tmp}/r.html", "--store", "{tmp}/none"), 1,
            ("no provenance store here",)),
    Mistake("report --where not a predicate", ("report", "--out", "{tmp}/r.html", "--store", "{store}",
                                               "--where", "no_such_column"), 2, ("--where", "not a valid predicate")),
    Mistake("report --out in a missing directory", ("report", "--out", "{tmp}/no/r.html", "--store", "{store}"), 2,
            ("no such directory", "--out")),
    # ----- ingest: paths and whole files
    Mistake("ingest path missing", ("ingest", "{tmp}/nope.jsonl", "--store", "{tmp}/s"), 1,
            ("nope.jsonl", "no such file or directory")),
    Mistake("ingest file of unknown format", ("ingest", "{tmp}/data.csv", "--store", "{tmp}/s"), 1,
            ("unknown input format", ".jsonl"), {"data.csv": "a,b\n"}),
    Mistake("directory with only unknown files", ("ingest", "{tmp}/in", "--store", "{tmp}/s"), 1,
            ("no files to ingest", "unknown format", ".jsonl"), {"in/notes.txt": "x", "in/data.csv": "a"}),
    Mistake("empty directory", ("ingest", "{tmp}/in", "--store", "{tmp}/s"), 1, ("no files to ingest",),
            {"in/.keep": ""}),
    Mistake("Parquet without url", ("ingest", "{tmp}/x.parquet", "--store", "{tmp}/s"), 1,
            ("no 'url' column", "link, body"),
            {"x.parquet": _parquet({"link": [f"https://a.example/{i}" for i in range(20_000)],
                                    "body": ["t"] * 20_000})}),
    Mistake("Parquet without text or html", ("ingest", "{tmp}/x.parquet", "--store", "{tmp}/s"), 1,
            ("neither a 'text' nor an 'html' column",), {"x.parquet": _parquet({"url": ["https://a.example/"]})}),
    Mistake("Parquet url of the wrong type", ("ingest", "{tmp}/x.parquet", "--store", "{tmp}/s"), 1,
            ("column 'url' is of type int64", "must be a string"),
            {"x.parquet": _parquet({"url": [1, 2], "text": ["a", "b"]})}),
    Mistake("Parquet that is not Parquet", ("ingest", "{tmp}/x.parquet", "--store", "{tmp}/s"), 1,
            ("not a readable Parquet file",), {"x.parquet": b"PAR1 this is not parquet"}),
    # ----- ingest: bad records (partial: the good ones are kept)
    Mistake("invalid JSON line", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("a.jsonl:line 2", "invalid JSON"), {"a.jsonl": GOOD + '{"url": \n'}),
    Mistake("invalid UTF-8", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("a.jsonl:line 1", "invalid UTF-8"), {"a.jsonl": b'{"url": "\xff\xfe"}\n' + GOOD.encode()}),
    Mistake("url of the wrong type (JSONL)", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("'url' must be a string, got a number",), {"a.jsonl": '{"url": 5, "text": "x"}\n' + GOOD}),
    Mistake("url missing (JSONL)", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("missing 'url'",), {"a.jsonl": '{"link": "https://a.example/", "text": "x"}\n' + GOOD}),
    Mistake("text of the wrong type", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("'text' must be a string, got an array",), {"a.jsonl": '{"url": "https://b.example/", "text": [1]}\n'}),
    Mistake("neither text nor html", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("needs 'text' or 'html'",), {"a.jsonl": '{"url": "https://b.example/"}\n'}),
    Mistake("a record that is not an object", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3,
            ("expected a JSON object",), {"a.jsonl": '["https://b.example/"]\n'}),
    Mistake("bad fetched_at", ("ingest", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 3, ("bad 'fetched_at'",),
            {"a.jsonl": '{"url": "https://b.example/", "text": "x", "fetched_at": "yesterday"}\n'}),
    Mistake("truncated gzip", ("ingest", "{tmp}/a.jsonl.gz", "--store", "{tmp}/s"), 3,
            ("a.jsonl.gz", "unreadable after this point"), {"a.jsonl.gz": _truncated_gzip}),
    Mistake(".gz that is not gzip", ("ingest", "{tmp}/a.jsonl.gz", "--store", "{tmp}/s"), 3,
            ("Not a gzipped file",), {"a.jsonl.gz": GOOD}),
    Mistake("WARC that is garbage", ("ingest", "{tmp}/a.warc", "--store", "{tmp}/s"), 3,
            ("a.warc:offset 0", "unreadable record"), {"a.warc": bytes(range(256)) * 12}),
    Mistake("WARC in LZ4", ("ingest", "{tmp}/a.warc.lz4", "--store", "{tmp}/s"), 3,
            ("LZ4-compressed", "decompress it first"), {"a.warc.lz4": b"\x04\x22\x4d\x18abcdef"}),
    # ----- reference sets
    Mistake("reference file missing", ("reference", "add", "llm", "{tmp}/nope.jsonl", "--store", "{tmp}/s"), 1,
            ("nope.jsonl", "no such file or directory")),
    Mistake("reference name invalid", ("reference", "add", "My Set!", "{tmp}/a.jsonl", "--store", "{tmp}/s"), 2,
            ("invalid reference set name 'My Set!'", "lower-case"), {"a.jsonl": GOOD}),
    Mistake("reference remove of an unknown name", ("reference", "remove", "nosuch", "--store", "{store}"), 2,
            ("no reference set named 'nosuch'", "known: none yet", "provenance reference list")),
    Mistake("reference file without usable records", ("reference", "add", "llm", "{tmp}/a.jsonl",
                                                      "--store", "{tmp}/s"), 1,
            ("a.jsonl: no usable records", "line 1: missing 'text'", "--text-field"),
            {"a.jsonl": '{"body": "x"}\n{"body": "y"}\n'}),
    # ----- crawl requests
    Mistake("crawl without URLs", ("crawl", "--store", "{tmp}/s"), 2, ("give start URLs",)),
    Mistake("crawl of an invalid URL", ("crawl", "http://[::1", "--store", "{tmp}/s"), 2,
            ("invalid URL 'http://[::1'", "IPv6")),
    Mistake("crawl of a port out of range", ("crawl", "http://a.example:99999/", "--store", "{tmp}/s"), 2,
            ("invalid URL", "Port out of range")),
    Mistake("crawl of file:///etc/passwd", ("crawl", "file:///etc/passwd", "--store", "{tmp}/s"), 2,
            ("scheme 'file' is not allowed", "only http and https")),
    Mistake("crawl of a URL without scheme", ("crawl", "example.org", "--store", "{tmp}/s"), 2,
            ("not an absolute URL", "https://example.org")),
    Mistake("crawl of a URL without host", ("crawl", "http:///x", "--store", "{tmp}/s"), 2, ("has no host",)),
    Mistake("sitemap URL with a bad scheme", ("crawl", "--sitemap", "ftp://a.example/s.xml", "--store", "{tmp}/s"),
            2, ("scheme 'ftp' is not allowed",)),
    Mistake("start URLs and a sitemap", ("crawl", "https://a.example/", "--sitemap", "https://a.example/s.xml",
                                         "--store", "{tmp}/s"), 2, ("give exactly one of",)),
    Mistake("--urls file missing", ("crawl", "--urls", "{tmp}/urls.txt", "--store", "{tmp}/s"), 2,
            ("'--urls'", "does not exist")),
    Mistake("URL list without URLs", ("crawl", "--urls", "{tmp}/urls.txt", "--store", "{tmp}/s"), 2,
            ("no URLs in the list",), {"urls.txt": "# nothing yet\n"}),
    Mistake("URL list line with three fields", ("crawl", "--urls", "{tmp}/urls.txt", "--store", "{tmp}/s"), 2,
            ("urls.txt:2", "expected 'URL' or 'URL SHA256'"), {"urls.txt": "https://a.example/\nhttps://b/ x y\n"}),
    Mistake("URL list with a bad sha256", ("crawl", "--urls", "{tmp}/urls.txt", "--store", "{tmp}/s"), 2,
            ("sha256 of 64 hex digits",), {"urls.txt": "https://a.example/ abc\n"}),
    Mistake("URL list with a file: URL", ("crawl", "--urls", "{tmp}/urls.txt", "--store", "{tmp}/s"), 2,
            ("urls.txt:1", "scheme 'file' is not allowed"), {"urls.txt": "file:///etc/passwd\n"}),
    # ----- plugins
    Mistake("unknown --plugins name", ("tag", "--store", "{store}", "--plugins", "nosuch"), 2,
            ("no detector or plugin named 'nosuch'", "exact_duplicate")),
    Mistake("unknown --disable name", ("tag", "--store", "{store}", "--disable", "nosuch"), 2,
            ("no detector or plugin named 'nosuch'",)),
    Mistake("--plugin-module file missing", ("tag", "--store", "{store}", "--plugin-module", "{tmp}/nope.py"), 1,
            ("nope.py", "not found")),
    Mistake("--plugin-module module missing", ("plugins", "--plugin-module", "no_such_module_xyz"), 1,
            ("no_such_module_xyz", "failed to import", "ModuleNotFoundError")),
    Mistake("--plugin-module with a syntax error", ("tag", "--store", "{store}", "--plugin-module", "{tmp}/bad.py"),
            1, ("bad.py", "SyntaxError"), {"bad.py": "def (\n"}),
    Mistake("--plugin-module with a misspelled hook", ("plugins", "--plugin-module", "{tmp}/hooky.py"), 1,
            ("unknown hook 'register_detectorz'", "register_detectors"), {"hooky.py": BROKEN_HOOK}),
    Mistake("plugins --hook unknown", ("plugins", "--hook", "nosuch"), 2, ("no such hook",)),
    Mistake("plugin new with a bad name", ("plugin", "new", "Bad Name!", "--dir", "{tmp}"), 2,
            ("invalid plugin name 'Bad Name!'",)),
    Mistake("plugin new over an existing package", ("plugin", "new", "shouting", "--dir", "{tmp}"), 2,
            ("already exists", "nothing was written"), {"provenance-shouting/x": "x"}),
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    (root / "docs.jsonl").write_text(GOOD + json.dumps({"url": "https://a.example/2", "text": "bye"}) + "\n")
    run_cli("ingest", root / "docs.jsonl", "--store", root / "store", check=0)
    Store.open(root / "empty", create=True)
    return {"store": root / "store", "empty": root / "empty"}


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def assert_one_clear_message(proc, code: int, words) -> None:
    err = proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert all(len(line) <= 500 for line in lines), err  # short: no dump
    # A refusal (1, 2) is exactly one line, e.g. one for a Parquet file of 20,000 unusable rows; a partial
    # run (3) has a line per bad record, and these inputs have at most two.
    assert len(lines) == 1 if code in (1, 2) else 1 <= len(lines) <= 2, err
    message = next((line for line in lines if line.startswith("provenance: ")), None)
    assert message is not None, err
    for word in words:
        assert word in err, f"{word!r} not in:\n{err}"


def test_the_table_has_at_least_40_mistakes():
    assert len(MISTAKES) >= 40 and len({m.name for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_gets_one_clear_line(mistake: Mistake, tmp_path, stores):
    for name, content in mistake.files.items():
        _write(tmp_path / name, content)
    places = {"tmp": str(tmp_path), **{k: str(v) for k, v in stores.items()}}
    args = [a.format(**places) for a in mistake.args]
    proc = run_cli(*args, cwd=tmp_path, env={"PROVENANCE_DEBUG": ""}, timeout=120)
    assert_one_clear_message(proc, mistake.code, mistake.words)


# ----- the safety net for the unexpected ----------------------------------------------------------
RAISING_COMMAND = '''
import click
import provenance

@provenance.hookimpl
def register_commands(cli):
    @cli.command("boom")
    def boom():
        """Fails the way a bug would."""
        raise RuntimeError("something broke\\non two lines")
'''


@pytest.fixture
def raising_command(tmp_path) -> dict:
    plugin = tmp_path / "raising.py"
    plugin.write_text(RAISING_COMMAND)
    return {"PROVENANCE_PLUGIN_MODULES": str(plugin), "PROVENANCE_DEBUG": ""}


def test_an_unexpected_error_is_one_line_with_a_hint(raising_command):
    proc = run_cli("boom", env=raising_command)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr == ("provenance: error: RuntimeError: something broke on two lines "
                           "(rerun with --debug or PROVENANCE_DEBUG=1 for the traceback)\n")


@pytest.mark.parametrize("how", ["--debug", "PROVENANCE_DEBUG=1"])
def test_debug_shows_the_traceback(raising_command, how):
    if how == "--debug":
        proc = run_cli("--debug", "boom", env=raising_command)
    else:
        proc = run_cli("boom", env={**raising_command, "PROVENANCE_DEBUG": "1"})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "RuntimeError: something broke" in proc.stderr


# ----- a disk that fills up -------------------------------------------------------------------------
def _private_tmpfs_available() -> bool:
    try:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                               capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_disk_full_during_ingest_is_one_line_and_the_rerun_completes(tmp_path):
    """A 12 MB tmpfs in a private mount namespace fills up part-way through a 24 MB ingest."""
    if not _private_tmpfs_available():
        pytest.skip("needs `unshare -rm` and tmpfs mounts (a private mount namespace) to fill a disk safely")
    import random
    import sys

    rng = random.Random(18)
    src = tmp_path / "big.jsonl"
    with src.open("w") as fh:
        for i in range(3000):  # incompressible text: ~24 MB, twice the disk
            fh.write(json.dumps({"url": f"https://e.example/{i}",
                                 "text": "".join(rng.choice("abcdefghij ") for _ in range(8000))}) + "\n")
    disk = tmp_path / "disk"
    disk.mkdir()
    store = disk / "store"
    cli = f"{sys.executable} -c 'from provenance.cli import main; main()'"
    count = f"{cli} query 'SELECT count(*) AS n, count(DISTINCT url) AS u FROM documents' --store {store} " \
            "--format json"
    script = f"""
        mount -t tmpfs -o size=12m tmpfs {disk} || exit 99
        {cli} ingest {src} --store {store} 2>{tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        {count} > {tmp_path}/after_full.json
        mount -o remount,size=200m {disk}
        {cli} ingest {src} --store {store} > /dev/null; echo $? > {tmp_path}/rerun.rc
        {count} > {tmp_path}/after_rerun.json
    """
    config = tmp_path / "provenance.toml"
    config.write_text("[ingest]\nflush_rows = 500\n")  # chunks of ~2 MB: some are committed before the disk fills
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "PROVENANCE_DEBUG": "", "HOME": str(tmp_path),
                               "PROVENANCE_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "1"
    assert err == f"provenance: error: disk full: {store}; free space and rerun, committed work is kept\n"
    partial = json.loads((tmp_path / "after_full.json").read_text())[0]
    assert 0 < partial["n"] == partial["u"] < 3000  # readable, and what was committed is there once
    assert (tmp_path / "rerun.rc").read_text().strip() == "0"
    assert json.loads((tmp_path / "after_rerun.json").read_text()) == [{"n": 3000, "u": 3000}]


@pytest.mark.slow
@pytest.mark.parametrize("sorted_files", [False, True], ids=["sorted-through-range-files", "merged"])
def test_disk_full_during_export_is_one_line_and_keeps_the_earlier_export(tmp_path, monkeypatch, sorted_files):
    """The export's directory is on a small tmpfs. A first export of a tenth of a 24 MB store fits; the whole
    store does not: one line, exit 1, the earlier export untouched and nothing of the failed one left; with
    room, the rerun completes. Document files written unsorted (as by an earlier version) are sorted through
    range files, written by the split's own thread, which fill 12 MB; sorted ones are merged, and the output
    itself fills 6 MB."""
    if not _private_tmpfs_available():
        pytest.skip("needs `unshare -rm` and tmpfs mounts (a private mount namespace) to fill a disk safely")
    import random
    import sys

    import provenance.store
    from provenance.testing import make_store

    rng = random.Random(18)
    store = tmp_path / "store"
    if not sorted_files:
        monkeypatch.setattr(provenance.store, "SORTED_BY", {})
    make_store(store, [{"url": f"https://{'small' if i % 10 == 0 else 'big'}.example/{i}",
                        "text": "".join(rng.choice("abcdefghij ") for _ in range(8000))} for i in range(3000)])
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "clean"
    cli = f"{sys.executable} -c 'from provenance.cli import main; main()'"
    script = f"""
        mount -t tmpfs -o size={6 if sorted_files else 12}m tmpfs {disk} || exit 99
        {cli} export --store {store} --out {out} --where "domain = 'small.example'" > /dev/null || exit 98
        {cli} export --store {store} --out {out} --overwrite 2>{tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        ls -a {disk} > {tmp_path}/after_full.ls
        cp {out}/manifest.json {tmp_path}/after_full.json
        mount -o remount,size=200m {disk}
        {cli} export --store {store} --out {out} --overwrite > /dev/null; echo $? > {tmp_path}/rerun.rc
        cp {out}/manifest.json {tmp_path}/after_rerun.json
    """
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "PROVENANCE_DEBUG": "", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "full.rc").read_text().strip() == "1"
    err = (tmp_path / "full.err").read_text()
    assert len(err.splitlines()) == 1 and err.startswith("provenance: error: disk full: ") \
        and err.endswith("; free space and rerun, committed work is kept\n"), err
    assert (tmp_path / "after_full.ls").read_text().split() == [".", "..", "clean"]  # no staging left
    assert json.loads((tmp_path / "after_full.json").read_text())["counts"]["kept"] == 300
    assert (tmp_path / "rerun.rc").read_text().strip() == "0"
    assert json.loads((tmp_path / "after_rerun.json").read_text())["counts"]["kept"] == 3000


def test_disk_full_during_a_crawl_is_one_line(tmp_path):
    """The crawl's child process fills a 12 MB disk: the parent reports it in the same words as ingest."""
    if not _private_tmpfs_available():
        pytest.skip("needs `unshare -rm` and tmpfs mounts (a private mount namespace) to fill a disk safely")
    import random
    import sys

    rng = random.Random(18)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body>" + "".join(f'<a href="p{i}.html">p{i}</a>' for i in range(24))
                                     + "</body></html>")
    for i in range(24):  # ~0.7 MB of incompressible text each: twice the disk
        words = " ".join("".join(rng.choice("abcdefghijklmnop") for _ in range(7)) for _ in range(90_000))
        (site / f"p{i}.html").write_text(f"<html><head><title>p{i}</title></head><body><p>{words}</p></body></html>")
    disk = tmp_path / "disk"
    disk.mkdir()
    store = disk / "store"
    script = f"""
import subprocess, sys
from provenance.sites import serve
with serve({str(site)!r}) as base:
    proc = subprocess.run([sys.executable, "-c", "from provenance.cli import main; main()", "crawl",
                           base + "index.html", "--allow-private", "--store", {str(store)!r}],
                          capture_output=True, text=True, timeout=300)
print(proc.returncode)
sys.stderr.write(proc.stderr)
"""
    proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                           f"mount -t tmpfs -o size=12m tmpfs {disk} && {sys.executable} -c \"$0\"", script],
                          capture_output=True, text=True, timeout=400,
                          env={"PATH": "/usr/bin:/bin", "PROVENANCE_DEBUG": "", "HOME": str(tmp_path)})
    assert proc.stdout.strip() == "1", proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"provenance: error: crawl failed: disk full: {store}; free space and rerun, committed work is kept" \
        in proc.stderr.splitlines()


def test_disk_full_during_tag_is_one_line_and_the_rerun_completes(tmp_path):
    """The store's disk is full when tag starts writing: one line, and after space is freed the rerun tags all."""
    if not _private_tmpfs_available():
        pytest.skip("needs `unshare -rm` and tmpfs mounts (a private mount namespace) to fill a disk safely")
    import sys

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://e.example/{i}", "text": f"text {i % 50} " * 20}) + "\n"
                           for i in range(2000)))
    disk = tmp_path / "disk"
    disk.mkdir()
    store = disk / "store"
    cli = f"{sys.executable} -c 'from provenance.cli import main; main()'"
    tags = f"{cli} query 'SELECT count(*) AS n, count(DISTINCT doc_id) AS d FROM tags' --store {store} --format json"
    script = f"""
        mount -t tmpfs -o size=12m tmpfs {disk} || exit 99
        {cli} ingest {src} --store {store} > /dev/null || exit 98
        dd if=/dev/zero of={disk}/filler bs=64k 2>/dev/null  # fills the disk: dd stops at ENOSPC
        {cli} tag --store {store} --plugins exact_duplicate,near_duplicate 2>{tmp_path}/full.err; echo $? > {tmp_path}/full.rc
        rm {disk}/filler
        {cli} tag --store {store} --plugins exact_duplicate,near_duplicate > /dev/null; echo $? > {tmp_path}/rerun.rc
        {tags} > {tmp_path}/tags.json
    """
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "PROVENANCE_DEBUG": "", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "full.rc").read_text().strip() == "1"
    assert (tmp_path / "full.err").read_text() == \
        f"provenance: error: disk full: {store}; free space and rerun, committed work is kept\n"
    assert (tmp_path / "rerun.rc").read_text().strip() == "0"
    # exact_duplicate and near_duplicate each tag every document of a text shared by others (50 texts over
    # 2000 documents) but the first copy, once each.
    assert json.loads((tmp_path / "tags.json").read_text()) == [{"n": 2 * 1950, "d": 1950}]
