"""DuckDB over a store: the views analysts write SQL against.

Views (stable names; add, never rename):
  documents   every stored document (all columns of schemas/documents.v1.json)
  tags        every live tag row (schemas/tags.v1.json)
  doc_flags   one row per document: flagged, n_tags, categories, flags
              ('category:tag'), category_scores (map), <category>_score for the
              five built-in categories, tag_list
  errors      detector faults recorded by tag runs
  fetches     every crawl fetch attempt (new, changed, unchanged, refused, ...)
  runs        one row per run: command, status, times, stats (JSON)
  first_seen  one row per distinct text_sha256: when and where that exact text
              was first fetched, how many documents and domains carry it

Views read only files named by the commit log (a snapshot taken at connect
time), so a run in progress is never half visible. A tag with a null score
states a fact and counts as 1.0 in the score columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from provenance import schemas
from provenance.store import Snapshot, Store

SCORE_CATEGORIES = ("llm", "poison", "duplicate", "quality", "provenance")


def sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths, quoted."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _parquet_view(con: duckdb.DuckDBPyConnection, name: str, kind: str, paths: list[Path]) -> None:
    if paths:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({sql_list(paths)}, union_by_name=true)")
    else:
        empty = schemas.load(kind).arrow.empty_table()
        con.register(f"_empty_{name}", empty)
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM _empty_{name}")


def _runs_table(store: Store) -> pa.Table:
    rows = []
    for r in store.runs():
        rows.append({
            "run_id": r.get("run_id"), "command": r.get("command"), "status": r.get("status"),
            "started_at": r.get("started_at"), "finished_at": r.get("finished_at"),
            "commits": r.get("commits"), "error": r.get("error"),
            "stats": json.dumps(r.get("stats", {}), default=str),
            "config": json.dumps(r.get("config", {}), default=str),
        })
    schema = pa.schema([(n, pa.string()) for n in ("run_id", "command", "status", "started_at", "finished_at")]
                       + [("commits", pa.int64()), ("error", pa.string()), ("stats", pa.string()),
                          ("config", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


DOC_FLAGS_SQL = """
CREATE OR REPLACE VIEW doc_flags AS
WITH per_category AS (
    SELECT doc_id, category, max(coalesce(score, 1.0)) AS score
    FROM tags GROUP BY doc_id, category
),
by_category AS (
    SELECT doc_id,
           list(category ORDER BY category) AS categories,
           map_from_entries(list({'k': category, 'v': score} ORDER BY category)) AS category_scores,
           {score_columns}
    FROM per_category GROUP BY doc_id
),
by_tag AS (
    SELECT doc_id,
           count(*) AS n_tags,
           list(DISTINCT category || ':' || tag ORDER BY category || ':' || tag) AS flags,
           list({'detector': detector, 'category': category, 'tag': tag, 'score': score}
                ORDER BY detector, tag) AS tag_list
    FROM tags GROUP BY doc_id
)
SELECT d.doc_id,
       coalesce(t.n_tags, 0) > 0 AS flagged,
       coalesce(t.n_tags, 0) AS n_tags,
       coalesce(c.categories, []::VARCHAR[]) AS categories,
       coalesce(t.flags, []::VARCHAR[]) AS flags,
       c.category_scores,
       {score_select},
       t.tag_list
FROM (SELECT doc_id FROM documents) d
LEFT JOIN by_category c USING (doc_id)
LEFT JOIN by_tag t USING (doc_id)
"""


FIRST_SEEN_SQL = """
CREATE OR REPLACE VIEW first_seen AS
SELECT text_sha256,
       min(fetched_at) AS first_seen_at,
       arg_min(doc_id, coalesce(fetched_at, TIMESTAMPTZ '9999-12-31')) AS first_doc_id,
       arg_min(url, coalesce(fetched_at, TIMESTAMPTZ '9999-12-31')) AS first_url,
       count(*) AS n_documents,
       count(DISTINCT domain) AS n_domains
FROM documents WHERE text_sha256 IS NOT NULL GROUP BY text_sha256
"""


def create_views(con: duckdb.DuckDBPyConnection, store: Store, snapshot: Snapshot | None = None) -> Snapshot:
    snapshot = snapshot or store.snapshot()
    for kind in ("documents", "tags", "errors", "fetches"):
        _parquet_view(con, kind, kind, snapshot.paths(kind))
    con.register("_runs", _runs_table(store))
    con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
    con.execute(FIRST_SEEN_SQL)
    score_columns = ",\n           ".join(
        f"max(score) FILTER (WHERE category = '{c}') AS {c}_score" for c in SCORE_CATEGORIES)
    score_select = ", ".join(f"c.{c}_score" for c in SCORE_CATEGORIES)
    con.execute(DOC_FLAGS_SQL.replace("{score_columns}", score_columns)
                .replace("{score_select}", score_select))
    return snapshot


def connect(store: str | Path | Store, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views; the store must exist."""
    store = store if isinstance(store, Store) else Store.open(store)
    con = duckdb.connect(database)
    create_views(con, store)
    return con
