"""The compact sets ingest and crawl keep of what the store holds: the same answers as Python sets."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from provenance.documents import CompactKeySet, DocIdSet, KnownCaptures, existing_doc_ids, make_doc_id
from provenance.testing import make_store


def test_doc_id_set_answers_as_a_python_set_across_merges(monkeypatch):
    monkeypatch.setattr(CompactKeySet, "MERGE_AT", 5)  # many merges of the recent keys into the sorted array
    rng = random.Random(3)
    ids = [make_doc_id(f"https://e.example/{i}", "x") for i in range(300)]
    # Not what make_doc_id makes, so kept as they are: upper case, spaces, other lengths; and the 16-byte keys
    # that end in zero bytes, which numpy's S dtype would strip.
    ids += ["AB" * 16, "ab " * 10 + "ab", "abc", "", "0a" * 15 + "00", "00" * 16, "0a" * 15]
    compact, plain = DocIdSet(ids[:40]), set(ids[:40])
    compact.update(pa.chunked_array([pa.array(ids[40:80]), pa.array(ids[80:90] + [None])]))
    plain.update(ids[40:90])
    for doc_id in rng.sample(ids, len(ids)) + ids[:20]:
        assert (doc_id in compact) == (doc_id in plain)
        compact.add(doc_id)
        plain.add(doc_id)
    assert len(compact) == len(plain) and sorted(compact) == sorted(plain)
    for doc_id in ["ab" * 16, "0a" * 15 + "01", "0A" * 15 + "00", "00" * 15 + "01"]:
        assert (doc_id in compact) == (doc_id in plain)


def test_existing_doc_ids_and_known_captures_read_the_store(tmp_path):
    store = make_store(tmp_path / "store", [{"url": f"https://e.example/{i}", "text": f"text {i}",
                                             "fetched_at": f"2024-01-{1 + i:02d}T00:00:00Z"} for i in range(9)],
                       rows_per_file=4)
    con_ids = set(pa.concat_tables([pq.read_table(p, columns=["doc_id"])
                                    for p in store.snapshot().paths("documents")]).column("doc_id").to_pylist())
    ids = existing_doc_ids(store.snapshot())
    assert len(ids) == 9 and set(ids) == con_ids and all(d in ids for d in con_ids)
    captures = KnownCaptures(store)
    doc_id = sorted(con_ids)[0]
    stored_at = [datetime(2024, 1, 1 + i, tzinfo=timezone.utc) for i in range(9)]
    # Each stored document was captured at one of those times: exactly one of them is not new for it.
    seen = [t for t in stored_at if not captures.is_new(doc_id, t)]
    assert len(seen) == 1
    later = datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert captures.is_new(doc_id, later) and not captures.is_new(doc_id, later)
    assert not captures.is_new(doc_id, later.astimezone(timezone.utc))  # the same instant
    captures.stored([("not-hex", later), (doc_id, datetime(2026, 1, 1, tzinfo=timezone.utc))])
    assert not captures.is_new("not-hex", later)
    assert not captures.is_new(doc_id, datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_compact_key_set_grows_its_index_and_finds_every_key():
    rng = np.random.default_rng(5)
    keys = CompactKeySet(16)
    batches = [rng.integers(0, 256, (n, 16), dtype=np.uint8) for n in (10, 3_000, 40_000)]
    for rows in batches:  # each batch a bigger bitmap over every key so far
        keys.add_rows(rows)
    every = np.concatenate(batches)
    assert len(keys) == len({r.tobytes() for r in every})
    assert all(r.tobytes() in keys for r in every[::7])
    absent = rng.integers(0, 256, (2_000, 16), dtype=np.uint8)
    stored = {r.tobytes() for r in every}
    assert not any(r.tobytes() in keys for r in absent if r.tobytes() not in stored)
