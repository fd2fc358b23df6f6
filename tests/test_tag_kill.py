"""Killing `provenance tag` mid-run: the store stays readable, nothing partial shows, a rerun finishes without duplicates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import provenance
from provenance.store import Store
from provenance.testing import make_store

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


def _tag_rows(store: Path) -> list[tuple]:
    """Every live tag row, without what names the run that wrote it."""
    con = provenance.connect(store)
    try:
        return con.execute("SELECT doc_id, plugin, plugin_version, detector, detector_version, category, tag, "
                           "score, evidence, config_hash FROM tags ORDER BY ALL").fetchall()
    finally:
        con.close()


def _one_file_store(tmp_path: Path, n: int) -> Path:
    docs = [{"url": f"https://e.com/{i}", "text": f"document {i}"} for i in range(n)]
    store = make_store(tmp_path / "s", docs, rows_per_file=n).root
    assert len(Store(store).snapshot().entries("documents")) == 1  # the demo's shape: one document file
    return store


@pytest.mark.parametrize("settings, granularity", [
    ("commit_rows = 20", 20),  # a commit every 4 batches of 5
    ("commit_rows = 0\ncommit_seconds = 0.5", 5),  # a commit every ~3 batches of 0.15 s; batch-aligned
])
def test_kill_on_a_one_file_store_loses_at_most_one_commit_of_work(tmp_path, cli, settings, granularity):
    n = 200
    store = _one_file_store(tmp_path, n)
    reference = tmp_path / "reference"
    shutil.copytree(store, reference)
    (tmp_path / "provenance.toml").write_text(f"[tag]\n{settings}\n")
    tag = ("tag", "--plugin-module", SLOW_PLUGIN, "--plugins", "slow_tagger", "--batch-size", "5", "--json")

    proc = subprocess.Popen([sys.executable, "-c", "from provenance.cli import main; main()", *map(str, tag),
                             "--store", str(store)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _tag_commits(store) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the tag run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # What was committed before the kill is visible, in whole commits.
    kept = len(_tag_rows(store))
    assert 0 < kept < n and kept % granularity == 0

    # The rerun tags only the rest, and the result equals an uninterrupted run's, row for row.
    rerun = json.loads(cli(*tag, "--store", store, cwd=tmp_path, check=0).stdout)["detectors"]["slow_tagger"]
    assert rerun["rows"] == n - kept
    cli(*tag, "--store", reference, cwd=tmp_path, check=0)
    assert _tag_rows(store) == _tag_rows(reference)
    assert len(_tag_rows(store)) == n


def test_ctrl_c_keeps_every_batch_that_finished(tmp_path):
    n = 200
    store = _one_file_store(tmp_path, n)
    # No periodic commit in this run: what is kept is what the interrupt committed.
    (tmp_path / "provenance.toml").write_text("[tag]\ncommit_rows = 0\ncommit_seconds = 0\n")
    args = [sys.executable, "-c", "from provenance.cli import main; main()", "tag", "--store", str(store),
            "--plugin-module", str(SLOW_PLUGIN), "--plugins", "slow_tagger", "--batch-size", "5"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PROVENANCE_TRACE_PLUGINS": "1"})
    finished = 0
    for line in proc.stderr:  # one trace line per finished detector call
        finished += " tag documents/" in line and "tags in" in line
        if finished == 4:
            break
    os.kill(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait() == 130, rest
    assert "interrupted; committed work is kept" in rest and "Traceback" not in rest
    kept = len(_tag_rows(store))
    assert 20 <= kept < n
    con = provenance.connect(store)
    assert con.execute("SELECT status FROM runs WHERE command = 'tag'").fetchall() == [("interrupted",)]
    con.close()


def test_previous_columns_leave_the_batch_schema_as_the_file_has_it(tmp_path, cli):
    """A corpus detector concatenates the batches of a run: files read with and without previous_* columns must
    give the same schema for the columns they share (from_arrays used to drop doc_id's not-null)."""
    import json

    from provenance.runner import PreviousLookup, _iter_batches
    from provenance.store import Store

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://a.org/{i}", "text": f"text {i}"}) + "\n" for i in range(3)))
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    paths = Store(tmp_path / "s").snapshot().paths("documents")
    (_, batch), = _iter_batches(paths[0], ["doc_id", "previous_doc_id", "text"], 100)
    with_previous = PreviousLookup(paths).add(batch)
    assert with_previous.schema.field("doc_id") == batch.schema.field("doc_id")
    shared = with_previous.select(batch.schema.names)
    assert shared.schema == batch.schema
