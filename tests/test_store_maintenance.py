"""`provenance store check | compact | vacuum`: through the real CLI, on stores made by real ingest and tag runs."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from campaigns import document_rows, tag_rows
from conftest import run_cli

import provenance.store
from provenance.store import Store


@pytest.fixture(autouse=True)
def _checkpoint_often(monkeypatch):
    monkeypatch.setattr(provenance.store, "CHECKPOINT_EVERY", 10)


def _store(tmp_path: Path, tagged: int = 60, untagged: int = 30) -> Path:
    """Documents in commits of 5; the first ``tagged`` tagged by `language` in tag files of 5 rows each,
    then ``untagged`` more documents no detector has seen."""
    for name, first, n in (("a.jsonl", 0, tagged), ("b.jsonl", tagged, untagged)):
        (tmp_path / name).write_text("".join(json.dumps({"url": f"https://m.example/{i}", "text": f"document {i} "
                                                         "about the harbour and the canal"}) + "\n"
                                             for i in range(first, first + n)))
    (tmp_path / "provenance.toml").write_text("[ingest]\nflush_rows = 5\n")
    root = tmp_path / "s"
    run_cli("ingest", tmp_path / "a.jsonl", "--store", root, "--crawl-id", "a", cwd=tmp_path, check=0)
    run_cli("tag", "--store", root, "--plugins", "language", "--batch-size", "5", cwd=tmp_path, check=0)
    run_cli("ingest", tmp_path / "b.jsonl", "--store", root, "--crawl-id", "b", cwd=tmp_path, check=0)
    with Store(root).run("test"):  # a writer here, where checkpoints come every 10 entries: writes one
        pass
    return root


def _check(root: Path, cwd: Path, code: int) -> list[str]:
    proc = run_cli("store", "check", "--store", root, cwd=cwd, check=code)
    assert "Traceback" not in proc.stderr
    return proc.stdout.splitlines()


def test_check_names_each_problem_on_its_own_line(tmp_path):
    root = _store(tmp_path)
    assert _check(root, tmp_path, 0) == []
    snap = Store(root).snapshot()
    assert snap.checkpoint_seq > 0
    docs, tags = snap.entries("documents"), snap.entries("tags")
    (root / docs[0].path).unlink()  # missing
    data = bytearray((root / docs[1].path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    (root / docs[1].path).write_bytes(bytes(data))
    (root / tags[0].path).write_bytes(b"short")  # other size
    (root / "tags" / "orphan.parquet").write_bytes(b"x")
    checkpoint = root / "_log" / f"{snap.checkpoint_seq:020d}.checkpoint.json.gz"
    checkpoint.write_bytes(gzip.compress(b"{}"))
    lines = _check(root, tmp_path, 1)
    assert len(lines) == 5, lines
    assert any(docs[0].path in line and "missing" in line for line in lines)
    assert any(docs[1].path in line and "sha256" in line for line in lines)
    assert any(tags[0].path in line and "bytes" in line for line in lines)
    assert any("tags/orphan.parquet" in line and "orphan" in line for line in lines)
    assert any(checkpoint.name in line for line in lines)


def test_compact_merges_small_files_and_changes_no_row_and_no_coverage(tmp_path):
    root = _store(tmp_path)
    before_docs, before_tags = document_rows(root), tag_rows(root)
    snap = Store(root).snapshot()
    n_docs, n_tags = len(snap.entries("documents")), len(snap.entries("tags"))
    assert (n_docs, n_tags) == (18, 12)
    proc = run_cli("store", "compact", "--store", root, cwd=tmp_path, check=0)
    assert "18 small file(s) merged into 2" in proc.stderr, proc.stderr  # 12 tag files, 6 untagged document files
    snap = Store(root).snapshot()
    # Tagged documents stay as they are: coverage names them by path and row.
    assert len(snap.entries("documents")) == 12 + 1 and len(snap.entries("tags")) == 1
    assert document_rows(root) == before_docs and tag_rows(root) == before_tags
    assert {c["doc_file"] for c in snap.coverage} <= set(snap.files)
    again = run_cli("tag", "--store", root, "--plugins", "language", "--batch-size", "5", "--json", cwd=tmp_path,
                    check=0)
    assert json.loads(again.stdout)["tags"] == 30  # only the 30 untagged documents, now in one file
    assert tag_rows(root) != before_tags and len(tag_rows(root)) == 90
    proc = run_cli("store", "compact", "--store", root, cwd=tmp_path, check=0)
    assert "merged into 1" in proc.stderr  # the new tag files with the merged one
    assert "0 small file(s) merged" in run_cli("store", "compact", "--store", root, cwd=tmp_path, check=0).stderr
    assert _check(root, tmp_path, 0) == []


def test_compact_rewrites_document_files_an_earlier_version_wrote_unsorted_in_doc_id_order(tmp_path, monkeypatch):
    """Document files are written in doc_id order and say so in their footer. One written unsorted (by a version
    before) is rewritten sorted by `store compact`: merged with small ones, or alone when it is big; a sorted big
    file is left as it is, and a second compact has nothing to do. No row changes."""
    import pyarrow.parquet as pq

    from provenance.maintenance import compact_store, compaction_plan
    from provenance.testing import make_store

    texts = [f"Ledger entry {i}: {i * 31 % 211} bushels of wheat." for i in range(900)]
    make_store(tmp_path / "s", texts[:400], crawl_id="new", rows_per_file=400)  # sorted, big for target 600
    with monkeypatch.context() as m:
        m.setattr(provenance.store, "SORTED_BY", {})
        make_store(tmp_path / "s", texts[400:], crawl_id="old", rows_per_file=400)  # unsorted: 400 and 100
    store = Store(tmp_path / "s")
    before = document_rows(store.root)

    def sorted_flags() -> dict[str, bool]:
        return {f.path: provenance.store.is_sorted_file(store.root / f.path, "documents")
                for f in store.snapshot().entries("documents")}

    assert sorted(sorted_flags().values()) == [False, False, True]
    plan = compaction_plan(store.snapshot(), target_rows=600)
    assert sorted(len(files) for *_, files in plan) == [1, 1]  # old's 400 (big) alone, old's 100 alone
    summary = compact_store(store, target_rows=600)
    assert summary == {"merged_files": 2, "into": 2, "rows": 500}
    flags = sorted_flags()
    assert list(flags.values()) == [True] * 3 and document_rows(store.root) == before
    for path in flags:
        ids = pq.read_table(store.root / path, columns=["doc_id"]).column("doc_id").to_pylist()
        assert ids == sorted(ids)
    assert compaction_plan(store.snapshot(), target_rows=600) == []


KILLED_COMPACT = textwrap.dedent("""
    import sys, time
    import provenance.store as store
    real_commit = store.Run.commit
    def slow_commit(self, *args, **kwargs):
        if self.command == "store compact" and self._commits == 1:
            print("committing", flush=True)
            time.sleep(60)  # killed here: one group committed, the next one's merged file staged
        return real_commit(self, *args, **kwargs)
    store.Run.commit = slow_commit
    from provenance.maintenance import compact_store
    compact_store(store.Store(sys.argv[1]))
""")


def test_a_compact_killed_between_its_commits_leaves_the_store_whole_and_a_rerun_finishes(tmp_path):
    root = _store(tmp_path)
    before_docs, before_tags = document_rows(root), tag_rows(root)
    child = subprocess.Popen([sys.executable, "-c", KILLED_COMPACT, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "committing"
    finally:
        child.kill()
        child.wait()
    assert document_rows(root) == before_docs and tag_rows(root) == before_tags
    lines = _check(root, tmp_path, 1)
    assert len(lines) == 1 and "orphan" in lines[0]  # the staged merged file no commit names
    assert "merged into 1" in run_cli("store", "compact", "--store", root, cwd=tmp_path, check=0).stderr
    assert document_rows(root) == before_docs and tag_rows(root) == before_tags
    assert _check(root, tmp_path, 0) == []


def test_vacuum_keeps_removed_files_for_the_grace_period_and_deletes_orphans_at_once(tmp_path):
    root = _store(tmp_path)
    run_cli("store", "compact", "--store", root, cwd=tmp_path, check=0)
    removed = set(Store(root).snapshot().removed)
    assert len(removed) == 18 and all((root / p).exists() for p in removed)
    (root / "errors").mkdir(exist_ok=True)
    (root / "errors" / "orphan.parquet").write_bytes(b"x")
    proc = run_cli("store", "vacuum", "--store", root, cwd=tmp_path, check=0)
    assert "1 file(s) deleted" in proc.stderr and "18 removed file(s) kept" in proc.stderr, proc.stderr
    assert all((root / p).exists() for p in removed) and not (root / "errors" / "orphan.parquet").exists()
    proc = run_cli("store", "vacuum", "--store", root, "--grace", "0", cwd=tmp_path, check=0)
    assert "18 file(s) deleted" in proc.stderr and not any((root / p).exists() for p in removed)
    assert _check(root, tmp_path, 0) == []
    bad = run_cli("store", "vacuum", "--store", root, "--grace", "-1", cwd=tmp_path, check=2)
    assert "Traceback" not in bad.stderr


def test_each_store_command_exits_75_naming_the_run_that_holds_the_lock(tmp_path):
    root = _store(tmp_path, tagged=5, untagged=5)
    with Store(root).run("ingest"):
        for command in ("check", "compact", "vacuum"):
            proc = run_cli("store", command, "--store", root, cwd=tmp_path, check=75)
            lines = proc.stderr.splitlines()
            assert len(lines) == 1 and "locked by" in lines[0] and "(ingest, since" in lines[0], proc.stderr
    missing = run_cli("store", "check", "--store", tmp_path / "nothing", cwd=tmp_path, check=1)
    assert missing.stderr.count("\n") == 1 and "no provenance store" in missing.stderr
