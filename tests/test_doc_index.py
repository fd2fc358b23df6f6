"""The store's doc_id index: a run learns every stored doc_id from it plus the files it does not cover, with the
same answers as reading every file, and never from an index that does not match the store."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from provenance import doc_index, documents
from provenance.documents import DocIdSet, existing_doc_ids
from provenance.maintenance import compact_store
from provenance.testing import make_store


@pytest.fixture
def small_index(monkeypatch):
    """Indexes written from 20 doc_ids on, merged 7 keys at a time (many chunks)."""
    monkeypatch.setattr(doc_index, "MIN_KEYS", 20)
    monkeypatch.setattr(doc_index, "MERGE_CHUNK", 7)


def docs(start: int, stop: int) -> list[dict]:
    return [{"url": f"https://e.example/{i}", "text": f"page {i}"} for i in range(start, stop)]


def stored_ids(store) -> set[str]:
    return set(pa.concat_tables([pq.read_table(p, columns=["doc_id"]) for p in store.snapshot().paths("documents")])
               .column("doc_id").to_pylist())


def index_files(store) -> list[str]:
    directory = store.root / doc_index.INDEX_DIR
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def files_read(monkeypatch) -> list[str]:
    """The document files existing_doc_ids reads from now on (a spy: the reads are real)."""
    read, real = [], pq.read_table

    def spy(path, *args, **kwargs):
        read.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(documents.pq, "read_table", spy)
    return read


def test_no_index_for_a_small_store(tmp_path):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)
    ids = existing_doc_ids(store.snapshot())
    assert set(ids) == stored_ids(store) and index_files(store) == []


def test_a_run_reads_only_the_files_the_index_does_not_cover(tmp_path, small_index, monkeypatch):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)
    existing_doc_ids(store.snapshot())  # 30 doc_ids read: an index is written
    assert [n for n in index_files(store) if n.endswith(".json")]
    before = set(map(str, store.snapshot().paths("documents")))
    make_store(tmp_path / "s", docs(25, 33), rows_per_file=10)  # 3 new documents (25..29 are stored)
    read = files_read(monkeypatch)
    ids = existing_doc_ids(store.snapshot())
    assert len(before) == 3 and read == sorted(set(map(str, store.snapshot().paths("documents"))) - before)
    assert set(ids) == stored_ids(store) and len(ids) == 33
    for doc_id in stored_ids(store):
        assert doc_id in ids
    absent = DocIdSet(documents.make_doc_id(f"https://e.example/{i}", documents.sha256_hex(b"x")) for i in range(50))
    assert not any(d in ids for d in absent)


def test_the_index_grows_by_merging_and_stays_exact(tmp_path, small_index):
    store = make_store(tmp_path / "s", docs(0, 25), rows_per_file=10)
    existing_doc_ids(store.snapshot())
    first = [n for n in index_files(store) if n.endswith(".json")]
    make_store(tmp_path / "s", docs(20, 60), rows_per_file=10)  # 35 new: more than an eighth, and 20 or more
    ids = existing_doc_ids(store.snapshot())
    metas = [n for n in index_files(store) if n.endswith(".json")]
    assert len(metas) == 1 and metas != first  # the new one replaced the old
    meta = json.loads((store.root / doc_index.INDEX_DIR / metas[0]).read_text())
    keys = np.load(store.root / doc_index.INDEX_DIR / meta["keys"])
    assert meta["n_keys"] == 60 and (keys[1:] > keys[:-1]).all()  # sorted, distinct
    assert sorted(meta["files"]) == sorted(f.path for f in store.snapshot().entries("documents"))
    assert {k.ljust(16, b"\0").hex() for k in keys.tolist()} == stored_ids(store) == set(ids)
    assert len(ids._keys.own_keys()) == 0  # everything read went into the index, nothing kept in memory


def test_ingesting_twice_with_an_index_stores_nothing_twice(tmp_path, small_index):
    store = make_store(tmp_path / "s", docs(0, 40), rows_per_file=10)
    existing_doc_ids(store.snapshot())
    store = make_store(tmp_path / "s", docs(0, 45), rows_per_file=10)
    assert {"stored": 5, "already_stored": 40} in [r["stats"] for r in store.runs()]
    assert sum(f.rows for f in store.snapshot().entries("documents")) == 45 == len(stored_ids(store))


def test_the_index_survives_compaction(tmp_path, small_index, monkeypatch):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=5)
    existing_doc_ids(store.snapshot())
    compact_store(store, target_rows=100)
    assert len(store.snapshot().entries("documents")) == 1  # every covered file was removed by the compaction
    read = files_read(monkeypatch)
    ids = existing_doc_ids(store.snapshot())
    assert len(read) == 1  # the compacted file, not covered; its doc_ids were in the index already...
    assert set(ids) == stored_ids(store) and len(ids) == 30
    assert len(index_files(store)) == 3  # ...and 30 read is more than an eighth: a new index names the new file
    read.clear()
    again = existing_doc_ids(store.snapshot())
    assert read == [] and set(again) == stored_ids(store)


def test_a_large_store_without_an_index_is_read_in_steps_each_written_in(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s", docs(0, 95), rows_per_file=10)  # MIN_KEYS as shipped: no index
    assert index_files(store) == []
    monkeypatch.setattr(doc_index, "MIN_KEYS", 10)
    monkeypatch.setattr(doc_index, "STEP_ROWS", 20)
    held, real = [], doc_index.write_index
    monkeypatch.setattr(doc_index, "write_index",
                        lambda snapshot, old, new_keys, *rest: held.append(len(new_keys)) or real(snapshot, old,
                                                                                                  new_keys, *rest))
    ids = existing_doc_ids(store.snapshot())
    # Steps of 20 rows while the index is small, then an eighth of it; never all 95 doc_ids in memory at once.
    assert held[:2] == [20, 20] and max(held) < 40 and sum(held) == 95, held
    assert set(ids) == stored_ids(store) and len(ids._keys.own_keys()) == 0
    metas = [n for n in index_files(store) if n.endswith(".json")]
    assert len(metas) == 1  # each step's index replaced the one before
    meta = json.loads((store.root / doc_index.INDEX_DIR / metas[0]).read_text())
    assert meta["n_keys"] == 95 and len(meta["files"]) == 10
    stored = stored_ids(store)
    read = files_read(monkeypatch)
    assert set(existing_doc_ids(store.snapshot())) == stored and read == []


def test_an_index_that_does_not_match_the_store_is_ignored(tmp_path, small_index, caplog):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)
    existing_doc_ids(store.snapshot())
    directory = store.root / doc_index.INDEX_DIR
    meta_path = next(directory.glob("*.json"))
    meta = json.loads(meta_path.read_text())
    # Naming a file the store never had (a store restored from an older copy): not used, the files are read.
    meta_path.write_text(json.dumps({**meta, "files": meta["files"] + ["documents/test/gone.parquet"]}))
    assert doc_index.open_index(store.snapshot()) is None
    assert set(existing_doc_ids(store.snapshot())) == stored_ids(store)
    # A cut-off keys file: a warning, and the files are read.
    store = make_store(tmp_path / "t", docs(0, 30), rows_per_file=10)
    existing_doc_ids(store.snapshot())
    keys = next((store.root / doc_index.INDEX_DIR).glob("*.keys.npy"))
    keys.write_bytes(keys.read_bytes()[:-16])
    with caplog.at_level(logging.WARNING):
        assert doc_index.open_index(store.snapshot()) is None
    assert "doc_id index unreadable" in caplog.text
    assert set(existing_doc_ids(store.snapshot())) == stored_ids(store)


def test_doc_ids_that_are_not_hex_live_in_the_metadata(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)
    odd = ["custom-1", "custom-2"]
    with store.run("ingest", config={}) as run:
        sink = documents.DocumentSink(run, "odd", existing_doc_ids(store.snapshot()))
        for i, doc_id in enumerate(odd):
            sink.add({**documents.build_document(url=f"https://o.example/{i}", body=b"x", source="jsonl",
                                                 run_id=run.run_id, crawl_id="odd"), "doc_id": doc_id})
        sink.flush()
    monkeypatch.setattr(doc_index, "MIN_KEYS", 20)
    ids = existing_doc_ids(store.snapshot())  # the index is written now, with the two
    assert json.loads(next((store.root / doc_index.INDEX_DIR).glob("*.json")).read_text())["other"] == odd
    again = existing_doc_ids(store.snapshot())  # and read from it
    assert all(d in again for d in odd) and set(again) == set(ids) == stored_ids(store)


def test_a_killed_writer_leaves_no_index_and_its_temp_files_go(tmp_path, small_index, monkeypatch):
    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # stands for a kill between the arrays and the metadata

    monkeypatch.setattr(doc_index, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        existing_doc_ids(store.snapshot())
    assert not any(n.endswith(".json") for n in index_files(store))  # arrays without metadata: no index
    assert doc_index.open_index(store.snapshot()) is None
    monkeypatch.undo()
    monkeypatch.setattr(doc_index, "MIN_KEYS", 20)
    arrays = [n for n in index_files(store) if n.endswith(".npy")]
    assert len(arrays) == 2  # renamed in before the kill: no metadata names them
    stale = store.root / doc_index.INDEX_DIR / ".x.keys.npy.1.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    make_store(tmp_path / "s", docs(30, 60), rows_per_file=10)  # a later index: the orphans are older
    assert set(existing_doc_ids(store.snapshot())) == stored_ids(store)
    assert not stale.exists() and any(n.endswith(".json") for n in index_files(store))
    assert not set(arrays) & set(index_files(store)) and len(index_files(store)) == 3


def test_store_check_verifies_the_index(tmp_path, small_index):
    from provenance.maintenance import check_store

    store = make_store(tmp_path / "s", docs(0, 30), rows_per_file=10)
    existing_doc_ids(store.snapshot())
    assert check_store(store)[0] == []
    directory = store.root / doc_index.INDEX_DIR
    keys_path = next(directory.glob("*.keys.npy"))
    keys = np.load(keys_path)
    stranger = np.array([b"\xff" * 16], "S16")
    np.save(keys_path, np.concatenate([keys[1:], stranger]))  # one stored doc_id lost, one stranger added
    problems = check_store(store)[0]
    assert len(problems) == 2, problems
    assert "lacks 1 doc_ids of the document files it covers" in problems[0]
    assert "holds 1 doc_ids the store does not" in problems[1] and "delete" in problems[1]
    np.save(keys_path, keys[::-1])
    assert any("not sorted and distinct" in p for p in check_store(store)[0])


# ----- the capture index (KnownCaptures) ---------------------------------------------------------------
def dated(start: int, stop: int, day: int) -> list[dict]:
    """Documents docs(start, stop) would make (same URL, same text: same doc_ids), captured on ``day``."""
    return [{**d, "fetched_at": f"2024-01-{day:02d}T00:00:00Z"} for d in docs(start, stop)]


def import_jsonl(store, tmp_path, rows: list[dict], name: str):
    from provenance.ingest import run_ingest

    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_ingest(store, [path], crawl_id=name, flush_rows=10)


def every_capture(store) -> set[tuple]:
    """(doc_id, fetched_at) of every stored document and recaptured fetch, read from the files themselves."""
    snapshot, pairs = store.snapshot(), set()
    for kind in ("documents", "fetches"):
        for path in snapshot.paths(kind):
            t = documents.read_captures(path, kind)
            pairs.update(zip(t.column("doc_id").to_pylist(), t.column("fetched_at").to_pylist()))
    return pairs


def capture_index_files(store) -> list[str]:
    directory = store.root / doc_index.CAPTURES.directory
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_known_captures_come_from_the_capture_index_and_the_files_it_does_not_cover(tmp_path, small_index,
                                                                                      monkeypatch):
    from datetime import datetime, timezone

    store = make_store(tmp_path / "s", dated(0, 30, 1), rows_per_file=10)
    assert import_jsonl(store, tmp_path, dated(0, 25, 2), "again").to_json()["stored"] == 0  # 25 recaptures
    assert capture_index_files(store) != [] and len(every_capture(store)) == 55  # the import's load wrote one
    assert doc_index.open_index(store.snapshot(), doc_index.CAPTURES) is not None
    covered = set(map(str, store.snapshot().paths("documents") + store.snapshot().paths("fetches")))
    import_jsonl(store, tmp_path, dated(28, 35, 3), "more")  # 5 new documents, 2 recaptures since the index

    stored = every_capture(store)
    assert len(stored) == 62
    read = []
    real = documents.read_captures
    monkeypatch.setattr(documents, "read_captures", lambda path, kind: read.append(str(path)) or real(path, kind))
    captures = documents.KnownCaptures(store)
    for doc_id, at in stored:  # every stored capture is known, at that instant in any zone
        assert not captures.is_new(doc_id, at) and not captures.is_new(doc_id, at.astimezone())
    snapshot = store.snapshot()
    assert sorted(read) == sorted(set(map(str, snapshot.paths("documents") + snapshot.paths("fetches"))) - covered)
    doc_id = next(iter(stored))[0]
    later = datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert captures.is_new(doc_id, later) and not captures.is_new(doc_id, later)  # noted once asked
    assert len(captures._seen.own_keys()) <= 8  # what the index does not hold: the files since, and the one asked


def test_an_import_that_meets_stored_documents_writes_each_capture_once_with_an_index(tmp_path, small_index):
    store = make_store(tmp_path / "s", dated(0, 30, 1), rows_per_file=10)
    for name in ("first", "second"):  # the same captures twice: the second import records nothing
        import_jsonl(store, tmp_path, dated(0, 30, 2), name)
    assert len(every_capture(store)) == 60
    from provenance.sql import connect

    con = connect(store)
    assert con.execute("SELECT count(*) FROM fetches WHERE outcome = 'recaptured'").fetchone()[0] == 30
    from provenance.maintenance import check_store

    assert check_store(store)[0] == []


def test_the_capture_index_keeps_times_without_a_key_and_store_check_verifies_it(tmp_path, small_index):
    from provenance.maintenance import check_store

    store = make_store(tmp_path / "s", dated(0, 30, 1), rows_per_file=10)
    with store.run("ingest", config={}) as run:  # a capture of a doc_id that is not hex: kept in the metadata
        sink = documents.DocumentSink(run, "odd", existing_doc_ids(store.snapshot()))
        sink.add({**documents.build_document(url="https://odd.example/", body=b"odd", content_type="text/plain",
                                             source="jsonl", crawl_id="odd", run_id=run.run_id,
                                             fetched_at=datetime_utc(2024, 2, 1)), "doc_id": "custom-1"})
        sink.flush()
    captures = documents.KnownCaptures(store)
    assert not captures.is_new("custom-1", datetime_utc(2024, 2, 1))
    meta = json.loads(next((store.root / doc_index.CAPTURES.directory).glob("*.json")).read_text())
    assert meta["other"] == [["custom-1", "2024-02-01T00:00:00+00:00"]] and meta["n_keys"] == 30
    again = documents.KnownCaptures(store)  # from the index alone
    assert not again.is_new("custom-1", datetime_utc(2024, 2, 1)) and again.is_new("custom-1", datetime_utc(2024, 2, 2))
    assert check_store(store)[0] == []
    keys_path = next((store.root / doc_index.CAPTURES.directory).glob("*.keys.npy"))
    keys = np.load(keys_path)
    np.save(keys_path, np.concatenate([keys[1:], np.array([b"\xff" * 24], "S24")]))
    problems = check_store(store)[0]
    assert any("lacks 1 captures of the document and fetch files it covers" in p for p in problems), problems
    assert any("holds 1 captures the store does not" in p for p in problems), problems


def datetime_utc(*args):
    from datetime import datetime, timezone

    return datetime(*args, tzinfo=timezone.utc)
