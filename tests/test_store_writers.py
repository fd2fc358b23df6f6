"""Several writers committing to one store at once: optimistic concurrency on the numbered log.

Real processes and real files: each writer claims the next entry number with ``link``; the loser reads what
it missed, leaves out documents another run stored, stops on a real conflict, and claims the next number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from provenance.documents import DocumentSink, build_document, existing_doc_ids
from provenance.maintenance import check_store
from provenance.sql import connect
from provenance.store import Store, StoreConflict

CLI = [sys.executable, "-c", "from provenance.cli import main; main()"]

# One writer: N commits of documents (some its own, some every writer has), through DocumentSink as ingest
# and crawl use it. Checkpoints every 10 entries, so that writers racing also write and prune checkpoints.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import provenance.store
    from provenance.documents import DocumentSink, build_document, existing_doc_ids
    from provenance.store import Store
    provenance.store.CHECKPOINT_EVERY = 10
    root, name, commits, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    while not go.exists():  # every writer starts at once
        time.sleep(0.01)
    store = Store(root)
    with store.run("ingest") as run:
        sink = DocumentSink(run, name, existing_doc_ids(store.snapshot()), flush_rows=3)
        for i in range(commits):
            for row in (f"{name}/{i}/a", f"{name}/{i}/b", f"shared/{i}"):  # shared: every writer adds it
                sink.add(build_document(url="https://x.example/" + row, body=None, text="text of " + row,
                                        source="jsonl", crawl_id=name, run_id=run.run_id))
        sink.flush()
    print(sink.written, sink.skipped_existing)
""")


def _entries(root: Path) -> list[dict]:
    names = sorted(p.name for p in (root / "_log").glob("*.json"))
    assert names == [f"{n:020d}.json" for n in range(1, len(names) + 1)], "the log has a gap"
    return [json.loads((root / "_log" / name).read_text()) for name in names]


def _url_counts(store: Store) -> dict[str, int]:
    """Documents per URL (one version each here)."""
    con = connect(store)
    try:
        return {url.removeprefix("https://x.example/"): n
                for url, n in con.execute("SELECT url, count(*) FROM documents GROUP BY url").fetchall()}
    finally:
        con.close()


def test_writer_processes_commit_at_once_without_losing_or_duplicating_anything(tmp_path):
    root = tmp_path / "s"
    Store.open(root, create=True)
    writers, commits, go = 4, 25, tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), f"w{k}", str(commits), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(writers)]
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    written = [tuple(map(int, out.split())) for out, _err in outputs]

    store = Store(root)
    entries = _entries(root)  # gap-free
    runs = {r["run_id"]: r for r in store.runs()}
    assert len(runs) == writers and all(r["status"] == "succeeded" for r in runs.values())
    # No lost commit: every commit a run counted is in the log, and every entry is one of theirs.
    assert sorted(e["run_id"] for e in entries) == sorted(r for r, rec in runs.items() for _ in range(rec["commits"]))
    # The runs did commit at once: their entries interleave.
    switches = sum(a["run_id"] != b["run_id"] for a, b in zip(entries, entries[1:]))
    assert switches > writers, f"only {switches} changes of writer in {len(entries)} entries: no concurrency"
    retries = sum(r["commit_retries"] for r in runs.values())
    assert retries > 0  # some commits lost the race for their number and claimed a later one
    print(f"{len(entries)} commits, {switches} changes of writer, {retries} lost races")

    counts = _url_counts(store)
    expected = {f"w{k}/{i}/{x}" for k in range(writers) for i in range(commits) for x in "ab"}
    expected |= {f"shared/{i}" for i in range(commits)}
    assert set(counts) == expected and set(counts.values()) == {1}  # each document once
    assert sum(w for w, _s in written) == len(expected)
    assert sum(s for _w, s in written) == (writers - 1) * commits  # each shared document stored by one writer
    problems, summary = check_store(store)
    assert problems == [] and summary["entries"] == len(entries)
    assert summary["checkpoints"] >= 1  # written by racing writers, and each equal to the replay (check)


def _doc(run, name: str, text: str | None = None) -> dict:
    return build_document(url=f"https://x.example/{name}", body=None, text=text or f"document {name}",
                          source="jsonl", crawl_id="t", run_id=run.run_id)


def test_a_commit_that_lost_the_race_leaves_out_documents_the_winner_stored(tmp_path):
    # Two identical ingests at once, made deterministic: this run stages its chunk, the real `provenance
    # ingest` of the same records commits in between, then this run commits.
    root = tmp_path / "s"
    store = Store.open(root, create=True)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://x.example/{i}", "text": f"document {i}"}) + "\n"
                           for i in range(3)))
    with store.run("ingest") as run:
        sink = DocumentSink(run, "t", existing_doc_ids(store.snapshot()), flush_rows=100)  # nothing stored yet
        # The other ingest shares the store with this run and commits entry 1 ...
        subprocess.run([*CLI, "ingest", src, "--store", root], check=True, capture_output=True, timeout=120)
        theirs = sorted(existing_doc_ids(store.snapshot()))
        rows = [_doc(run, str(i), f"document {i}") for i in range(3)] + [_doc(run, "mine-1"), _doc(run, "mine-2")]
        assert sorted(r["doc_id"] for r in rows[:3]) == theirs  # the same records: the same documents
        for row in rows:  # ... while this run still adds them (its set of stored doc_ids is older)
            assert sink.add(row)
        sink.flush()  # claims entry 1, finds it taken, reads it, commits the rest as entry 2
        assert (sink.written, sink.skipped_existing, run.skipped_concurrent) == (2, 3, 3)
        assert not sink.add(rows[0])  # known from now on
    entries = _entries(root)
    assert [e["run_id"] for e in entries][1] == run.run_id and len(entries) == 2
    counts = _url_counts(store)
    assert set(counts) == {"0", "1", "2", "mine-1", "mine-2"} and set(counts.values()) == {1}
    assert check_store(store)[0] == []  # the staged file it replaced left no orphan


def test_a_commit_whose_file_another_run_removed_is_a_conflict_and_makes_nothing_visible(tmp_path):
    root = tmp_path / "s"
    store = Store.open(root, create=True)
    with store.run("ingest") as run:
        old = run.write("documents", pa.Table.from_pylist([_doc(run, "a")]), "t")
        run.commit(add=[old])
    remover = textwrap.dedent(f"""
        from provenance.store import Store
        with Store({str(root)!r}).run("other") as run:
            run.commit(remove=[{old.path!r}])
    """)
    with store.run("tag") as run:
        replacement = run.write("documents", pa.Table.from_pylist([_doc(run, "b")]), "t")
        subprocess.run([sys.executable, "-c", remover], check=True, timeout=120)  # shares the store with us
        with pytest.raises(StoreConflict, match=r"removed documents/t/.*run the command again"):
            run.commit(add=[replacement], remove=[old.path])
    entries = _entries(root)
    assert [e["command"] for e in entries] == ["ingest", "other"]  # nothing of the conflicting commit
    assert store.snapshot().files == {}


def test_maintenance_waits_for_no_one_and_refuses_while_writers_run(tmp_path):
    root = tmp_path / "s"
    store = Store.open(root, create=True)
    with store.run("ingest") as run:
        proc = subprocess.run([*CLI, "store", "compact", "--store", root], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 75, proc.stderr
        assert proc.stderr.count("\n") == 1 and f"(ingest, since " in proc.stderr and run.run_id in proc.stderr
        # A second writer shares the store.
        other = textwrap.dedent(f"""
            from provenance.store import Store
            with Store({str(root)!r}).run("crawl"):
                pass
        """)
        subprocess.run([sys.executable, "-c", other], check=True, timeout=120)
    with store._lock("store vacuum", "x", exclusive=True):  # maintenance holds it: writers are refused
        proc = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "StoreLocked" in proc.stderr and "(store vacuum, since" in proc.stderr


def test_a_writer_killed_among_others_loses_only_its_uncommitted_chunk(tmp_path):
    import signal
    import time

    root = tmp_path / "s"
    Store.open(root, create=True)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), f"w{k}", "40", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    go.touch()
    deadline = time.monotonic() + 120
    # Until the writer to kill has committed twice (its documents are under documents/w0/).
    while sum('"documents/w0/' in p.read_text() for p in (root / "_log").glob("*.json")) < 2:
        assert time.monotonic() < deadline and procs[0].poll() is None
        time.sleep(0.01)
    procs[0].send_signal(signal.SIGKILL)  # anywhere: staging, linking its entry, writing a checkpoint
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == (-signal.SIGKILL if proc is procs[0] else 0), err

    store = Store(root)
    entries = _entries(root)  # gap-free, every entry whole (each parses)
    killed = next(r for r in store.runs() if r["status"] == "running")["run_id"]
    assert any(e["run_id"] == killed for e in entries)  # it had committed before it died
    counts = _url_counts(store)
    assert set(counts.values()) == {1}
    assert {f"w{k}/{i}/{x}" for k in (1, 2) for i in range(40) for x in "ab"} <= set(counts)
    with store.run("ingest"):  # the next writer to find the store free repairs what the kill left
        pass
    assert next(r for r in store.runs() if r["run_id"] == killed)["status"] == "interrupted"
    assert check_store(store)[0] == []


def test_two_identical_ingests_at_once_store_every_document_once(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://x.example/{i}", "text": f"document {i}"}) + "\n"
                           for i in range(600)))
    (tmp_path / "provenance.toml").write_text("[ingest]\nflush_rows = 20\n")  # 30 commits each
    root = tmp_path / "s"
    procs = [subprocess.Popen([*CLI, "ingest", str(src), "--store", str(root)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
    store = Store(root)
    counts = _url_counts(store)
    assert len(counts) == 600 and set(counts.values()) == {1}
    runs = store.runs()
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert check_store(store)[0] == [] and len(_entries(root)) >= 30
