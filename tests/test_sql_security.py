"""User SQL is untrusted text: `export --where` is one boolean expression, `query` is one SELECT, both run on a
connection that reaches no file but the store's, and data is printed as text, never as terminal markup."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pytest

import provenance

# Crawled text that rich would read as markup ([/] closes nothing: MarkupError), an emoji code (:x:) and a
# terminal escape sequence (ESC [31m).
TRICKY_TEXT = "alice:x:1000 [red]hot[/red] a [/] b \x1b[31mEVIL"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three ingested documents (untagged: doc_flags still has one row each)."""
    from conftest import run_cli

    tmp = tmp_path_factory.mktemp("sqlsec")
    src = tmp / "docs.jsonl"
    texts = ["plain text", "second text", TRICKY_TEXT]
    src.write_text("".join(json.dumps({"url": f"https://site{i}.org/p", "text": t}) + "\n"
                           for i, t in enumerate(texts)))
    run_cli("ingest", src, "--store", tmp / "store", check=0)
    return tmp / "store"


def _tree(path) -> dict[str, str]:
    """Every file under path with its sha256: proves that a refused command wrote and changed nothing."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _one_error_line(proc, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("provenance: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# ----- export --where ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where, words", [
    ("1=1); COPY (SELECT 42) TO '{victim}'; --", ["not one SQL expression"]),
    ("false); CREATE OR REPLACE TEMP TABLE selected AS SELECT doc_id FROM documents; --", ["not one SQL expression"]),
    ("true; COPY (SELECT 42) TO '{victim}'", ["not one SQL expression"]),
    ("false) OR (true", ["not one SQL expression"]),           # parses only inside the parentheses we add
    ("true) --", ["not one SQL expression"]),                  # a comment eating our closing parenthesis
    ("true --", ["not one SQL expression"]),                   # ... or a comment that swallows it
    ("true ORDER BY 1", ["not one SQL expression"]),
    ("true LIMIT 0", ["not one SQL expression"]),
    ("true) UNION SELECT doc_id FROM documents WHERE (true", ["not one SQL expression"]),
    ("", ["--where is empty"]),
    ("   ", ["--where is empty"]),
    ("url", ["VARCHAR, not BOOLEAN"]),
    ("no_such_column", ["not a valid predicate", "no_such_column"]),
    ("count(*) > 1", ["not a valid predicate", "aggregates"]),
    ("doc_id IN (SELECT column0 FROM read_csv('/etc/passwd'))", ["Permission", "/etc/passwd"]),
    ("doc_id IN (SELECT * FROM read_text('{victim}'))", ["Permission"]),
    ("text::INT > 1", ["failed", "Conversion Error"]),
])
def test_export_where_is_one_boolean_expression_or_a_usage_error_that_writes_nothing(store, tmp_path, cli, where,
                                                                                     words):
    victim = tmp_path / "victim.csv"
    before = _tree(store)
    proc = cli("export", "--store", store, "--out", tmp_path / "out", "--where", where.format(victim=victim))
    line = _one_error_line(proc, 2, *words)
    assert "\x1b" not in line  # the conversion error quotes TRICKY_TEXT: its ESC is shown, not sent
    assert list(tmp_path.iterdir()) == [] and not victim.exists()
    assert _tree(store) == before


def test_export_manifest_records_the_predicate_that_chose_the_documents(store, tmp_path, cli):
    where = ("doc_id IN (SELECT doc_id FROM documents WHERE url LIKE '%site1%' OR url LIKE '%site2%') "
             "/* a comment is fine */ AND NOT flagged")
    cli("export", "--store", store, "--out", tmp_path / "out", "--where", where, check=0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["query"]["where"] == where and manifest["counts"]["kept"] == 2
    urls = duckdb.connect().execute(f"SELECT list(url ORDER BY url) FROM '{tmp_path / 'out' / 'documents.parquet'}'"
                                    ).fetchone()[0]
    assert urls == ["https://site1.org/p", "https://site2.org/p"]


def test_export_output_path_with_quotes_is_one_literal(store, tmp_path, cli):
    # Unquoted, this name would end the COPY's file literal and write a CSV at tmp_path/injected.csv instead.
    out = tmp_path / f"x' (FORMAT csv); COPY (SELECT 42) TO '{tmp_path / 'injected.csv'}"
    proc = cli("export", "--store", store, "--out", out, "--where", "true", check=0)
    assert "kept 3 of 3" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x' (FORMAT csv); COPY (SELECT 42) TO '"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "documents.parquet", "manifest.json"]
    rows = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [str(out / "documents.parquet")])
    assert rows.fetchone()[0] == 3


def test_overwrite_replaces_only_an_earlier_export(store, tmp_path, cli):
    out = tmp_path / "out"
    cli("export", "--store", store, "--out", out, "--where", "url LIKE '%site0%'", check=0)
    again = cli("export", "--store", store, "--out", out)
    _one_error_line(again, 2, "not empty", "--overwrite")
    cli("export", "--store", store, "--out", out, "--overwrite", check=0)
    assert json.loads((out / "manifest.json").read_text())["counts"]["kept"] == 3

    # A directory of the user's: --overwrite must not delete it, whatever it holds.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    _one_error_line(cli("export", "--store", store, "--out", mine, "--overwrite"), 2, "thesis.tex", "earlier export")
    # An earlier export to which the user added a file of theirs.
    (out / "notes.txt").write_text("mine")
    _one_error_line(cli("export", "--store", store, "--out", out, "--overwrite"), 2, "notes.txt")
    # A manifest.json that this tool did not write.
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "someone else's"}))
    _one_error_line(cli("export", "--store", store, "--out", other, "--overwrite"), 2, "no manifest.json")
    assert (mine / "thesis.tex").read_text() == "years of work" and (out / "notes.txt").read_text() == "mine"
    assert json.loads((other / "manifest.json").read_text()) == {"name": "someone else's"}


# ----- query ------------------------------------------------------------------------------------------
def _outside_parquet(tmp_path):
    path = tmp_path / "outside.parquet"
    duckdb.connect().execute(f"COPY (SELECT 'secret' AS s) TO '{path}'")
    return path


@pytest.mark.parametrize("sql, words", [
    ("COPY (SELECT 1) TO '{victim}'", ["only SELECT", "COPY"]),
    ("COPY (SELECT 1) TO '{store_file}' (USE_TMP_FILE false)", ["only SELECT"]),  # would overwrite the store
    ("SELECT * FROM read_csv('/etc/passwd')", ["Permission", "/etc/passwd"]),
    ("SELECT * FROM read_parquet('{outside}')", ["Permission"]),
    ("SELECT * FROM glob('/etc/*')", ["Permission"]),
    ("ATTACH '{victim}' AS x", ["only SELECT", "ATTACH"]),
    ("SET enable_external_access = true", ["only SELECT", "SET"]),
    ("INSTALL httpfs", ["only SELECT"]),
    ("LOAD httpfs", ["only SELECT"]),
    ("EXPORT DATABASE '{victim}'", ["only SELECT"]),
    ("CREATE TABLE t AS SELECT 1", ["only SELECT"]),
    ("SELECT 1; COPY (SELECT 1) TO '{victim}'", ["2 statements"]),
    ("", ["empty"]),
    ("  \n\t ", ["empty"]),
    ("-- just a comment", ["no statement"]),
])
def test_query_runs_one_select_that_reaches_no_other_file(store, tmp_path, cli, sql, words):
    victim = tmp_path / "victim"
    outside = _outside_parquet(tmp_path)
    store_file = sorted((store / "documents").rglob("*.parquet"))[0]
    before_store, before_tmp = _tree(store), _tree(tmp_path)
    proc = cli("query", "--store", store, "--", sql.format(victim=victim, outside=outside, store_file=store_file))
    _one_error_line(proc, 2, *words)
    assert _tree(store) == before_store and _tree(tmp_path) == before_tmp


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 1) TO '{victim}'",
    "COPY (SELECT 1) TO '{victim}.parquet' (FORMAT parquet)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('{outside}')",
    "ATTACH '{victim}' AS x",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET allowed_directories = ['/']",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE '{victim}'",
])
def test_sandboxed_connection_refuses_files_beyond_the_store(store, tmp_path, sql):
    """The second wall: even a statement that passed the checks cannot reach another file or unlock itself."""
    victim = tmp_path / "victim"
    outside = _outside_parquet(tmp_path)
    before = _tree(tmp_path)
    con = provenance.connect(store, sandbox=True)
    with pytest.raises(duckdb.Error):
        con.execute(sql.format(victim=victim, outside=outside))
    assert _tree(tmp_path) == before
    # ... and the views still work: they read the store's Parquet files.
    assert con.execute("SELECT count(*) FROM documents JOIN doc_flags USING (doc_id)").fetchone()[0] == 3


def test_sandboxed_connection_writes_only_its_writable_directory(store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    con = provenance.connect(store, sandbox=True, writable_dirs=[out])
    con.execute(f"COPY (SELECT url FROM documents) TO '{out / 'urls.parquet'}'")
    assert duckdb.connect().execute(f"SELECT count(*) FROM '{out / 'urls.parquet'}'").fetchone()[0] == 3
    sibling = tmp_path / "out-sibling"  # shares the prefix "out" but is another directory
    sibling.mkdir()
    with pytest.raises(duckdb.PermissionException):
        con.execute(f"COPY (SELECT 1) TO '{sibling / 'x.parquet'}'")
    assert list(sibling.iterdir()) == []


def test_python_connect_stays_unlocked_for_analysts(store, tmp_path):
    """Documented choice: provenance.connect(store) is the analyst's own connection and may read other files."""
    outside = _outside_parquet(tmp_path)
    assert provenance.connect(store).execute(f"SELECT s FROM '{outside}'").fetchone()[0] == "secret"


@pytest.mark.parametrize("sql", ["SHOW TABLES", "DESCRIBE documents", "SUMMARIZE documents",
                                 "WITH n AS (SELECT count(*) AS c FROM documents) SELECT c FROM n",
                                 "FROM documents SELECT url", "VALUES (1)"])
def test_query_accepts_every_form_of_select(store, cli, sql):
    assert cli("query", sql, "--store", store, "--format", "json", check=0).stdout.startswith("[")


# ----- printing data ----------------------------------------------------------------------------------
def test_table_format_prints_data_and_headers_as_text(store, cli):
    proc = cli("query", "SELECT text, 'a [/] b' AS \"[red]head:x:\" FROM documents WHERE text LIKE 'alice%'",
               "--store", store, check=0)
    out = proc.stdout
    assert proc.stderr == ""
    assert "alice:x:1000" in out and "❌" not in out              # :x: is not an emoji
    assert "[red]hot[/red]" in out and "a [/] b" in out         # markup is neither applied nor an error
    assert "[red]head:x:" in out                                # headers too
    assert "\x1b" not in out and "\\x1b[31mEVIL" in out         # an escape sequence is shown, not sent


def test_query_on_markup_literal_prints_it(store, cli):
    proc = cli("query", "select 'a [/] b'", "--store", store, check=0)
    assert "a [/] b" in proc.stdout and "Traceback" not in proc.stderr
