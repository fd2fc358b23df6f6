"""`provenance reference add|list|remove`: reference sets of known LLM texts, through the real CLI and store."""

from __future__ import annotations

import gzip
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import provenance
from provenance.references import ReferenceSetError, add_reference, reference_sets, reference_versions
from provenance.store import Store


def _write_jsonl(path, records) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        for r in records:
            fh.write(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode())


def _log_entries(store_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((store_dir / "_log").glob("*.json"))]


def _listing(cli, store_dir) -> dict[str, dict]:
    proc = cli("reference", "list", "--store", store_dir, "--format", "json", check=0)
    return {s["name"]: s for s in json.loads(proc.stdout)}


def test_add_list_query_and_remove_through_the_cli(tmp_path, cli):
    src = tmp_path / "llm.jsonl.gz"
    _write_jsonl(src, [{"id": "gpt-1", "text": "As an AI language model, I cannot do that."},
                       {"text": "Certainly! Here are five tips."},  # no id: <file name>:<line>
                       {"id": 7, "text": "In conclusion, it depends."}])
    store = tmp_path / "s"
    proc = cli("reference", "add", "llm", src, "--store", store, check=0)
    assert proc.stderr.startswith("reference add: llm: 3 texts from 3 records in 1 input(s), 0 bad; 1 file(s)")
    assert proc.stderr.count("\n") == 1

    listed = _listing(cli, store)
    assert list(listed) == ["llm"] and listed["llm"]["texts"] == 3 and listed["llm"]["files"] == 1
    con = provenance.connect(store)
    rows = con.execute("SELECT reference, ref_id, text, text_sha256, source_file, source_line "
                       "FROM reference_texts ORDER BY source_line").fetchall()
    assert [r[1] for r in rows] == ["gpt-1", "llm.jsonl.gz:2", "7"]
    assert {r[0] for r in rows} == {"llm"} and rows[2][2] == "In conclusion, it depends."
    assert all(r[4] == str(src) for r in rows) and [r[5] for r in rows] == [1, 2, 3]
    assert rows[0][3] == hashlib.sha256(rows[0][2].encode()).hexdigest()
    # The sandboxed query of the CLI reads the reference files too.
    out = cli("query", "SELECT count(*) AS n FROM reference_texts", "--store", store, "--format", "json", check=0)
    assert json.loads(out.stdout) == [{"n": 3}]

    paths = reference_sets(Store.open(store).snapshot())
    assert list(paths) == ["llm"] and all(p.is_absolute() and p.exists() for p in paths["llm"])
    assert all(p.relative_to(store.resolve()).parts[:2] == ("references", "llm") for p in paths["llm"])

    proc = cli("reference", "remove", "llm", "--store", store, check=0)
    assert "3 texts in 1 file(s) removed" in proc.stderr
    assert _listing(cli, store) == {}
    assert provenance.connect(store).execute("SELECT count(*) FROM reference_texts").fetchone() == (0,)


def test_adding_the_same_texts_again_stores_nothing(tmp_path, cli):
    src = tmp_path / "a.jsonl"
    _write_jsonl(src, [{"id": str(i), "text": f"known text {i}"} for i in range(5)])
    store = tmp_path / "s"
    cli("reference", "add", "llm", src, "--store", store, check=0)
    before = _listing(cli, store)["llm"]
    copy = tmp_path / "b.jsonl"  # the same records in another file are the same content
    copy.write_bytes(src.read_bytes())
    proc = cli("reference", "add", "llm", copy, "--store", store, check=0)
    assert "unchanged, already stored" in proc.stderr
    assert len(_log_entries(store)) == 1  # one commit: the first add
    assert _listing(cli, store)["llm"] == before
    assert len(list((store / "references").rglob("*.parquet"))) == 1  # the discarded files are gone too


def test_adding_changed_texts_replaces_the_set_in_one_commit(tmp_path, cli):
    src = tmp_path / "a.jsonl"
    _write_jsonl(src, [{"id": str(i), "text": f"known text {i}"} for i in range(5)])
    other = tmp_path / "other.jsonl"
    _write_jsonl(other, [{"text": "another set"}])
    store = tmp_path / "s"
    cli("reference", "add", "llm", src, "--store", store, check=0)
    cli("reference", "add", "other", other, "--store", store, check=0)
    first = _listing(cli, store)["llm"]

    _write_jsonl(src, [{"id": str(i), "text": f"known text {i}"} for i in range(3)] + [{"id": "9", "text": "new"}])
    proc = cli("reference", "add", "llm", src, "--store", store, check=0)
    assert "replacing 1 file(s)" in proc.stderr
    entries = _log_entries(store)
    assert len(entries) == 3  # one entry per add: the new files and the removal of the old are one commit
    last = entries[-1]
    assert [a["path"].split("/")[:2] for a in last["add"]] == [["references", "llm"]]
    assert len(last["remove"]) == 1 and last["remove"][0].startswith("references/llm/")
    assert {a["meta"]["content_sha256"] for a in last["add"]} != {first["content_sha256"]}

    listed = _listing(cli, store)
    assert listed["llm"]["texts"] == 4 and listed["llm"]["run_id"] != first["run_id"]
    assert reference_versions(Store.open(store).snapshot()) == {
        "llm": listed["llm"]["content_sha256"], "other": listed["other"]["content_sha256"]}
    assert listed["other"]["texts"] == 1  # another name is untouched
    con = provenance.connect(store)
    assert sorted(r[0] for r in con.execute("SELECT ref_id FROM reference_texts WHERE reference = 'llm'")
                  .fetchall()) == ["0", "1", "2", "9"]


def test_bad_records_are_reported_with_file_and_line_and_the_rest_is_kept(tmp_path, cli):
    src = tmp_path / "mixed.jsonl"
    _write_jsonl(src, [
        {"id": "ok1", "text": "a good text"},
        b'{"id": "x", "text": \n',                 # line 2: invalid JSON
        {"id": "no-text"},                          # line 3: no text
        {"id": "num", "text": 5},                   # line 4: text not a string
        {"id": "blank", "text": "   "},             # line 5: empty
        {"id": ["list"], "text": "bad id"},         # line 6: id of the wrong type
        b'{"id": "s", "text": "lone \\ud800 surrogate"}\n',  # line 7: not valid Unicode
        {"id": "ok2", "text": "another good text"},
    ])
    store = tmp_path / "s"
    proc = cli("reference", "add", "llm", src, "--store", store, check=3)  # partial: the good ones are kept
    err = proc.stderr
    assert f"{src}:line 2: invalid JSON" in err
    assert f"{src}:line 3: missing 'text'" in err
    assert f"{src}:line 4: 'text' must be a string, got a number" in err
    assert f"{src}:line 5: 'text' is empty" in err
    assert f"{src}:line 6: 'id' must be a string or an integer, got an array" in err
    assert f"{src}:line 7: 'text' holds" in err
    assert "2 texts from 7 records in 1 input(s), 6 bad" in err
    con = provenance.connect(store)
    assert sorted(r[0] for r in con.execute("SELECT ref_id FROM reference_texts").fetchall()) == ["ok1", "ok2"]
    status, stats = con.execute("SELECT status, stats FROM runs WHERE command = 'reference'").fetchone()
    assert status == "partial" and json.loads(stats)["problems"] == 6


def test_parquet_input_with_other_field_names(tmp_path, cli):
    src = tmp_path / "gen.parquet"
    pq.write_table(pa.table({"uid": ["p1", None], "output": ["parquet text one", "parquet text two"],
                             "model": ["m", "m"]}), src)
    store = tmp_path / "s"
    cli("reference", "add", "gen", src, "--store", store, "--text-field", "output", "--id-field", "uid", check=0)
    rows = provenance.connect(store).execute(
        "SELECT ref_id, text, source_line FROM reference_texts ORDER BY source_line").fetchall()
    assert rows == [("p1", "parquet text one", 1), ("gen.parquet:2", "parquet text two", 2)]
    # The default text field does not exist there: one error for the file, before anything is written.
    proc = cli("reference", "add", "gen2", src, "--store", store)
    assert proc.returncode == 1 and "Parquet column 'text' is missing" in proc.stderr
    assert "columns: uid, output, model" in proc.stderr and "Traceback" not in proc.stderr


def test_large_inputs_are_written_in_chunks_committed_together(tmp_path):
    src = tmp_path / "many.jsonl"
    _write_jsonl(src, [{"id": str(i), "text": f"text number {i}"} for i in range(25)])
    store = Store.open(tmp_path / "s", create=True)
    result = add_reference(store, "llm", [src], chunk_rows=10)
    assert result["files"] == 3 and result["texts"] == 25
    entries = _log_entries(tmp_path / "s")
    assert len(entries) == 1 and len(entries[0]["add"]) == 3
    assert [e.rows for e in store.snapshot().entries("references")] == [10, 10, 5]


def test_an_input_without_usable_records_stores_nothing(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    _write_jsonl(good, [{"text": "fine"}])
    _write_jsonl(bad, [{"body": "wrong field"}, {"body": "again"}])
    with pytest.raises(ReferenceSetError, match=r"bad.jsonl: no usable records \(the first bad one: line 1"):
        add_reference(store, "llm", [good, bad])
    assert store.snapshot().entries("references") == []
    assert not list((tmp_path / "s").rglob("references/**/*.parquet"))  # staged files deleted, not left


def test_views_and_listing_work_on_a_store_without_references(tmp_path, cli):
    src = tmp_path / "docs.jsonl"
    _write_jsonl(src, [{"url": "https://a.example/", "text": "hello"}])
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    con = provenance.connect(tmp_path / "s")
    assert con.execute("SELECT count(*) FROM reference_texts").fetchone() == (0,)
    assert [d[0] for d in con.execute("SELECT * FROM reference_texts").description] == [
        "reference", "ref_id", "text", "text_sha256", "source_file", "source_line", "added_at"]
    proc = cli("reference", "list", "--store", tmp_path / "s", check=0)
    assert "no reference sets" in proc.stderr
    assert cli("reference", "list", "--store", tmp_path / "s", "--format", "csv", check=0).stdout.startswith(
        "name,texts,files,bytes,added_at,run_id,content_sha256")


def test_add_and_remove_wait_for_no_one_while_another_run_writes(tmp_path, cli):
    src = tmp_path / "a.jsonl"
    _write_jsonl(src, [{"text": "known"}])
    store = Store.open(tmp_path / "s", create=True)
    cli("reference", "add", "llm", src, "--store", store.root, check=0)
    with store._lock("store vacuum", "x", exclusive=True):  # this process holds the store alone (maintenance)
        for args in (("add", "other", src), ("remove", "llm")):
            proc = cli("reference", *args, "--store", store.root, check=75)
            assert "store is locked by pid" in proc.stderr and proc.stderr.count("\n") == 1
            assert "(store vacuum, since" in proc.stderr
    assert _listing(cli, store.root)["llm"]["texts"] == 1 and "other" not in _listing(cli, store.root)
    with store.run("ingest"):  # an ingest shares the store: a reference command commits beside it
        cli("reference", "add", "other", src, "--store", store.root, check=0)
    assert _listing(cli, store.root)["other"]["texts"] == 1
