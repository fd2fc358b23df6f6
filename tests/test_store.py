"""The store's promises: schema checks on write, atomic commits, recovery, locking."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from provenance import schemas
from provenance.documents import DocumentSink, build_document, existing_doc_ids
from provenance.store import Store, StoreError, StoreLocked


def _doc(run, i, text=None):
    return build_document(url=f"http://example.org/{i}", body=None, text=text or f"document number {i}",
                          source="jsonl", crawl_id="t", run_id=run.run_id)


def test_every_schema_loads_with_version_metadata():
    for kind in schemas.KINDS:
        s = schemas.load(kind)
        assert s.version == 1 and "doc_id" in s.names or kind in ("errors", "fetches")
        assert s.metadata()[b"provenance.schema"] == kind.encode()


def test_conform_rejects_what_breaks_the_schema():
    with pytest.raises(schemas.SchemaError, match="unknown column"):
        schemas.conform(pa.table({"doc_id": ["a"], "bogus": [1]}), "documents")
    with pytest.raises(schemas.SchemaError, match="null value"):
        schemas.conform(pa.table({"doc_id": [None], "url": ["u"]}), "documents")
    tags = {"doc_id": ["a"], "plugin": ["p"], "plugin_version": ["1"], "detector": ["d"],
            "detector_version": ["1"], "category": ["other"], "tag": ["t"], "run_id": ["r"],
            "config_hash": ["c"], "created_at": pa.array([0], pa.timestamp("us", tz="UTC"))}
    with pytest.raises(schemas.SchemaError, match=r"\[0, 1\]"):
        schemas.conform(pa.table({**tags, "score": [1.5]}), "tags")
    assert schemas.conform(pa.table({**tags, "score": [0.5]}), "tags").num_rows == 1


def test_written_files_carry_schema_version_and_become_visible_only_on_commit(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.run("ingest") as run:
        entry = run.write("documents", pa.Table.from_pylist([_doc(run, 1)]), "t")
        assert store.snapshot().entries("documents") == []  # written, not committed: invisible
        run.commit(add=[entry])
    meta = pq.read_schema(tmp_path / "s" / entry.path).metadata
    assert meta[b"provenance.schema"] == b"documents" and meta[b"provenance.schema_version"] == b"1"
    assert [e.path for e in store.snapshot().entries("documents")] == [entry.path]
    record = json.loads((tmp_path / "s" / "runs" / f"{run.run_id}.json").read_text())
    assert record["status"] == "succeeded" and record["commits"] == 1


def test_uncommitted_orphans_are_removed_by_the_next_writer(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.run("ingest") as run:
        orphan = run.write("documents", pa.Table.from_pylist([_doc(run, 1)]), "t")
    assert (tmp_path / "s" / orphan.path).exists()
    with store.run("ingest"):
        pass
    assert not (tmp_path / "s" / orphan.path).exists()


def test_a_second_writer_is_refused_while_the_lock_is_held(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with store.run("crawl"):
        with pytest.raises(StoreLocked, match="locked by"):
            with Store(tmp_path / "s").run("ingest"):
                pass


def test_a_failed_run_is_recorded_and_keeps_committed_chunks(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    with pytest.raises(RuntimeError):
        with store.run("ingest") as run:
            sink = DocumentSink(run, "t", set(), flush_rows=2)
            for i in range(5):
                sink.add(_doc(run, i))
            raise RuntimeError("boom")
    assert len(existing_doc_ids(store.snapshot())) == 4  # two committed chunks of two
    assert store.runs()[0]["status"] == "failed"


def test_sink_skips_documents_already_stored(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    for _ in range(2):
        with store.run("ingest") as run:
            sink = DocumentSink(run, "t", existing_doc_ids(store.snapshot()))
            for i in range(3):
                sink.add(_doc(run, i))
            sink.flush()
    assert sum(e.rows for e in store.snapshot().entries("documents")) == 3


def test_open_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file.txt").write_text("hi")
    with pytest.raises(StoreError, match="not a provenance store"):
        Store.open(tmp_path / "x", create=True)
    with pytest.raises(StoreError, match="no provenance store"):
        Store.open(tmp_path / "missing")
