"""Killing `provenance tag` mid-run: the store stays readable, nothing partial shows, a rerun finishes without duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import provenance

SLOW_PLUGIN = Path(__file__).parent / "plugins" / "slow_tagger.py"


def _tag_commits(store: Path) -> int:
    count = 0
    for entry in (store / "_log").glob("*.json"):
        if json.loads(entry.read_text())["command"] == "tag":
            count += 1
    return count


def test_kill_tag_mid_run_then_resume_without_duplicates(tmp_path, cli):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://e.com/{i}", "text": f"document {i}"}) + "\n"
                           for i in range(120)))
    (tmp_path / "provenance.toml").write_text('[ingest]\nflush_rows = 10\n')  # 12 document files
    store = tmp_path / "s"
    cli("ingest", src, "--store", store, cwd=tmp_path, check=0)

    args = [sys.executable, "-c", "from provenance.cli import main; main()", "tag", "--store", str(store),
            "--plugin-module", str(SLOW_PLUGIN), "--plugins", "slow_tagger", "--batch-size", "5"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _tag_commits(store) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the tag run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # Readable, and only whole files are visible: every visible tag file covers whole document files.
    con = provenance.connect(store)
    n_tags = con.execute("SELECT count(*) FROM tags").fetchone()[0]
    assert 0 < n_tags < 120 and n_tags % 10 == 0
    assert con.execute("SELECT count(*) FROM doc_flags").fetchone()[0] == 120
    on_disk = {p.relative_to(store).as_posix() for p in (store / "tags").rglob("*.parquet")}
    visible = {e.path for e in provenance.store.Store(store).snapshot().entries("tags")}
    assert visible <= on_disk  # anything extra on disk is an uncommitted orphan no view reads

    proc = cli("tag", "--store", store, "--plugin-module", SLOW_PLUGIN, "--plugins", "slow_tagger",
               "--batch-size", "5", cwd=tmp_path, check=0)
    con = provenance.connect(store)
    assert con.execute("SELECT count(*), count(DISTINCT doc_id) FROM tags").fetchone() == (120, 120)
    statuses = [r[0] for r in con.execute("SELECT status FROM runs WHERE command = 'tag' ORDER BY started_at").fetchall()]
    assert statuses == ["interrupted", "succeeded"]
    # The next writer removed the killed run's orphans.
    on_disk = {p.relative_to(store).as_posix() for p in (store / "tags").rglob("*.parquet")}
    assert on_disk == {e.path for e in provenance.store.Store(store).snapshot().entries("tags")}
