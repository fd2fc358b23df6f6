"""State-keeping corpus detectors: state rows stored once per document, finish() streamed and budgeted."""

from __future__ import annotations

import json
import os
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import provenance
from provenance.store import Store
from provenance.testing import make_store, run_detectors


class LengthState(provenance.CorpusDetector):
    """Keeps each document's text length as state; finish tags every document with what it read."""

    name = "length_state"
    version = "1"
    category = "other"
    needs = ("text",)
    keeps_state = True
    state_options = ("unit",)
    options = {"unit": "chars", "parts": 1, "label": "seen"}

    def observe(self, batch):
        lengths = pc.utf8_length(pc.fill_null(batch.column("text"), ""))
        return pa.table({"doc_id": batch.column("doc_id"), "length": lengths})

    def finish(self, corpus):
        if os.environ.get("LENGTH_STATE_SLOW_FINISH"):
            time.sleep(30)
        state = pa.concat_tables([pq.read_table(f) for f in corpus.state_files])
        new_rows = sum(pq.read_metadata(f).num_rows for f in corpus.new_state_files)
        evidence = {"state_rows": state.num_rows, "new_rows": new_rows,
                    "scratch_is_dir": os.path.isdir(corpus.scratch_dir)}
        doc_ids = state.column("doc_id")
        step = -(-len(doc_ids) // self.options["parts"])
        for start in range(0, len(doc_ids), step):
            if start and os.environ.get("LENGTH_STATE_FAIL_AFTER_FIRST_PART"):
                raise RuntimeError("finish failed half-way")
            part = doc_ids.slice(start, step)
            yield self.tags(part, self.options["label"], evidence=[json.dumps(evidence)] * len(part))


def _docs(n: int, offset: int = 0) -> list[dict]:
    return [{"url": f"https://example.org/{offset + i}", "text": f"document number {offset + i} " * (i + 1)}
            for i in range(n)]


def _log_entries(store: Store) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store.root / "_log").glob("*.json"))]


def _evidence(tags: pa.Table) -> set[str]:
    return set(tags.column("evidence").to_pylist())


def test_state_is_stored_once_per_document_and_a_new_crawl_observes_only_its_documents(tmp_path):
    store = make_store(tmp_path / "store", _docs(10), rows_per_file=4)
    first = run_detectors([LengthState], store, batch_size=3)
    stat = first.summary.detectors["length_state"]
    assert (stat.status, stat.rows, stat.tags) == ("ok", 10, 10)
    assert _evidence(first.tags) == {json.dumps({"state_rows": 10, "new_rows": 10, "scratch_is_dir": True})}
    state = store.snapshot().entries("state")
    assert sum(e.rows for e in state) == 10 and {e.meta["detector"] for e in state} == {"length_state"}
    assert pq.read_table(store.root / state[0].path).column_names == ["doc_id", "length"]

    entries = len(_log_entries(store))
    again = run_detectors([LengthState], store)
    assert again.summary.detectors["length_state"].status == "up_to_date"
    assert len(_log_entries(store)) == entries  # nothing new: nothing observed, finished or committed

    make_store(store.root, _docs(3, offset=100))
    third = run_detectors([LengthState], store)
    stat = third.summary.detectors["length_state"]
    assert (stat.status, stat.rows, stat.tags) == ("ok", 3, 13)  # observed 3 rows, finished over 13
    assert _evidence(third.tags) == {json.dumps({"state_rows": 13, "new_rows": 3, "scratch_is_dir": True})}
    assert third.tags.num_rows == 13  # the earlier output was replaced, not added to
    assert not any((store.root / "_tmp").iterdir())  # the scratch directory is gone


def test_finish_parts_are_streamed_and_made_live_in_one_commit(tmp_path):
    store = make_store(tmp_path / "store", _docs(9))
    result = run_detectors([LengthState], store, {"length_state": {"parts": 3}})
    assert result.tags.num_rows == 9
    files = [e for e in store.snapshot().entries("tags") if e.meta.get("detector") == "length_state"]
    assert sorted(e.rows for e in files) == [3, 3, 3]  # one file per part, as the parts arrived
    adding = [e for e in _log_entries(store) if any(a["kind"] == "tags" for a in e["add"])]
    assert len(adding) == 1 and len(adding[0]["add"]) == 3


def test_finish_failing_half_way_keeps_the_earlier_tags_and_leaves_no_files(tmp_path, monkeypatch):
    store = make_store(tmp_path / "store", _docs(6))
    run_detectors([LengthState], store, {"length_state": {"parts": 3}})
    make_store(store.root, _docs(2, offset=50))
    files_before = sorted(p.name for p in (store.root / "tags").rglob("*.parquet"))
    monkeypatch.setenv("LENGTH_STATE_FAIL_AFTER_FIRST_PART", "1")
    failed = run_detectors([LengthState], store, {"length_state": {"parts": 3}}, raise_on_error=False)
    stat = failed.summary.detectors["length_state"]
    assert stat.status == "stopped" and stat.faults[0]["where"] == "finish"
    assert "finish failed half-way" in stat.faults[0]["message"]
    assert failed.tags.num_rows == 6  # the earlier output, still live
    assert sorted(p.name for p in (store.root / "tags").rglob("*.parquet")) == files_before  # first part deleted
    monkeypatch.delenv("LENGTH_STATE_FAIL_AFTER_FIRST_PART")
    fixed = run_detectors([LengthState], store, {"length_state": {"parts": 3}})
    stat = fixed.summary.detectors["length_state"]
    assert (stat.status, stat.rows) == ("ok", 0)  # the new documents' state was kept: only finish reran
    assert fixed.tags.num_rows == 8


def test_finish_has_its_own_time_budget(tmp_path, monkeypatch):
    store = make_store(tmp_path / "store", _docs(4))
    monkeypatch.setenv("LENGTH_STATE_SLOW_FINISH", "1")
    result = run_detectors([LengthState], store, settings={"tag": {"finish_budget_s": 1.0}}, raise_on_error=False)
    stat = result.summary.detectors["length_state"]
    assert stat.status == "stopped" and stat.faults[0]["kind"] == "timeout"
    assert "finish_budget_s" in stat.faults[0]["message"]
    assert result.tags.num_rows == 0
    # The per-call budget does not apply to finish: a budget of 1 s per call, 60 s for finish, passes.
    monkeypatch.delenv("LENGTH_STATE_SLOW_FINISH")
    ok = run_detectors([LengthState], store, time_budget=1.0, settings={"tag": {"finish_budget_s": 60.0}})
    assert ok.tags.num_rows == 4


def test_state_options_decide_what_is_observed_again(tmp_path):
    store = make_store(tmp_path / "store", _docs(5))
    run_detectors([LengthState], store)
    relabelled = run_detectors([LengthState], store, {"length_state": {"label": "again"}})
    stat = relabelled.summary.detectors["length_state"]
    assert (stat.rows, stat.tags) == (0, 5)  # not a state option: finish again over the stored state
    assert set(relabelled.tags.column("tag").to_pylist()) == {"again"}
    old_state = {e.path for e in store.snapshot().entries("state")}
    recounted = run_detectors([LengthState], store, {"length_state": {"unit": "bytes", "label": "again"}})
    assert recounted.summary.detectors["length_state"].rows == 5  # a state option: every document again
    live = store.snapshot().entries("state")
    assert sum(e.rows for e in live) == 5 and not old_state & {e.path for e in live}  # old state retired


class BadState(provenance.CorpusDetector):
    name = "bad_state"
    version = "1"
    needs = ("text",)
    keeps_state = True

    def observe(self, batch):
        if os.environ.get("BAD_STATE") == "stranger":
            return pa.table({"doc_id": pa.array(["f" * 32] * batch.num_rows)})
        return pa.table({"id": batch.column("doc_id")})

    def finish(self, corpus):
        return None


@pytest.mark.parametrize("mode, message", [("no_doc_id", "state rows need a string 'doc_id' column"),
                                           ("stranger", "which is not in the batch it observed")])
def test_state_rows_are_checked_before_they_are_stored(tmp_path, monkeypatch, mode, message):
    monkeypatch.setenv("BAD_STATE", mode)
    store = make_store(tmp_path / "store", _docs(3))
    result = run_detectors([BadState], store, raise_on_error=False)
    stat = result.summary.detectors["bad_state"]
    assert stat.errors == 1 and stat.faults[0]["kind"] == "invalid_output"
    assert message in stat.faults[0]["message"]
    assert store.snapshot().entries("state") == []


class ReferenceReader(provenance.CorpusDetector):
    """Tags every document with the reference sets finish was given (name:texts)."""

    name = "reference_reader"
    version = "1"
    needs = ("text",)
    keeps_state = True

    def observe(self, batch):
        return pa.table({"doc_id": batch.column("doc_id")})

    def finish(self, corpus):
        seen = sorted(f"{name}:{sum(pq.read_metadata(f).num_rows for f in files)}"
                      for name, files in corpus.references.items())
        doc_ids = pa.concat_tables([pq.read_table(f) for f in corpus.state_files]).column("doc_id")
        return self.tags(doc_ids, "read", evidence=[json.dumps(seen)] * len(doc_ids))


def test_a_new_reference_set_reruns_finish_over_stored_state_without_observing(tmp_path):
    from provenance.references import add_reference, remove_reference

    store = make_store(tmp_path / "store", _docs(4))
    first = run_detectors([ReferenceReader], store)
    assert _evidence(first.tags) == {"[]"}
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": str(i), "text": f"known output {i}"}) + "\n" for i in range(3)))
    add_reference(store, "llm", [refs])
    second = run_detectors([ReferenceReader], store)
    stat = second.summary.detectors["reference_reader"]
    assert (stat.status, stat.rows) == ("ok", 0)  # finish again, no document observed again
    assert _evidence(second.tags) == {'["llm:3"]'}
    assert run_detectors([ReferenceReader], store).summary.detectors["reference_reader"].status == "up_to_date"
    remove_reference(store, "llm")
    assert _evidence(run_detectors([ReferenceReader], store).tags) == {"[]"}


class WhoTagged(provenance.Detector):
    name = "who_tagged"
    version = "1"
    needs = ("text",)

    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "seen", evidence=[json.dumps({"pid": os.getpid()})] * batch.num_rows)


def test_workers_split_each_batch_and_give_the_same_result(tmp_path):
    docs = _docs(30)
    one = run_detectors([WhoTagged, LengthState], make_store(tmp_path / "one", docs), batch_size=10)
    three = run_detectors([WhoTagged, LengthState], make_store(tmp_path / "three", docs), batch_size=10,
                          settings={"tag": {"workers": 3}})
    for name in ("who_tagged", "length_state"):
        stat = three.summary.detectors[name]
        assert (stat.status, stat.rows, stat.batches) == ("ok", 30, 9)  # 3 batches, each in 3 slices
    pids = {json.loads(e)["pid"] for e in three.tags.filter(pc.field("detector") == "who_tagged")
            .column("evidence").to_pylist()}
    assert len(pids) == 3 and os.getpid() not in pids
    drop = ["evidence", "run_id", "created_at"]
    assert one.tags.filter(pc.field("detector") == "length_state").drop_columns(drop).equals(
        three.tags.filter(pc.field("detector") == "length_state").drop_columns(drop))
    assert one.tags.filter(pc.field("detector") == "who_tagged").column("doc_id").equals(
        three.tags.filter(pc.field("detector") == "who_tagged").column("doc_id"))


def test_the_export_manifest_counts_a_state_keeping_detector_once_finish_covers_the_documents(tmp_path):
    from provenance.export import run_export

    store = make_store(tmp_path / "store", _docs(5))
    run_detectors([LengthState], store, {"length_state": {"label": "seen"}})
    run_export(store, tmp_path / "out", where="true")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    vetted = {d["detector"]: d for d in manifest["detectors"]}
    assert vetted["length_state"]["kept_documents_covered"] == 5 and vetted["length_state"]["covers_all_kept"]


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_a_large_finish_output_is_sent_and_stored_in_slices(tmp_path, monkeypatch, isolation):
    from provenance import isolation as isolation_module

    monkeypatch.setattr(isolation_module, "FINISH_PART_ROWS", 4)  # the forked worker inherits it
    store = make_store(tmp_path / "store", _docs(9))
    result = run_detectors([LengthState], store, isolation=isolation)  # finish returns one part of 9 rows
    assert result.tags.num_rows == 9
    files = [e for e in store.snapshot().entries("tags") if e.meta.get("detector") == "length_state"]
    assert sorted(e.rows for e in files) == [1, 4, 4]


def test_a_slice_goes_over_the_wire_without_the_rest_of_its_buffers():
    from provenance.isolation import _from_wire, _to_wire

    table = pa.table({"evidence": ["x" * 100] * 10_000})
    part = table.slice(5_000, 100)
    wire = _to_wire(part)
    assert wire.size < 100 * 100 * 2  # about the slice's own bytes; pickle would copy all 1 MB
    assert _from_wire(wire).equals(part)
