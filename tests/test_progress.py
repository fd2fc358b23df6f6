"""Progress off a terminal: one line on stderr every PROVENANCE_PROGRESS_INTERVAL seconds, for cron and journals."""

from __future__ import annotations

import io
import json
import re

from provenance.progress import INTERVAL_ENV, Progress
from provenance.sites import generate_site, serve

FAST = {INTERVAL_ENV: "0.001"}


def test_the_line_says_done_of_total_rate_fields_and_eta():
    out = io.StringIO()
    with Progress("tag", "docs", stream=out, live=False, interval_s=1e-9) as p:
        p.total(50_000)
        p.advance(12_000)
        p.set(errors=0)
    line = out.getvalue().splitlines()[-1]
    assert re.fullmatch(r"provenance: tag: 12000/50000 docs, \d+ docs/s, errors 0, ETA \d+ (s|min \d\d s)", line)


def test_no_line_before_the_interval_and_none_when_it_is_zero(monkeypatch):
    out = io.StringIO()
    with Progress("ingest", "records", stream=out, live=False, interval_s=3600) as p:
        p.advance(5)
    assert out.getvalue() == ""
    monkeypatch.setenv(INTERVAL_ENV, "0")
    with Progress("ingest", "records", stream=out, live=False) as p:
        p.advance(5)
    assert out.getvalue() == ""


def test_tag_and_ingest_log_progress_lines_off_a_terminal(tmp_path, cli):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://s{i}.org/", "text": f"text {i}"}) + "\n" for i in range(6)))
    ingest = cli("ingest", src, "--store", tmp_path / "s", env=FAST, check=0)
    assert re.search(r"^provenance: ingest: \d+ records, [\d.]+ records/s$", ingest.stderr, re.M), ingest.stderr
    tag = cli("tag", "--store", tmp_path / "s", "--plugins", "exact_duplicate", env=FAST, check=0)
    assert re.search(r"^provenance: tag: 6/6 docs, [\d.]+ docs/s$", tag.stderr, re.M), tag.stderr
    quiet = cli("ingest", src, "--store", tmp_path / "s2", check=0)  # the default interval: 30 s
    assert "provenance: ingest:" not in quiet.stderr


def test_crawl_logs_pages_queue_and_errors_off_a_terminal(tmp_path, cli):
    generate_site(tmp_path / "site")
    with serve(tmp_path / "site") as base:
        proc = cli("crawl", base + "index.html", "--store", tmp_path / "s", "--allow-private", "--crawl-id", "fx",
                   env=FAST, check=0)
    lines = re.findall(r"^provenance: crawl fx: (\d+) pages, [\d.]+ pages/s, stored \d+, (queue \d+, )?errors 0$",
                       proc.stderr, re.M)
    assert lines and max(int(n) for n, _ in lines) >= 20, proc.stderr
    assert all(queue for _, queue in lines)  # the scheduler's queue, 0 included, on every line
