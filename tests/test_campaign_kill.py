"""Campaign: kill -9 at random points of crawl, ingest, tag and export; nothing is lost or doubled.

For each command: one uninterrupted run gives the expected result, its duration T and the moment W
it first wrote; then, per trial, ``random.Random(SEED)`` picks a delay in [0.7 W, 0.95 T], the
command's whole process group is killed with SIGKILL at that moment, the store must answer
``provenance query``, and running the same command again must end with exactly the uninterrupted
run's rows: documents as (doc_id, text_sha256, url), tags as (doc_id, detector, tag, score), each
as often as in the uninterrupted run. An export's output directory is either absent or a complete export, never half of one.

PROVENANCE_KILL_TRIALS (default 5) and PROVENANCE_KILL_SEED change the campaign's size and seed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from campaigns import (TAGGER_PLUGIN, cli, document_rows, has_parquet, ok, run_killed_after, store_readable,
                       tag_rows, timed_run)
from conftest import SHARED
from provenance.sites import generate_site, serve

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("PROVENANCE_KILL_TRIALS", "5"))
SEED = int(os.environ.get("PROVENANCE_KILL_SEED", "18"))
SHARED_WARC = SHARED / "data/warc/N0taN3rd__node-warc/test/files/books.toscrape.warc"
MAX_ATTEMPTS = 3 * TRIALS  # attempts whose run finished before its kill are drawn again


def kill_campaign(name: str, baseline: tuple[float, float], start_trial, finish_trial, seed: int = SEED) -> list[float]:
    """Kill ``start_trial(i)``'s command after random delays until TRIALS kills landed; check each.

    ``baseline`` is (seconds until the uninterrupted run first wrote, seconds it took in all): delays
    are drawn from [0.7 first write, 0.95 all], so most kills land while the command writes.

    ``start_trial(i, delay)`` prepares trial i and runs its command killed after ``delay`` seconds,
    returning whether the kill landed; ``finish_trial(i)`` checks the store and re-runs, returning
    what the kill left (printed with the delays: the campaign's figures).
    """
    rng = random.Random(f"{seed}-{name}")
    delays: list[float] = []
    left: list = []
    low, high = 0.7 * baseline[0], 0.95 * baseline[1]
    for attempt in range(MAX_ATTEMPTS):
        if len(delays) == TRIALS:
            break
        delay = rng.uniform(low, high)
        started = time.monotonic()
        if start_trial(attempt, delay):
            delays.append(round(delay, 2))
            left.append(finish_trial(attempt))
        else:
            # It finished before the kill: the baseline ran slower (a busier machine, a first run compiling
            # bytecode). Draw later delays from what this run took, so the campaign still kills mid-write.
            high = min(high, 0.95 * (time.monotonic() - started))
            low = min(low, 0.5 * high)
    assert len(delays) == TRIALS, f"{name}: only {len(delays)} of {MAX_ATTEMPTS} attempts were killed in time"
    print(f"\n{name}: baseline {baseline[1]:.1f}s (first write {baseline[0]:.1f}s); "
          f"killed after {delays} s; left: {left}")
    return delays


# ----- inputs ------------------------------------------------------------------------------------
_WORDS = ("archive ledger harbour lantern valley orchard census granite beacon parish foundry canal "
          "almanac quarry ferry meadow wharf cellar cobbler glacier").split()


def _jsonl(path: Path, n: int = 1500) -> None:
    """Text and HTML records, some texts repeated at other URLs (exact duplicates), two bad lines."""
    rng = random.Random(7)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(30, 120)))
        text = f"Record {i % 1200}. {words}" if i % 10 else f"Shared text {i % 3}. The same words again."
        record = {"url": f"https://ingest.example/{i}", "fetched_at": 1_600_000_000 + i}
        if i % 4 == 0:
            record["html"] = (f"<html><head><title>R{i}</title></head>"
                              f"<body><article><p>{text}</p></article></body></html>")
        else:
            record["text"] = text
        lines.append(json.dumps(record))
        if i == 500:
            lines.append("{not json")
        if i == 1000:
            lines.append(json.dumps({"text": "no url"}))
    path.write_text("\n".join(lines) + "\n")


def _warc(path: Path) -> Path:
    """../shared's books.toscrape.com WARC when present, else one written here with warcio."""
    if SHARED_WARC.is_file():
        return SHARED_WARC
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for i in range(150):
            body = (f"<html><head><title>Book {i}</title></head><body><article><h1>Book {i}</h1><p>"
                    + f"A review of book number {i}, its plot and its binding. " * 20
                    + "</p></article></body></html>").encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"http://books.example/{i}.html", "response",
                                                          payload=BytesIO(body), http_headers=headers))
    return path


def _setup(tmp_path: Path) -> tuple[Path, list[Path]]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "provenance.toml").write_text("[ingest]\nflush_rows = 40\n")  # many commits: many kill points
    _jsonl(work / "docs.jsonl")
    return work, [work / "docs.jsonl", _warc(work / "books.warc.gz")]


TAG_ENV = {"CAMPAIGN_TAGGER_SLEEP_S": "0.02"}


def _tag_args(store: Path) -> list:
    # A per-document detector, a stateless and a state-keeping corpus detector: each way the runner commits.
    return ["tag", "--store", store, "--plugin-module", TAGGER_PLUGIN, "--batch-size", "25",
            "--plugins", "campaign_tagger,exact_duplicate,near_duplicate"]


# ----- ingest --------------------------------------------------------------------------------------
def test_kill_ingest_at_random_points(tmp_path):
    work, inputs = _setup(tmp_path)
    base_store = tmp_path / "baseline"
    base, *baseline = timed_run(["ingest", *inputs, "--store", base_store], has_parquet(base_store), cwd=work)
    ok(base, 3)  # two bad lines: partial
    expected = document_rows(base_store)
    assert len(expected) > 1300 and len({r[0] for r in expected}) == len(expected)
    log = tmp_path / "killed.log"

    def start(i, delay):
        return run_killed_after(["ingest", *inputs, "--store", tmp_path / f"s{i}"], delay, cwd=work, log=log)

    def finish(i):
        store = tmp_path / f"s{i}"
        before = store_readable(store) if (store / "store.json").exists() else 0
        again = ok(cli("ingest", *inputs, "--store", store, cwd=work), 3)
        assert document_rows(store) == expected, f"trial {i}"
        stored = int(re.search(r"(\d+) stored", again.stdout).group(1))
        assert stored == len(expected) - before  # the re-run stored exactly what the killed run had not
        shutil.rmtree(store)
        return before

    kill_campaign("ingest", baseline, start, finish)


# ----- tag ---------------------------------------------------------------------------------------
def test_kill_tag_at_random_points(tmp_path):
    work, inputs = _setup(tmp_path)
    template = tmp_path / "template"
    ok(cli("ingest", *inputs, "--store", template, cwd=work), 3)
    base_store = tmp_path / "baseline"
    shutil.copytree(template, base_store)
    base, *baseline = timed_run(_tag_args(base_store), has_parquet(base_store / "tags"), cwd=work, env=TAG_ENV)
    ok(base)
    expected = tag_rows(base_store)
    n_docs = len(document_rows(template))
    detectors = {r[1] for r in expected}
    assert detectors == {"campaign_tagger", "exact_duplicate", "near_duplicate"}
    assert sum(r[1] == "campaign_tagger" for r in expected) == n_docs
    log = tmp_path / "killed.log"

    def start(i, delay):
        shutil.copytree(template, tmp_path / f"s{i}")
        return run_killed_after(_tag_args(tmp_path / f"s{i}"), delay, cwd=work, env=TAG_ENV, log=log)

    def finish(i):
        store = tmp_path / f"s{i}"
        assert store_readable(store) == n_docs
        before = len(tag_rows(store))
        ok(cli(*_tag_args(store), cwd=work, env=TAG_ENV))
        assert tag_rows(store) == expected, f"trial {i}"
        assert document_rows(store) == document_rows(template)
        shutil.rmtree(store)
        return before

    kill_campaign("tag", baseline, start, finish)


# ----- export ------------------------------------------------------------------------------------
def _export_rows(out: Path) -> list[tuple]:
    table = pq.read_table(out / "documents.parquet", columns=["doc_id", "text_sha256", "url"])
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names)), key=repr)


def _assert_complete_export(out: Path, expected_rows: list[tuple], expected_counts: dict) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "documents.parquet", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == expected_counts
    assert _export_rows(out) == expected_rows
    assert "Dataset card" in (out / "README.md").read_text()


def test_kill_export_at_random_points(tmp_path):
    work, inputs = _setup(tmp_path)
    store = tmp_path / "store"
    ok(cli("ingest", *inputs, "--store", store, cwd=work), 3)
    ok(cli("tag", "--store", store, cwd=work))  # the built-in exact_duplicate flags the copies
    args = ["export", "--store", store, "--where", "NOT flagged"]
    (tmp_path / "b").mkdir()
    # The export's first write: anything appearing beside its output (it assembles the export there).
    base, *baseline = timed_run([*args, "--out", tmp_path / "b" / "out"], lambda: any((tmp_path / "b").iterdir()),
                                cwd=work)
    ok(base)
    expected_rows = _export_rows(tmp_path / "b" / "out")
    expected_counts = json.loads((tmp_path / "b" / "out" / "manifest.json").read_text())["counts"]
    assert 0 < expected_counts["kept"] < expected_counts["documents_in_store"]
    log = tmp_path / "killed.log"

    def start(i, delay):
        (tmp_path / f"t{i}").mkdir()
        return run_killed_after([*args, "--out", tmp_path / f"t{i}" / "out"], delay, cwd=work, log=log)

    def finish(i):
        out = tmp_path / f"t{i}" / "out"
        outcome = "complete" if out.exists() else "absent"
        if out.exists():  # never half: all three files, and they agree with an uninterrupted export
            _assert_complete_export(out, expected_rows, expected_counts)
        store_readable(store)
        ok(cli(*args, "--out", out, "--overwrite", cwd=work))
        _assert_complete_export(out, expected_rows, expected_counts)
        return outcome

    kill_campaign("export", baseline, start, finish)


# ----- crawl -------------------------------------------------------------------------------------
def test_kill_crawl_at_random_points(tmp_path):
    site = tmp_path / "site"
    generate_site(site, pages=40)
    config = tmp_path / "provenance.toml"
    config.write_text("[crawl]\nallow_private = true\nautothrottle = false\nconcurrency_per_host = 4\n"
                      "flush_rows = 3\nextract_workers = 1\n")
    env = {"PROVENANCE_CONFIG": str(config)}
    # One server for the whole campaign: URLs (and so doc_ids) include its port.
    with serve(site, delay_s=0.03) as base:
        args = ["crawl", base + "index.html", "--crawl-id", "campaign"]
        first, *baseline = timed_run([*args, "--store", tmp_path / "baseline"],
                                     has_parquet(tmp_path / "baseline" / "documents"), env=env)
        ok(first)
        expected = document_rows(tmp_path / "baseline")
        assert len(expected) == 43  # 40 articles, the copy, the index and the binary
        log = tmp_path / "killed.log"

        def start(i, delay):
            return run_killed_after([*args, "--store", tmp_path / f"s{i}"], delay, env=env, log=log)

        def finish(i):
            store = tmp_path / f"s{i}"
            before = store_readable(store) if (store / "store.json").exists() else 0
            ok(cli(*args, "--store", store, env=env))
            assert document_rows(store) == expected, f"trial {i}"
            shutil.rmtree(store)
            return before

        started = time.monotonic()
        kill_campaign("crawl", baseline, start, finish)
    print(f"crawl campaign: {time.monotonic() - started:.0f}s")


# ----- the one kill point a random delay rarely hits: creating the store -----------------------------
@pytest.mark.parametrize("made", [(), ("_log",), ("_log", "runs"), ("_log", "runs", "_tmp")])
def test_a_store_whose_creation_was_killed_can_be_created_again(tmp_path, made):
    """Store creation makes _log, runs and _tmp, then writes store.json: a kill in between left a
    directory that every later command refused as 'not a provenance store'."""
    store = tmp_path / "store"
    store.mkdir()
    for sub in made:
        (store / sub).mkdir()
    (tmp_path / "a.jsonl").write_text(json.dumps({"url": "https://e.example/1", "text": "one"}) + "\n")
    ok(cli("ingest", tmp_path / "a.jsonl", "--store", store))
    assert store_readable(store) == 1
    # A directory holding anything else is still not taken over.
    other = tmp_path / "other"
    (other / "_log").mkdir(parents=True)
    (other / "_log" / "notes.txt").write_text("mine")
    refused = cli("ingest", tmp_path / "a.jsonl", "--store", other)
    assert refused.returncode == 1 and "is not a provenance store" in refused.stderr
