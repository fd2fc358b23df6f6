"""SQL views, `provenance query` output formats, and `provenance export` with its manifest."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import duckdb
import jsonschema
import pytest

import provenance
from provenance import schemas


@pytest.fixture
def tagged_store(tmp_path, cli):
    """Six documents, two of which repeat another's text (exact duplicates), tagged by exact_duplicate alone."""
    src = tmp_path / "docs.jsonl"
    texts = ["alpha text", "beta text", "alpha text", "gamma text", "alpha text", "delta text"]
    src.write_text("".join(json.dumps({"url": f"https://site{i}.org/p", "text": t,
                                       "fetched_at": f"2019-01-0{i + 1}T00:00:00Z"}) + "\n"
                           for i, t in enumerate(texts)))
    store = tmp_path / "store"
    cli("ingest", src, "--store", store, check=0)
    cli("tag", "--store", store, "--plugins", "exact_duplicate", check=0)
    return store


def test_doc_flags_has_one_row_per_document_with_category_scores(tagged_store):
    con = provenance.connect(tagged_store)
    rows = con.execute("SELECT url, flagged, n_tags, categories, flags, duplicate_score, llm_score, "
                       "category_scores['duplicate'] FROM documents JOIN doc_flags USING (doc_id) ORDER BY url"
                       ).fetchall()
    assert len(rows) == 6
    flagged = {r[0] for r in rows if r[1]}
    # The earliest 'alpha text' (site0) is the copy to keep; its later copies are tagged.
    assert flagged == {"https://site2.org/p", "https://site4.org/p"}
    for url, is_flagged, n, cats, flags, dup, llm, dup_map in rows:
        if is_flagged:
            assert (n, cats, flags, dup, llm, dup_map) == (1, ["duplicate"], ["duplicate:exact_duplicate"], 1.0,
                                                           None, 1.0)
        else:
            assert (n, cats, flags, dup) == (0, [], [], None)
    evidence = json.loads(con.execute("SELECT evidence FROM tags LIMIT 1").fetchone()[0])
    kept = con.execute("SELECT doc_id FROM documents WHERE url = 'https://site0.org/p'").fetchone()[0]
    assert evidence["kept_doc_id"] == kept and evidence["group_size"] == 3 and evidence["n_domains"] == 3


def test_every_tag_names_plugin_version_and_config(tagged_store):
    con = provenance.connect(tagged_store)
    row = con.execute("SELECT DISTINCT plugin, plugin_version, detector, detector_version, config_hash, run_id "
                      "FROM tags").fetchall()
    assert len(row) == 1
    plugin, plugin_version, detector, detector_version, config_hash, run_id = row[0]
    assert (plugin, detector, detector_version) == ("exact_duplicate", "exact_duplicate", "1")
    assert plugin_version == provenance.__version__ and len(config_hash) == 16 and "tag" in run_id


def test_query_formats(tagged_store, cli):
    sql = "SELECT url, flagged FROM documents JOIN doc_flags USING (doc_id) ORDER BY url"
    rows = json.loads(cli("query", sql, "--store", tagged_store, "--format", "json", check=0).stdout)
    assert isinstance(rows, list) and len(rows) == 6 and rows[0] == {"url": "https://site0.org/p", "flagged": False}
    csv_out = cli("query", sql, "--store", tagged_store, "--format", "csv", check=0).stdout.splitlines()
    assert csv_out[0] == "url,flagged" and csv_out[1] == "https://site0.org/p,False" and len(csv_out) == 7
    table = cli("query", sql, "--store", tagged_store, check=0).stdout
    assert "site5.org" in table and "flagged" in table
    bad = cli("query", "SELECT nope FROM documents", "--store", tagged_store)
    assert bad.returncode == 2 and bad.stderr.startswith("provenance: error: SQL error")


def test_query_streams_results_larger_than_one_fetch(tagged_store, cli):
    # 25,000 rows are three fetches of QUERY_CHUNK_ROWS: every row comes out once, in order, in each format.
    from provenance.cli import QUERY_CHUNK_ROWS

    n = 25_000
    assert n > 2 * QUERY_CHUNK_ROWS
    sql = f"SELECT d.url, r.range AS i FROM range({n}) r CROSS JOIN (SELECT url FROM documents LIMIT 1) d ORDER BY i"
    rows = json.loads(cli("query", sql, "--store", tagged_store, "--format", "json", check=0).stdout)
    assert [r["i"] for r in rows] == list(range(n))
    csv_lines = cli("query", sql, "--store", tagged_store, "--format", "csv", check=0).stdout.splitlines()
    assert len(csv_lines) == n + 1 and csv_lines[-1].endswith(f",{n - 1}")
    table = cli("query", sql, "--store", tagged_store, "--max-rows", "3", check=0).stdout
    assert f"({n} rows, first 3 shown; --max-rows 0 shows all)" in table


def test_export_manifest_counts_match_the_exported_data(tagged_store, tmp_path, cli):
    out = tmp_path / "export"
    proc = cli("export", "--store", tagged_store, "--out", out, check=0)
    assert "kept 4 of 6" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(schemas.MANIFEST_SCHEMA_PATH.read_text()))
    exported = duckdb.connect().execute(f"SELECT count(*) FROM '{out / 'documents.parquet'}'").fetchone()[0]
    assert manifest["counts"]["kept"] == exported == 4
    assert manifest["counts"]["excluded"] == 2
    assert manifest["counts"]["excluded_by_tag"] == {"duplicate:exact_duplicate": 2}
    assert manifest["outputs"][0]["rows"] == 4
    (det,) = manifest["detectors"]
    assert det["detector"] == "exact_duplicate" and det["plugin_version"] == provenance.__version__
    assert det["covers_all_kept"] and det["kept_documents_covered"] == 4
    assert {i["kind"] for i in manifest["inputs"]} == {"documents", "tags"}
    cols = duckdb.connect().execute(f"DESCRIBE SELECT * FROM '{out / 'documents.parquet'}'").fetchall()
    assert "raw" not in {c[0] for c in cols} and "text_sha256" in {c[0] for c in cols}
    card = (out / "README.md").read_text()
    assert "Kept **4** of 6" in card and "exact_duplicate" in card


def test_export_with_a_custom_predicate_and_refusals(tagged_store, tmp_path, cli):
    out = tmp_path / "e2"
    cli("export", "--store", tagged_store, "--out", out, "--where", "domain LIKE 'site1%' OR flagged", check=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == 3 and manifest["counts"]["kept_with_tags_by_tag"] == {
        "duplicate:exact_duplicate": 2}
    assert manifest["counts"]["excluded_without_tags"] == 3
    again = cli("export", "--store", tagged_store, "--out", out)
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = cli("export", "--store", tagged_store, "--out", tmp_path / "e3", "--where", "no_such_column > 1")
    assert bad.returncode == 2 and "not a valid predicate" in bad.stderr
    assert not (tmp_path / "e3").exists()


def test_untagged_store_exports_everything_as_unvetted(tmp_path, cli):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"url": "https://a.org/", "text": "only"}) + "\n")
    cli("ingest", src, "--store", tmp_path / "s", check=0)
    cli("export", "--store", tmp_path / "s", "--out", tmp_path / "o", check=0)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["detectors"] == [] and manifest["counts"]["kept"] == 1
    assert "unvetted" in (tmp_path / "o" / "README.md").read_text()


def test_first_seen_gives_the_earliest_fetch_of_each_text(tagged_store):
    con = provenance.connect(tagged_store)
    row = con.execute("SELECT first_url, n_documents, n_domains, first_seen_at FROM first_seen f "
                      "JOIN documents d ON d.text_sha256 = f.text_sha256 WHERE d.url = 'https://site4.org/p'"
                      ).fetchone()
    assert row[0] == "https://site0.org/p" and row[1:3] == (3, 3) and row[3].day == 1
    assert con.execute("SELECT count(*) FROM first_seen").fetchone()[0] == 4


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_export_killed_while_replacing_an_earlier_one_is_recovered_by_the_next_run(tagged_store, cli, tmp_path):
    out = tmp_path / "clean"
    cli("export", "--store", tagged_store, "--out", out, check=0)
    earlier = (out / "manifest.json").read_text()
    # What a kill leaves between "move the earlier export aside" and "rename the new one into place":
    # no output directory, the earlier export set aside, and a half-built one.
    pid = _dead_pid()
    out.rename(tmp_path / f".clean.old-{pid}")
    (tmp_path / f".clean.tmp-{pid}").mkdir()
    (tmp_path / f".clean.tmp-{pid}" / "documents.parquet").write_bytes(b"half")

    refused = cli("export", "--store", tagged_store, "--out", out)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr  # the earlier export is back in the way
    assert (out / "manifest.json").read_text() == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".clean")) == []

    cli("export", "--store", tagged_store, "--out", out, "--overwrite", "--where", "true", check=0)
    assert json.loads((out / "manifest.json").read_text())["query"]["where"] == "true"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".clean")) == []



def test_an_export_is_on_disk_before_it_replaces_the_earlier_one(tmp_path, monkeypatch):
    """A power loss right after an export reports success must leave one whole export, the new or the earlier:
    every file and directory of the new one is fsynced before the rename that puts it in place, and that rename
    before the earlier export is deleted."""
    import os
    import shutil

    from provenance import export
    from provenance.testing import make_store

    store = make_store(tmp_path / "store", [{"url": f"https://e{i}.org/", "text": f"page {i}"} for i in range(20)])
    out = tmp_path / "clean"
    export.run_export(store, out)
    events: list[tuple[str, str]] = []
    fsync, replace, rmtree = os.fsync, os.replace, shutil.rmtree

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recording_replace(src, dst, **kwargs):
        events.append(("replace", f"{src} -> {dst}"))
        return replace(src, dst, **kwargs)

    def recording_rmtree(path, *args, **kwargs):
        events.append(("rmtree", str(path)))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(shutil, "rmtree", recording_rmtree)
    export.run_export(store, out, overwrite=True, where="true")

    into_place = next(i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith(f"-> {out}"))
    staging = Path(events[into_place][1].split(" -> ")[0])
    synced_before = {what for kind, what in events[:into_place] if kind == "fsync"}
    for name in sorted(p.name for p in out.iterdir()):
        assert str(staging / name) in synced_before, name
    assert str(staging) in synced_before
    earlier_deleted = next(i for i, (kind, what) in enumerate(events) if kind == "rmtree" and ".clean.old-" in what)
    assert ("fsync", str(tmp_path)) in events[into_place:earlier_deleted]
    assert json.loads((out / "manifest.json").read_text())["query"]["where"] == "true"


# ----- everyday output: query formats, the view list, the dataset card, --with-tags, paths -----------------
def test_query_help_lists_every_view_the_store_has(tagged_store, cli):
    from provenance.sql import VIEWS

    con = provenance.connect(tagged_store)
    made = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
            if not r[0].startswith("_")}  # _runs, _empty_*: registered tables behind views
    assert made == set(VIEWS)  # the registry --help reads is the set of views create_views makes
    help_text = cli("query", "--help", check=0).stdout
    for name in VIEWS:
        assert f"  {name} " in help_text, name
    assert "first_seen" in help_text and "clusters" in help_text


def test_query_says_0_rows_on_stderr_and_keeps_csv_and_json_clean(tagged_store, cli):
    empty = "SELECT url, flags FROM documents JOIN doc_flags USING (doc_id) WHERE false"
    table = cli("query", empty, "--store", tagged_store, check=0)
    assert table.stderr.strip() == "0 rows" and "url" in table.stdout
    csv_out = cli("query", empty, "--store", tagged_store, "--format", "csv", check=0)
    assert csv_out.stdout == "url,flags\n" and csv_out.stderr == ""
    json_out = cli("query", empty, "--store", tagged_store, "--format", "json", check=0)
    assert json_out.stdout.strip() == "[]" and json_out.stderr == ""


def test_query_csv_writes_lists_structs_and_maps_as_json(tagged_store, cli):
    import csv
    import io

    sql = ("SELECT count(*), flags, category_scores, tag_list FROM doc_flags WHERE flagged GROUP BY ALL")
    out = cli("query", sql, "--store", tagged_store, "--format", "csv", check=0).stdout
    header, *rows = list(csv.reader(io.StringIO(out)))
    assert header == ["count(*)", "flags", "category_scores", "tag_list"]  # not DuckDB's count_star()
    ((n, flags, scores, tag_list),) = rows
    assert n == "2" and json.loads(flags) == ["duplicate:exact_duplicate"]
    assert json.loads(scores) == {"duplicate": 1.0}
    assert json.loads(tag_list) == [{"detector": "exact_duplicate", "category": "duplicate",
                                     "tag": "exact_duplicate", "score": 1.0}]
    table = cli("query", sql, "--store", tagged_store, check=0).stdout
    assert '["duplicate:exact_duplicate"]' in table and "count(*)" in table


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_dataset_card_has_hugging_face_front_matter_and_says_what_was_kept(tmp_path, cli):
    src = tmp_path / "docs.jsonl"
    english = "The harbour council met on Monday and agreed a new timetable for the ferries to the islands."
    german = "Der Stadtrat hat am Montag einen neuen Fahrplan für die Fähren zu den Inseln beschlossen."
    records = [{"url": f"https://{host}/p{i}", "text": text, "fetched_at": f"2019-03-0{i + 1}T00:00:00Z"}
               for i, (host, text) in enumerate([("a.org", english), ("b.org", english + " Again."),
                                                 ("b.org", german), ("c.org", english)])]
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    store, out = tmp_path / "store", tmp_path / "ferries"
    cli("ingest", src, "--store", store, "--crawl-id", "ferry-news", check=0)
    cli("tag", "--store", store, "--plugins", "exact_duplicate,language", check=0)
    cli("export", "--store", store, "--out", out, check=0)
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert "license" in meta and meta["license"] is None  # present, for the user to fill in
    assert meta["language"] == ["en", "de"] and meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["original"] and "ferries" in meta["pretty_name"]
    assert meta["configs"] == [{"config_name": "default", "data_files": "documents.parquet"}]
    # The body: predicate, reasons removed, domains, dates, columns with types, detectors with versions.
    assert "`NOT flagged`" in card and "| duplicate:exact_duplicate | 1 |" in card
    assert "| b.org | 2 |" in card and "ferry-news (jsonl) 3" in card
    assert "Fetched from 2019-03-01" in card and "to 2019-03-03" in card  # d.org's copy (03-04) was excluded
    assert "| text | `VARCHAR` |" in card and "| fetched_at | `TIMESTAMP WITH TIME ZONE` |" in card
    assert f"| language | 1 | language {provenance.__version__}" in card


def test_size_categories_follow_the_hugging_face_buckets():
    from provenance.export import size_category

    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 2_500_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M", "n>1T"]


def test_export_with_tags_adds_each_documents_flags_and_scores(tagged_store, tmp_path, cli):
    out = tmp_path / "tagged"
    cli("export", "--store", tagged_store, "--out", out, "--where", "true", "--with-tags", check=0)
    rows = duckdb.connect().execute(
        f"SELECT url, flagged, flags, duplicate_score, category_scores FROM '{out / 'documents.parquet'}' "
        "ORDER BY url").fetchall()
    assert len(rows) == 6
    assert [(r[0], r[1], r[2], r[3]) for r in rows if r[1]] == [
        ("https://site2.org/p", True, ["duplicate:exact_duplicate"], 1.0),
        ("https://site4.org/p", True, ["duplicate:exact_duplicate"], 1.0)]
    assert rows[0][1:4] == (False, [], None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["with_tags"] is True
    assert {"flagged", "flags", "llm_score"} <= {c["name"] for c in manifest["columns"]}
    plain = tmp_path / "plain"
    cli("export", "--store", tagged_store, "--out", plain, check=0)
    plain_manifest = json.loads((plain / "manifest.json").read_text())
    assert plain_manifest["with_tags"] is False and "flagged" not in {c["name"] for c in plain_manifest["columns"]}


def test_manifest_paths_are_relative_to_the_export_unless_asked(tagged_store, tmp_path, cli):
    from provenance.store import file_sha256

    out = tmp_path / "exports" / "clean"
    cli("export", "--store", tagged_store, "--out", out, check=0)
    text = (out / "manifest.json").read_text()
    assert str(tmp_path) not in text  # no local path: the manifest can be shared
    manifest = json.loads(text)
    jsonschema.validate(manifest, json.loads(schemas.MANIFEST_SCHEMA_PATH.read_text()))
    assert manifest["manifest_version"] == 2 and manifest["paths"] == "relative"
    assert (out / manifest["store"]).resolve() == tagged_store.resolve()
    for entry in manifest["inputs"]:  # each input resolves from the export directory to the file read
        assert file_sha256(out / entry["path"]) == entry["sha256"]
    absolute = tmp_path / "abs"
    cli("export", "--store", tagged_store, "--out", absolute, "--absolute-paths", check=0)
    manifest = json.loads((absolute / "manifest.json").read_text())
    assert manifest["paths"] == "absolute" and manifest["store"] == str(tagged_store.absolute())
    assert all(Path(e["path"]).is_absolute() and Path(e["path"]).is_file() for e in manifest["inputs"])


def test_export_of_a_store_larger_than_its_memory_limit(tmp_path, monkeypatch):
    """38 MB of text exported under a 96 MB DuckDB limit: DuckDB's own ORDER BY of the wide rows ran out of memory
    here (and a spill before the COPY failed: the spill directory did not exist yet). The merge of the sorted
    document files, in steps of 1/16 of the limit, and the external sort (for files that cannot be merged) each
    write every selected document once, in doc_id order, the same rows a query without a limit gives; the sort
    with ranges forced down to two levels of split too, and with the selection joined range by range. Nothing of
    either is left in the export."""
    import random

    import pyarrow.parquet as pq

    from provenance import export
    from provenance.testing import make_store

    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    docs = [{"url": f"https://s{i % 7}.org/{i}", "text": " ".join(rng.choice(words) for _ in range(830))}
            for i in range(8000)]
    store = make_store(tmp_path / "store", docs, rows_per_file=500)
    expected = provenance.connect(store).sql(
        "SELECT * EXCLUDE (raw) FROM documents WHERE doc_id IN (SELECT doc_id FROM doc_flags WHERE NOT flagged) "
        "ORDER BY doc_id").to_arrow_table()
    assert expected.num_rows == 8000 and sum(len(t) for t in expected.column("text").to_pylist()) > 36e6
    monkeypatch.setattr(export, "EXPORT_MEMORY_MB", 96)
    paths = store.snapshot().paths("documents")
    group_bytes = export._document_size(paths, False)[2]  # a file's one row group: 500 rows of 5 KB
    monkeypatch.setattr(export, "EXPORT_MERGE_GROUP_FACTOR", 1)  # 16 open files of 2.5 MB within 96 MB
    monkeypatch.setattr(export, "_write_sorted", None)  # merged: not sorted through range files
    manifest = export.run_export(store, tmp_path / "out")
    assert manifest["counts"]["kept"] == 8000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(export.EXPORT_FILES)
    got = pq.read_table(tmp_path / "out" / "documents.parquet")
    assert got.column_names == expected.column_names and got.to_pylist() == expected.to_pylist()
    monkeypatch.undo()
    monkeypatch.setattr(export, "EXPORT_MEMORY_MB", 96)  # 16 files of 4 x 2.5 MB take more than it: sorted
    assert export._mergeable(paths, group_bytes, 192 << 20) and not export._mergeable(paths, group_bytes, 96 << 20)
    export.run_export(store, tmp_path / "out", overwrite=True)
    assert pq.read_table(tmp_path / "out" / "documents.parquet").to_pylist() == expected.to_pylist()
    monkeypatch.setattr(export, "EXPORT_BUCKET_SHARE", 5e-3)  # 256 ranges: two characters, in one pass
    assert export._range_levels(export._document_size(store.snapshot().paths("documents"), False)[0],
                                96 * 2**20 * 5e-3) == 2
    export.run_export(store, tmp_path / "out", overwrite=True)
    assert pq.read_table(tmp_path / "out" / "documents.parquet").to_pylist() == expected.to_pylist()
    # The selection joined range by range (as for a selection too big to join on the way in), and 4,096 ranges
    # (three characters: a pass of two, then one pass of one within each range).
    monkeypatch.setattr(export, "EXPORT_EARLY_FILTER_SHARE", 0)
    monkeypatch.setattr(export, "EXPORT_BUCKET_SHARE", 2e-4)
    assert export._range_levels(export._document_size(store.snapshot().paths("documents"), False)[0],
                                96 * 2**20 * 2e-4) == 3
    export.run_export(store, tmp_path / "out", where="domain IN ('s1.org', 's4.org')", overwrite=True)
    assert pq.read_table(tmp_path / "out" / "documents.parquet").to_pylist() == \
        [r for r in expected.to_pylist() if r["domain"] in ("s1.org", "s4.org")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "store"]


def test_an_export_merges_sorted_document_files_and_writes_what_the_sort_writes(tmp_path, monkeypatch, cli):
    """Document files are written in doc_id order and say so in their footer; the export then merges them, in
    many steps here, with no range files: the same table, columns and types as the external sort writes, with
    a predicate, --with-tags and --include-raw alike, in row groups of EXPORT_ROW_GROUP_ROWS, each output's
    sha256 in the manifest taken as it was written. A file written unsorted (by an earlier version) makes the export sort; `provenance store compact` rewrites it in order,
    and the export merges again."""
    import pyarrow.parquet as pq

    from provenance import export
    from provenance import store as store_mod
    from provenance.testing import make_store

    texts = [f"Minutes of meeting {i}: the committee discussed item {i * 13 % 97}." for i in range(3000)]
    store = make_store(tmp_path / "store", texts[:2400], rows_per_file=300)
    with monkeypatch.context() as m:  # as a version before sorted files wrote them
        m.setattr(store_mod, "SORTED_BY", {})
        make_store(tmp_path / "store", texts[2400:], rows_per_file=600)
    paths = store.snapshot().paths("documents")
    assert [store_mod.is_sorted_file(p, "documents") for p in paths].count(False) == 1 and len(paths) == 9
    for path in paths:
        ids = pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist()
        assert (ids == sorted(ids)) == store_mod.is_sorted_file(path, "documents")

    def exported(name: str, **options) -> "pa.Table":
        manifest = export.run_export(store, tmp_path / name, overwrite=True, **options)
        # the sha256 taken as the file was written, row group by row group, is the written file's
        assert manifest["outputs"][0]["sha256"] == store_mod.file_sha256(tmp_path / name / "documents.parquet")
        return pq.read_table(tmp_path / name / "documents.parquet")

    def fail(*_args, **_kwargs):
        raise AssertionError("sorted through range files")

    options = [{}, {"where": "domain = 'example.test' AND url LIKE '%1%'"}, {"with_tags": True},
               {"include_raw": True, "with_tags": True}]
    sorted_tables = [exported("sorted", **o) for o in options]  # one file unsorted: sorted, as before
    assert sorted_tables[0].num_rows == 3000 and 0 < sorted_tables[1].num_rows < 3000
    cli("store", "compact", "--store", store.root, "--target-rows", "1000", check=0)
    paths = store.snapshot().paths("documents")
    assert all(store_mod.is_sorted_file(p, "documents") for p in paths) and len(paths) == 3  # 2 merged, 1 alone
    monkeypatch.setattr(export, "_write_sorted", fail)
    monkeypatch.setattr(export, "EXPORT_MERGE_STEP_SHARE", 1e-4)  # steps of about 100 KB: many of them
    monkeypatch.setattr(export, "EXPORT_ROW_GROUP_ROWS", 700)
    for o, expected in zip(options, sorted_tables):
        got = exported("merged", **o)
        assert got.schema == expected.schema and got.equals(expected), o
    groups = pq.ParquetFile(tmp_path / "merged" / "documents.parquet").metadata
    assert [groups.row_group(g).num_rows for g in range(groups.num_row_groups)] == [700] * 4 + [200]
    # However many steps are read ahead of the writing, they are written in order (the default last: it stays).
    for ahead in (1, 4, export.EXPORT_MERGE_AHEAD):
        monkeypatch.setattr(export, "EXPORT_MERGE_AHEAD", ahead)
        assert exported("merged", with_tags=True).equals(sorted_tables[2]), ahead
    # A store too big for the page cache (here: forced): each file's pages are dropped behind the merge, every
    # byte once, and the output's behind its writes; the same table.
    dropped = collections.defaultdict(list)
    monkeypatch.setattr(export, "EXPORT_DROP_BEHIND", True)
    monkeypatch.setattr(export, "_drop_pages", lambda path, start, end: dropped[path].append((start, end)))
    assert exported("merged").equals(sorted_tables[0])
    for path in paths:
        assert [s for s, _ in dropped[path]] == [0] + [e for _, e in dropped[path][:-1]]  # in order, no gap
        assert dropped[path][-1][1] == path.stat().st_size
    output = [ranges for path, ranges in dropped.items() if path not in paths]
    assert len(output) == 1 and output[0][-1][1] < (tmp_path / "merged" / "documents.parquet").stat().st_size
    monkeypatch.setattr(export, "EXPORT_DROP_BEHIND", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "sorted", "store"]
    # Nothing selected: one file of the columns, no rows.
    assert exported("merged", where="false").column_names == sorted_tables[0].column_names
    # More files than the memory limit lets the merge open: sorted.
    monkeypatch.setattr(export, "EXPORT_MERGE_GROUP_FACTOR", 1e6)
    with pytest.raises(AssertionError, match="range files"):
        exported("merged")


def test_an_exports_memory_is_the_machines_or_its_memory_cgroups_when_lower(tmp_path):
    """Whether an export drops its pages from the page cache depends on the memory it may fill: a container's
    cgroup limit (v1 or v2) when lower than the machine's, the machine's when unlimited or unreadable."""
    from provenance.export import memory_bytes

    machine = memory_bytes(tmp_path / "no-such-file", tmp_path)
    assert machine == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    (root / "memory" / "job").mkdir(parents=True)
    (root / "memory" / "job" / "memory.limit_in_bytes").write_text(f"{3 << 30}\n")
    proc.write_text("4:memory:/job\n1:cpu:/\n")
    assert memory_bytes(proc, root) == min(machine, 3 << 30)  # v1
    (root / "pod").mkdir()
    (root / "pod" / "memory.max").write_text("max\n")
    proc.write_text("0::/pod\n")
    assert memory_bytes(proc, root) == machine  # v2, no limit
    (root / "pod" / "memory.max").write_text(f"{1 << 30}\n")
    assert memory_bytes(proc, root) == min(machine, 1 << 30)
    (root / "pod" / "memory.max").write_text("garbage\n")
    assert memory_bytes(proc, root) == machine


def test_a_sharded_export_cuts_the_sorted_documents_into_files_of_at_most_n_rows(tmp_path, cli):
    """--shard-rows N: the documents of the one-file export, in the same order, cut into files of N rows (the
    last fewer) whose boundaries fall inside the sort's ranges; each file in the manifest with its rows and
    sha256, the card's data_files a glob of them. Replacing a sharded export with another leaves none of the
    earlier shards; a count that divides the rows makes no empty file; an empty selection makes one file."""
    import hashlib

    import pyarrow.parquet as pq

    from provenance import export
    from provenance.testing import make_store

    store = make_store(tmp_path / "store", [f"Page {i} of the parish records, entry {i * 7}." for i in range(2500)])
    whole = export.run_export(store, tmp_path / "whole")
    expected = pq.read_table(tmp_path / "whole" / "documents.parquet").to_pylist()
    assert len(expected) == 2500 and [r["doc_id"] for r in expected] == sorted(r["doc_id"] for r in expected)

    out = tmp_path / "sharded"
    proc = cli("export", "--store", store.root, "--out", out, "--shard-rows", "700", check=0)
    assert "kept 2500 of 2500" in proc.stdout
    names = [f"documents-0000{i}-of-00004.parquet" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "manifest.json", "README.md"])
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(schemas.MANIFEST_SCHEMA_PATH.read_text()))
    assert [(o["path"], o["rows"]) for o in manifest["outputs"]] == list(zip(names, [700, 700, 700, 400]))
    for o in manifest["outputs"]:
        assert o["sha256"] == hashlib.sha256((out / o["path"]).read_bytes()).hexdigest()
        assert o["bytes"] == (out / o["path"]).stat().st_size
    assert [r for name in names for r in pq.read_table(out / name).to_pylist()] == expected
    assert manifest["counts"] == whole["counts"] and manifest["summary"] == whole["summary"]
    card = (out / "README.md").read_text()
    assert _front_matter(card)["configs"] == [{"config_name": "default", "data_files": "documents-*-of-*.parquet"}]
    assert "4 files `documents-*-of-*.parquet` of at most 700 rows" in card

    # From the settings file, a count that divides the rows: five full files, no empty sixth.
    config = tmp_path / "provenance.toml"
    config.write_text("[export]\nshard_rows = 500\n")
    cli("export", "--config", config, "--store", store.root, "--out", out, "--overwrite", check=0)
    files = sorted(p.name for p in out.glob("documents*"))
    assert files == [f"documents-0000{i}-of-00005.parquet" for i in range(5)]
    assert [pq.ParquetFile(out / f).metadata.num_rows for f in files] == [500] * 5
    # Back to one file: the shards go with the export they belonged to.
    cli("export", "--store", store.root, "--out", out, "--overwrite", check=0)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "documents.parquet", "manifest.json"]
    assert pq.read_table(out / "documents.parquet").to_pylist() == expected

    # Nothing selected: one file of the columns and no rows.
    none = export.run_export(store, tmp_path / "none", where="false", shard_rows=10)
    assert [(o["path"], o["rows"]) for o in none["outputs"]] == [("documents-00000-of-00001.parquet", 0)]
    assert pq.read_schema(tmp_path / "none" / "documents-00000-of-00001.parquet").names == \
        pq.read_schema(tmp_path / "whole" / "documents.parquet").names

    # Mistakes: one line each, and nothing replaced; --overwrite still refuses a directory with another file.
    bad = cli("export", "--store", store.root, "--out", tmp_path / "bad", "--shard-rows", "0")
    assert bad.returncode == 2 and "--shard-rows" in bad.stderr and not (tmp_path / "bad").exists()
    config.write_text("[export]\nshard_rows = 'many'\n")
    bad = cli("export", "--config", config, "--store", store.root, "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "shard_rows" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (out / "notes.txt").write_text("mine")
    refused = cli("export", "--store", store.root, "--out", out, "--overwrite", "--shard-rows", "100")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr and (out / "documents.parquet").exists()


def test_export_ranges_follow_byte_order_whatever_the_characters():
    """The split's range numbers order the strings as a byte-wise sort does (DuckDB's and Arrow's), for hex
    doc_ids and for any others: a shorter string first, bytes above ASCII after it, a sliced array's own rows."""
    import pyarrow as pa

    from provenance import export

    ids = ["ff", "0", "", "a1", "a", "é9", "zz", "00", "0f", "b"]
    for width in (1, 2):
        numbers = export._prefix_numbers(pa.array(ids), 0, width)
        by_number = [s for _, s in sorted(zip(numbers.tolist(), ids), key=lambda p: p[0])]
        # equal numbers: same range, so only their order across ranges must follow bytes
        assert [s.encode()[:width] for s in by_number] == sorted(s.encode()[:width] for s in ids)
    sliced = pa.array(["x", *ids]).slice(1)
    second_bytes = [s.encode()[1] if len(s.encode()) > 1 else 0 for s in ids]
    assert export._prefix_numbers(sliced, 1, 1).tolist() == second_bytes


def test_the_manifest_summary_describes_the_kept_documents(tmp_path):
    """domains, by_domain, by_crawl and fetched_at count what was exported (read from the export's own file),
    not the store: the same as computing them from the kept rows."""
    from collections import Counter

    import pyarrow.parquet as pq

    from provenance import export
    from provenance.testing import make_store

    docs = [{"url": f"https://s{i % 4}.org/{i}", "text": f"page {i} " * 20,
             "fetched_at": f"2024-0{1 + i % 9}-1{i % 10}T00:00:00Z"} for i in range(40)]
    store = make_store(tmp_path / "store", docs, crawl_id="first")
    make_store(tmp_path / "store", [{"url": "https://s9.org/x", "text": "late page " * 20,
                                     "fetched_at": "2025-03-01T00:00:00Z"}], crawl_id="second")
    manifest = export.run_export(store, tmp_path / "out", where="domain <> 's2.org'")
    kept = pq.read_table(tmp_path / "out" / "documents.parquet").to_pylist()
    assert len(kept) == manifest["counts"]["kept"] == 31
    summary = manifest["summary"]
    domains = Counter(d["domain"] for d in kept)
    assert summary["domains"] == len(domains) == 4 and summary["by_domain"] == dict(domains)
    assert summary["by_crawl"] == dict(Counter(f"{d['crawl_id']} ({d['source']})" for d in kept))
    assert summary["fetched_at"] == {"first": min(d["fetched_at"] for d in kept).isoformat(),
                                     "last": max(d["fetched_at"] for d in kept).isoformat()}
    empty = export.run_export(store, tmp_path / "none", where="false")
    assert empty["summary"]["domains"] == 0 and empty["summary"]["by_domain"] == {}
    assert empty["summary"]["fetched_at"] == {"first": None, "last": None}


def test_the_split_cuts_batches_of_about_4_mb_of_the_stores_average_document():
    """Buffers over 8 MB go back to the kernel when freed (jemalloc's huge allocations) and fault in anew: a split
    batch is as many rows as make EXPORT_SPLIT_BATCH_BYTES, but never so few that cutting it 256 ways costs more."""
    from provenance import export

    assert export.EXPORT_SPLIT_BATCH_BYTES == 4 << 20
    assert export._split_batch_rows(2048 * 1_000_000, 1_000_000) == 2048  # 2 KB documents
    assert export._split_batch_rows(200 * 1_000_000, 1_000_000) == 8192  # short ones: the most rows
    assert export._split_batch_rows(50_000 * 1_000, 1_000) == 1024  # long ones: the fewest
    assert export._split_batch_rows(0, 0) == 8192  # an empty store
    # Cut 256 ways: enough rows for 64 a range on average, up to 32 MB (a cost per slice and column).
    assert export._split_batch_rows(2048 * 1_000_000, 1_000_000, 256) == 16384
    assert export._split_batch_rows(4096 * 1_000_000, 1_000_000, 256) == 8192  # 32 MB of 4 KB documents
    assert export._split_batch_rows(50_000 * 1_000, 1_000, 256) == 1024  # long ones: still the fewest
    import pyarrow as pa

    two = pa.record_batch({"doc_id": pa.array(["a", "b"])})
    none = two.slice(0, 0)
    assert next(export._batches_of(iter([two]), 2)) is two  # DuckDB's batch of the rows asked for: not copied
    assert [b.num_rows for b in export._batches_of(iter([two, two, two, none]), 4)] == [4, 2]
    assert list(export._batches_of(iter([none]), 4)) == []  # no batch of no rows: the pass divides by its rows


def test_the_export_allocates_from_jemalloc_or_malloc_and_restores_the_default(monkeypatch):
    """mimalloc (pyarrow's default) cost a 1M-document export a third more time, most of it in the kernel: the
    export switches Arrow's pool for its own run only, and leaves a pool the user chose alone."""
    import pyarrow as pa

    from provenance import export

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    previous = pa.default_memory_pool()
    try:
        mimalloc = pa.mimalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow has no mimalloc: its default is already another pool")
    pa.set_memory_pool(mimalloc)
    try:
        with export._memory_pool():
            assert pa.default_memory_pool().backend_name in ("jemalloc", "system")
            assert pa.array(["x" * 1000] * 100).buffers()[2] is not None  # allocations still work
        assert pa.default_memory_pool().backend_name == "mimalloc"
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")  # the user's choice
        with export._memory_pool():
            assert pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(previous)
