"""DuckDB over a store: the views analysts write SQL against.

Views (stable names; add, never rename):
  documents   every stored document (all columns of schemas/documents.v1.json)
  tags        every live tag row (schemas/tags.v1.json)
  doc_flags   one row per document: flagged (a tag outside NOT_FLAG_CATEGORIES:
              consent, language, quality; and not one of NOT_FLAG_TAGS: the
              provenance tier, content_drift's minor_edit), n_tags, categories, flags
              ('category:tag'), category_scores (map), <category>_score for the
              five built-in categories, tag_list
  errors      detector faults recorded by tag runs
  fetches     every crawl fetch attempt (new, changed, unchanged, refused, ...)
  runs        one row per run: command, status, times, stats (JSON)
  first_seen  one row per distinct text_sha256: when and where that exact text
              was first captured (documents, and the fetches rows of
              CAPTURE_OUTCOMES that saw its bytes again: an older archive
              capture of stored bytes counts), how many documents and domains
              carry it; first_source, n_captures
  clusters    one row per document in a near-duplicate cluster (near_duplicate
              tags): doc_id, cluster_id (the kept document's doc_id),
              cluster_size, n_domains, n_registered_domains, first_seen
              (earliest fetched_at in the cluster), is_representative (the
              kept document: the cluster's earliest, which carries no tag)
  consent     one row per document: what its consent tags (the built-in
              consent detector) and its latest crawl fetch (the host's
              robots.txt and tdmrep.json) say: tdm_reserved ('true', 'false'
              or 'unknown'; a reservation from any source wins),
              ai_agents_disallowed (null: never checked), directives (noai,
              noindex, ...), license, evidence (JSON: tag -> that tag's
              evidence, plus robots_txt and tdmrep_json), tdm_conflict
  versions    one row per version of a URL (a run of consecutive captures of one
              document; every capture, document rows and the fetches rows that
              saw stored bytes, at its own time, whatever the source or the
              order of import): url_key (the URL, scheme, default port, user
              info and fragment dropped, host lower-cased), doc_id, url,
              source, fetched_at (first capture), version (1, 2, ...),
              previous_doc_id, previous_fetched_at (the previous version's last
              capture), change ('first', 'changed', 'same_text'; 'undated' for
              a document with no dated capture, which has no place in time and
              no version), last_fetched_at, captures (how many), seen_before
              (the document was an earlier version too: A, B, A)
  reference_texts  every text of the live reference sets of known LLM
              output (``provenance reference add``): reference, ref_id, text,
              text_sha256, source_file, source_line, added_at
              (schemas/references.v1.json)

Views read only files named by the commit log (a snapshot taken at connect
time), so a run in progress is never half visible. A tag with a null score
states a fact and counts as 1.0 in the score columns. A category's score is
the maximum over its tags, except for NOISY_OR_CATEGORIES (llm):
1 - prod(1 - s) over its detectors, each detector's maximum.

SQL a user hands the command line (``query``, ``export --where``) is untrusted
text: it runs on a *sandboxed* connection (``connect(..., sandbox=True)``) that
reaches no file but the snapshot's Parquet files and the directories it is
explicitly given to write, and it must first pass ``read_only_query`` (one
SELECT) or ``boolean_predicate`` (one expression). Both checks use DuckDB's
own parser, never regular expressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from provenance import schemas
from provenance.store import Snapshot, Store

SCORE_CATEGORIES = ("llm", "poison", "duplicate", "quality", "provenance")
# Categories whose tags describe a document rather than suspect it: what a publisher permits (consent), its
# language, and the published quality heuristics (Gopher, C4, FineWeb drop a large share of real human text:
# a choice a team makes on purpose, with quality_score, not by default). Their tags never make a document
# "flagged" (the default export keeps NOT flagged), but they are in the lists and score columns of doc_flags.
NOT_FLAG_CATEGORIES = ("consent", "language", "quality")
# Single tags of a flagging category that describe too: when a text was first seen (plugins/provenance_tier.py)
# is a fact about its age, while provenance:integrity_mismatch (a crawl's pinned sha256 broken) is a suspicion.
# A minor edit since the earlier capture of a URL (plugins/content_drift.py) is the normal life of a page. An
# LLM detector's score under its threshold (plugins/llm_ngram.py) fills llm_score, to rank by, and flags nothing.
NOT_FLAG_TAGS = ("provenance:first_seen_before_cutoff", "provenance:first_seen_after_cutoff", "poison:minor_edit",
                 "llm:llm_estimate")
# Categories whose score combines its detectors as independent evidence, 1 - prod(1 - score_d) over the
# detectors d (each detector's own maximum), instead of the maximum: llm, whose detectors look at unrelated
# things (n-gram statistics, chat-model artefacts, a copy of known LLM text, a causal LM) and score calibrated
# probabilities, so two that agree make a document more likely LLM text than either alone (README, "How
# llm_score combines them"). A detector's score alone is unchanged; a tag with a null score still counts 1.0.
NOISY_OR_CATEGORIES = ("llm",)
# Views over the store's Parquet files: view name -> the kind of file it reads.
PARQUET_VIEWS = {"documents": "documents", "tags": "tags", "errors": "errors", "fetches": "fetches",
                 "reference_texts": "references"}
# Every view create_views makes, with one line on what it holds (the docstring above has the details): the list
# `provenance query --help` prints, so a new view is documented where it is added.
VIEWS = {
    "documents": "every stored document, with its provenance",
    "tags": "every live tag: detector, category, tag, score, evidence",
    "doc_flags": "one row per document: flagged, flags, n_tags, <category>_score",
    "errors": "detector faults recorded by tag runs",
    "fetches": "every crawl fetch attempt (new, changed, unchanged, refused, ...)",
    "runs": "one row per run: command, status, times, stats",
    "first_seen": "one row per distinct text: when and where it was first captured (documents and re-captures)",
    "clusters": "one row per document in a near-duplicate cluster",
    "consent": "one row per document: its TDM reservation, AI agents robots.txt refuses, directives, licence",
    "versions": "one row per version of a URL (a run of captures of one document), by capture time",
    "hosts": "one row per registered domain: first/last capture, URLs, servers, IPs, changes on its last day",
    "reference_texts": "every text of the live reference sets of known LLM output",
}


class UserSQLError(ValueError):
    """SQL from a user that is refused before it runs, or does not bind (a usage error)."""


def sql_string(value: str | Path) -> str:
    """A DuckDB string literal: ``'`` doubled, so any path or text is one literal and nothing more."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths, quoted."""
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def parquet_view(con: duckdb.DuckDBPyConnection, name: str, kind: str, paths: list[Path]) -> None:
    """The view ``name`` on ``con`` over the Parquet files ``paths`` of ``kind``, with every column of its current
    schema (files of an older version lack some; no file at all: an empty, typed view)."""
    if paths:
        source = f"read_parquet({sql_list(paths)}, union_by_name=true)"
        # Files of an older schema version lack the columns a later version added (all nullable): union_by_name
        # fills them with nulls where some file has them; when none has, add them here, typed.
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        empty = schemas.load(kind).arrow.empty_table()
        missing = [f for f in empty.schema if f.name not in present]
        if missing:
            con.register(f"_empty_{name}", empty)
            types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM _empty_{name}").fetchall()}
            added = ", ".join(f"NULL::{types[f.name]} AS {f.name}" for f in missing)
            source = f"(SELECT *, {added} FROM {source})"
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
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
    FROM tags WHERE category NOT IN ({noisy_or}) GROUP BY doc_id, category
    UNION ALL
    -- NOISY_OR_CATEGORIES: 1 - prod(1 - s) over the detectors, each detector's maximum (independent evidence
    -- adds up); only their rows take the second aggregation
    SELECT doc_id, category, 1.0 - product(1.0 - score) AS score
    FROM (SELECT doc_id, category, detector, max(coalesce(score, 1.0)) AS score
          FROM tags WHERE category IN ({noisy_or}) GROUP BY doc_id, category, detector)
    GROUP BY doc_id, category
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
           count(*) FILTER (WHERE {flagging}) AS n_flagging,
           -- sorted distinct list; list(DISTINCT .. ORDER BY ..) gives the same and is 4x slower at 1M documents
           list_sort(list_distinct(list(category || ':' || tag))) AS flags,
           list({'detector': detector, 'category': category, 'tag': tag, 'score': score}
                ORDER BY detector, tag) AS tag_list
    FROM tags GROUP BY doc_id
)
SELECT d.doc_id,
       coalesce(t.n_flagging, 0) > 0 AS flagged,
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


# Every capture of a text: each document row, and each fetches row that saw a stored document's bytes again
# (CAPTURE_OUTCOMES: a crawl's unchanged, 304 and confirmation fetches, an import's recaptured rows) at that
# document's text_sha256. So an archive capture of bytes the store already holds (a WARC of 2021 imported after
# this week's crawl: a recaptured row, no new document) moves first_seen_at back to 2021. n_documents and
# n_domains still count document rows; n_captures counts every capture (a document row and its crawl's fetch row
# at the same time are one), first_source says who made the earliest.
FIRST_SEEN_SQL = """
CREATE OR REPLACE VIEW first_seen AS
WITH docs AS (
    SELECT doc_id, text_sha256, url, domain, fetched_at, source FROM documents WHERE text_sha256 IS NOT NULL
),
captures AS (
    SELECT text_sha256, doc_id, url, fetched_at, source, 0 AS via_fetch, domain FROM docs
    UNION ALL
    SELECT d.text_sha256, f.doc_id, f.url, f.fetched_at, {fetch_source} AS source, 1 AS via_fetch, NULL AS domain
    FROM fetches f JOIN (SELECT DISTINCT ON (doc_id) doc_id, text_sha256 FROM docs) d USING (doc_id)
    WHERE f.fetched_at IS NOT NULL AND f.outcome IN ({outcomes})
)
SELECT text_sha256,
       min(fetched_at) AS first_seen_at,
       arg_min(doc_id, (coalesce(fetched_at, TIMESTAMPTZ '9999-12-31'), via_fetch, doc_id)) AS first_doc_id,
       arg_min(url, (coalesce(fetched_at, TIMESTAMPTZ '9999-12-31'), via_fetch, doc_id)) AS first_url,
       count(*) FILTER (WHERE via_fetch = 0) AS n_documents,
       count(DISTINCT domain) AS n_domains,
       arg_min(source, (coalesce(fetched_at, TIMESTAMPTZ '9999-12-31'), via_fetch, doc_id)) AS first_source,
       count(DISTINCT (doc_id, fetched_at)) AS n_captures
FROM captures GROUP BY text_sha256
"""


# The first Server header of a document row (as a browser's developer tools show it), over its headers column.
SERVER_SQL = "list_filter(headers, lambda h: lower(h.name) = 'server')[1].value"


def hosts_sql(documents: str, captures: str | None) -> str:
    """Per registered domain, what a reviewer or a corpus detector asks of a host, over ``documents`` (a relation
    of the documents schema) and ``captures`` (doc_id, fetched_at rows: ``captures_sql``): when we first and last
    captured any of its pages, how many URLs and documents, how many distinct ``Server`` headers and resolved
    IPs, and on its latest capture day how many of the URLs captured that day we had captured before and how
    many of those came back with other bytes. One home for the ``hosts`` view; a detector runs it over its
    ``CorpusState`` files (``read_parquet(...)``) instead of re-reading the corpus itself."""
    others = f"UNION SELECT doc_id, fetched_at FROM ({captures})" if captures else ""
    return f"""
WITH docs AS (
    SELECT DISTINCT ON (doc_id) doc_id, url, registered_domain, resolved_ip, {SERVER_SQL} AS server
    FROM {documents} ORDER BY doc_id, fetched_at NULLS LAST
),
caps AS (
    SELECT d.registered_domain, {url_key_sql('d.url')} AS url_key, c.doc_id, c.fetched_at, c.fetched_at::DATE AS day
    FROM (SELECT doc_id, fetched_at FROM {documents} WHERE fetched_at IS NOT NULL {others}) c JOIN docs d USING (doc_id)
),
last_day AS (SELECT registered_domain, max(day) AS last_day FROM caps GROUP BY registered_domain),
per_url AS (
    SELECT c.registered_domain, c.url_key,
           arg_max(c.doc_id, c.fetched_at) FILTER (WHERE c.day = l.last_day) AS doc_that_day,
           arg_max(c.doc_id, c.fetched_at) FILTER (WHERE c.day < l.last_day) AS doc_before
    FROM caps c JOIN last_day l USING (registered_domain) GROUP BY c.registered_domain, c.url_key
),
recent AS (
    SELECT registered_domain,
           count(*) FILTER (WHERE doc_that_day IS NOT NULL AND doc_before IS NOT NULL) AS recaptured_last_day,
           count(*) FILTER (WHERE doc_that_day IS NOT NULL AND doc_before IS NOT NULL
                            AND doc_that_day <> doc_before) AS changed_last_day
    FROM per_url GROUP BY registered_domain
),
totals AS (
    SELECT registered_domain, min(fetched_at) AS first_seen_at, max(fetched_at) AS last_seen_at,
           count(DISTINCT url_key) AS n_urls, count(DISTINCT doc_id) AS n_documents
    FROM caps GROUP BY registered_domain
),
infra AS (
    SELECT registered_domain, count(DISTINCT server) AS n_servers, count(DISTINCT resolved_ip) AS n_ips,
           arg_max(server, d.fetched_at) AS last_server, arg_max(resolved_ip, d.fetched_at) AS last_ip
    FROM docs JOIN (SELECT doc_id, min(fetched_at) AS fetched_at FROM caps GROUP BY doc_id) d USING (doc_id)
    GROUP BY registered_domain
)
SELECT t.registered_domain, t.first_seen_at, t.last_seen_at, t.n_urls, t.n_documents, l.last_day,
       r.recaptured_last_day, r.changed_last_day,
       round(r.changed_last_day / nullif(r.recaptured_last_day, 0), 4) AS changed_share_last_day,
       i.n_servers, i.n_ips, i.last_server, i.last_ip
FROM totals t JOIN last_day l USING (registered_domain) JOIN recent r USING (registered_domain)
     LEFT JOIN infra i USING (registered_domain)
"""


def host_days_sql(documents: str, captures: str | None) -> str:
    """Per registered domain and capture day, how its pages changed between that day and the captures before it,
    over ``documents`` (a relation of the documents schema) and ``captures`` (doc_id, fetched_at rows:
    ``captures_sql``); what ``CorpusState.host_days`` gives a corpus detector (docs/PLUGINS.md has the columns).

    Two counts of change. By URL, as the ``hosts`` view counts its last day: n_urls captured that day,
    n_urls_recaptured of them captured on an earlier day too, n_urls_changed of those whose last capture that
    day is another document than their last capture before (other bytes), changed_share the ratio. By version
    (``versions_sql``: a URL's new document, by capture time, whatever the order of import), what
    ``host_takeover`` groups: n_replaced versions that started that day and replaced an earlier version of their
    URL (a return to a document seen before at the URL, A B A, is not counted), n_replaced_text of them with
    another text_sha256 than the version before, n_server_changed with another ``Server`` header, n_ip_changed
    with another resolved IP (both known and different). Days on which no URL of the domain had a dated
    capture have no row; documents without a registered domain neither."""
    others = f"UNION SELECT doc_id, fetched_at FROM ({captures})" if captures else ""
    chain = versions_sql(f"(SELECT doc_id, url, fetched_at, text_sha256, registered_domain, resolved_ip, "
                         f"{SERVER_SQL} AS server FROM {documents})",
                         ("registered_domain", "server", "resolved_ip"), captures)
    return f"""
WITH docs AS (
    SELECT DISTINCT ON (doc_id) doc_id, url, registered_domain FROM {documents} ORDER BY doc_id, fetched_at NULLS LAST
),
caps AS (
    SELECT d.registered_domain, {url_key_sql('d.url')} AS url_key, c.doc_id, c.fetched_at, c.fetched_at::DATE AS day
    FROM (SELECT doc_id, fetched_at FROM {documents} WHERE fetched_at IS NOT NULL {others}) c JOIN docs d USING (doc_id)
    WHERE d.registered_domain IS NOT NULL
),
per_url_day AS (
    SELECT registered_domain, url_key, day, arg_max(doc_id, (fetched_at, doc_id)) AS doc_last
    FROM caps GROUP BY registered_domain, url_key, day
),
by_url AS (
    SELECT registered_domain, day, count(*) AS n_urls, count(doc_before) AS n_urls_recaptured,
           count(*) FILTER (WHERE doc_last <> doc_before) AS n_urls_changed
    FROM (SELECT *, lag(doc_last) OVER (PARTITION BY url_key ORDER BY day) AS doc_before FROM per_url_day)
    GROUP BY registered_domain, day
),
replaced AS (
    SELECT * FROM ({chain}) WHERE previous_doc_id IS NOT NULL AND NOT seen_before AND registered_domain IS NOT NULL
),
by_version AS (
    SELECT registered_domain, fetched_at::DATE AS day, count(*) AS n_replaced,
           count(*) FILTER (WHERE change = 'changed') AS n_replaced_text,
           count(*) FILTER (WHERE server IS DISTINCT FROM previous_server) AS n_server_changed,
           count(*) FILTER (WHERE resolved_ip <> previous_resolved_ip) AS n_ip_changed
    FROM replaced GROUP BY registered_domain, day
)
SELECT u.registered_domain, u.day, u.n_urls, u.n_urls_recaptured, u.n_urls_changed,
       round(u.n_urls_changed / nullif(u.n_urls_recaptured, 0), 4) AS changed_share,
       coalesce(v.n_replaced, 0) AS n_replaced, coalesce(v.n_replaced_text, 0) AS n_replaced_text,
       coalesce(v.n_server_changed, 0) AS n_server_changed, coalesce(v.n_ip_changed, 0) AS n_ip_changed
FROM by_url u LEFT JOIN by_version v USING (registered_domain, day)
"""


# The near_duplicate detector tags every cluster member but the kept one, naming it as cluster_id;
# the kept (representative) document joins its cluster through that id.
CLUSTERS_SQL = """
CREATE OR REPLACE VIEW clusters AS
WITH tagged AS (
    SELECT DISTINCT doc_id, json_extract_string(evidence, '$.cluster_id') AS cluster_id
    FROM tags WHERE detector = 'near_duplicate' AND tag = 'near_duplicate'
),
members AS (
    SELECT doc_id, cluster_id, false AS is_representative FROM tagged
    UNION
    SELECT DISTINCT cluster_id, cluster_id, true FROM tagged
),
per_cluster AS (
    SELECT m.cluster_id,
           count(*) AS cluster_size,
           count(DISTINCT d.domain) AS n_domains,
           count(DISTINCT d.registered_domain) AS n_registered_domains,
           min(d.fetched_at) AS first_seen
    FROM members m JOIN documents d USING (doc_id) GROUP BY m.cluster_id
)
SELECT m.doc_id, m.cluster_id, p.cluster_size, p.n_domains, p.n_registered_domains, p.first_seen,
       m.is_representative
FROM members m JOIN per_cluster p USING (cluster_id)
WHERE m.doc_id IN (SELECT doc_id FROM documents)
"""


# The consent detector's tags (plugins/consent.py): tdm_reserved / tdm_not_reserved / tdm_policy, license:<id>,
# malformed_signal, and one tag per robots directive (every other tag name); and, per document, its latest crawl
# fetch that recorded the host's policy files (robots.txt per AI agent, tdmrep.json: crawlers/sitepolicy.py).
# TDMRep from any source: a reservation (1) anywhere wins; values that disagree set tdm_conflict.
CONSENT_SQL = """
CREATE OR REPLACE VIEW consent AS
WITH c AS (
    SELECT DISTINCT doc_id, tag, score, evidence FROM tags WHERE detector = 'consent' AND category = 'consent'
),
per_doc AS (
    SELECT doc_id,
           CASE WHEN bool_or(tag = 'tdm_reserved') THEN 'true'
                WHEN bool_or(tag = 'tdm_not_reserved') THEN 'false' END AS tdm_tag,
           coalesce(bool_or(tag IN ('tdm_reserved', 'tdm_not_reserved')
                            AND json_extract(evidence, '$.conflict')::BOOLEAN), false) AS tdm_tag_conflict,
           list(DISTINCT tag ORDER BY tag) FILTER (WHERE NOT starts_with(tag, 'tdm_')
               AND NOT starts_with(tag, 'license:') AND tag <> 'malformed_signal') AS directives,
           -- an explicit rel=license (null score) before a bare Creative Commons link (0.5)
           first(substr(tag, 9) ORDER BY coalesce(score, 1.0) DESC, tag) FILTER (WHERE starts_with(tag, 'license:'))
               AS license,
           json_group_object(tag, json(evidence)) AS evidence
    FROM c GROUP BY doc_id
),
site AS (
    SELECT doc_id, arg_max(f, f.fetched_at) AS f
    FROM (SELECT doc_id, {'fetched_at': fetched_at, 'url': url, 'robots_status': robots_status,
                          'robots_sha256': robots_sha256, 'ai_agents_disallowed': ai_agents_disallowed,
                          'tdmrep_status': tdmrep_status, 'tdmrep_sha256': tdmrep_sha256,
                          'tdm_reservation': tdm_reservation, 'tdm_policy': tdm_policy,
                          'tdmrep_evidence': tdmrep_evidence} AS f
          FROM fetches WHERE doc_id IS NOT NULL AND (robots_sha256 IS NOT NULL OR tdmrep_status IS NOT NULL))
    GROUP BY doc_id
),
site_evidence AS (
    SELECT doc_id, f.tdm_reservation AS tdm_file, f.ai_agents_disallowed,
           json_object(
               'robots_txt', CASE WHEN f.robots_sha256 IS NOT NULL THEN json_object(
                   'status', f.robots_status, 'sha256', f.robots_sha256, 'disallowed', f.ai_agents_disallowed,
                   'url', f.url, 'fetched_at', f.fetched_at) END,
               'tdmrep_json', CASE WHEN f.tdmrep_status IS NOT NULL THEN json_merge_patch(json_object(
                   'status', f.tdmrep_status, 'sha256', f.tdmrep_sha256, 'tdm-reservation', f.tdm_reservation,
                   'tdm-policy', f.tdm_policy, 'url', f.url, 'fetched_at', f.fetched_at),
                   coalesce(f.tdmrep_evidence, '{}')) END) AS evidence
    FROM site
)
SELECT d.doc_id, d.url,
       CASE WHEN p.tdm_tag = 'true' OR s.tdm_file = 1 THEN 'true'
            WHEN p.tdm_tag = 'false' OR s.tdm_file = 0 THEN 'false' ELSE 'unknown' END AS tdm_reserved,
       s.ai_agents_disallowed,
       coalesce(p.directives, []::VARCHAR[]) AS directives,
       p.license,
       CASE WHEN s.evidence IS NULL THEN p.evidence
            -- null members (a file not consulted) drop out of the merge
            ELSE json_merge_patch(coalesce(p.evidence, '{}'), s.evidence) END AS evidence,
       coalesce(p.tdm_tag_conflict, false)
           OR (p.tdm_tag IS NOT NULL AND s.tdm_file IS NOT NULL AND (p.tdm_tag = 'true') <> (s.tdm_file = 1))
           AS tdm_conflict
FROM (SELECT doc_id, url FROM documents) d
LEFT JOIN per_doc p USING (doc_id)
LEFT JOIN site_evidence s USING (doc_id)
"""


# The key captures of one page share: scheme (http and https), default port, user info and fragment dropped,
# host lower-cased, an empty path written '/'. Path and query stay as they are (case and order matter there).
_URL_PARTS = "regexp_extract({url}, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#]*)([^#]*)', ['host', 'rest'])"
URL_KEY_SQL = ("CASE WHEN regexp_matches({url}, '^[A-Za-z][A-Za-z0-9+.-]*://') THEN "
               "regexp_replace(lower(" + _URL_PARTS + ".host), ':(80|443)$', '') || "
               "CASE WHEN starts_with(" + _URL_PARTS + ".rest, '/') THEN " + _URL_PARTS + ".rest "
               "ELSE '/' || " + _URL_PARTS + ".rest END ELSE {url} END")


def url_key_sql(column: str = "url") -> str:
    """The SQL expression of a URL's version key (the ``versions`` view's url_key) over ``column``."""
    return URL_KEY_SQL.replace("{url}", column)


# Fetch outcomes that saw a stored document's bytes at fetch time: a crawl's stored or confirmed fetches (a 304,
# an unchanged page, a page back to an older body) and an import's re-capture of bytes already stored. Each is a
# capture of its doc_id at its fetched_at as much as the document row is (the versions view, the runner's
# previous_* join, a crawl's latest known version in crawlers/session.py, transient_edit).
CAPTURE_OUTCOMES = ("new", "changed", "unchanged", "not_modified", "integrity_mismatch", "recaptured")


# Who made a fetches row: its ``source`` (schema v3: crawl, or the import's source of a recaptured row); in older
# files a crawl made every row but ``recaptured`` ones, whose source is unknown (null: no trusted-source rule, as
# provenance_tier's, counts them).
FETCH_SOURCE_SQL = "coalesce(source, CASE WHEN outcome <> 'recaptured' THEN 'crawl' END)"


def captures_sql(fetches: str) -> str:
    """(doc_id, fetched_at) of the rows of ``fetches`` (a relation of the fetches schema) that captured a document."""
    outcomes = ", ".join(sql_string(o) for o in CAPTURE_OUTCOMES)
    return (f"SELECT doc_id, fetched_at FROM {fetches} "
            f"WHERE doc_id IS NOT NULL AND fetched_at IS NOT NULL AND outcome IN ({outcomes})")


def versions_sql(relation: str, carry: tuple[str, ...] = (), captures: str | None = None) -> str:
    """The versions of every URL in ``relation`` (columns doc_id, url, fetched_at, text_sha256, and ``carry``).

    One home for the order of captures, read by the ``versions`` view, the tag runner's previous_* join and
    host_takeover. A capture is a document row or a row of ``captures`` (a relation of doc_id, fetched_at:
    ``captures_sql``), each at its own time, so the order does not depend on which capture of some bytes was
    imported first. Per url_key, captures by fetched_at then doc_id; a version is a run of consecutive captures
    of one document (A, A, B, A: three versions), with its first and last capture time and how many captures
    it spans; ``seen_before`` marks a version whose document was an earlier version too (the second A). Each
    ``carry`` column c (from the document's earliest row) comes out as c and as previous_c (the previous
    version's c). Documents with no dated capture are outside the chain: change 'undated', no version, no
    previous.
    """
    extra = "".join(f", {c}" for c in carry)
    extra_o = "".join(f", o.{c}" for c in carry)
    lagged = "".join(f", lag(o.{c}) OVER w AS previous_{c}" for c in carry)
    nulls = "".join(f", {c}, NULL AS previous_{c}" for c in carry)
    others = f"UNION SELECT doc_id, fetched_at FROM ({captures})" if captures else ""
    return f"""
WITH docs AS (SELECT doc_id, url, fetched_at, text_sha256{extra} FROM {relation}),
once AS (
    SELECT DISTINCT ON (doc_id) doc_id, url, fetched_at, text_sha256{extra}, {url_key_sql('url')} AS url_key
    FROM docs ORDER BY doc_id, fetched_at NULLS LAST
),
seen AS (
    SELECT s.doc_id, s.fetched_at, o.url_key
    FROM (SELECT doc_id, fetched_at FROM docs WHERE fetched_at IS NOT NULL {others}) s JOIN once o USING (doc_id)
),
starts AS (
    SELECT *, CASE WHEN doc_id = lag(doc_id) OVER w THEN 0 ELSE 1 END AS starts
    FROM seen WINDOW w AS (PARTITION BY url_key ORDER BY fetched_at, doc_id)
),
runs AS (
    SELECT url_key, version, any_value(doc_id) AS doc_id, min(fetched_at) AS fetched_at,
           max(fetched_at) AS last_fetched_at, count(*) AS captures
    FROM (SELECT *, sum(starts) OVER (PARTITION BY url_key ORDER BY fetched_at, doc_id
                                      ROWS UNBOUNDED PRECEDING) AS version FROM starts)
    GROUP BY url_key, version
),
dated AS (
    SELECT r.url_key, r.doc_id, o.url, r.fetched_at, r.version::BIGINT AS version,
           lag(r.doc_id) OVER w AS previous_doc_id, lag(r.last_fetched_at) OVER w AS previous_fetched_at,
           CASE WHEN lag(r.doc_id) OVER w IS NULL THEN 'first'
                WHEN o.text_sha256 IS NOT DISTINCT FROM lag(o.text_sha256) OVER w THEN 'same_text'
                ELSE 'changed' END AS change,
           r.last_fetched_at, r.captures, r.version > min(r.version) OVER (PARTITION BY r.doc_id) AS seen_before
           {extra_o}{lagged}
    FROM runs r JOIN once o USING (doc_id)
    WINDOW w AS (PARTITION BY r.url_key ORDER BY r.version)
)
SELECT * FROM dated
UNION ALL BY NAME
SELECT url_key, doc_id, url, fetched_at, NULL::BIGINT AS version, NULL::VARCHAR AS previous_doc_id,
       NULL::TIMESTAMPTZ AS previous_fetched_at, 'undated' AS change, NULL::TIMESTAMPTZ AS last_fetched_at,
       0::BIGINT AS captures, false AS seen_before{nulls}
FROM once WHERE doc_id NOT IN (SELECT doc_id FROM seen)
"""


def flagging_tag_sql() -> str:
    """SQL over a tag row's ``category`` and ``tag``: true when the tag flags its document (``doc_flags.flagged``
    is true for a document with any such tag)."""
    categories = ", ".join(sql_string(c) for c in NOT_FLAG_CATEGORIES)
    tags = ", ".join(sql_string(t) for t in NOT_FLAG_TAGS)
    return f"(category NOT IN ({categories}) AND category || ':' || tag NOT IN ({tags}))"


def create_views(con: duckdb.DuckDBPyConnection, store: Store, snapshot: Snapshot | None = None) -> Snapshot:
    snapshot = snapshot or store.snapshot()
    for view, kind in PARQUET_VIEWS.items():
        parquet_view(con, view, kind, snapshot.paths(kind))
    con.register("_runs", _runs_table(store))
    con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
    con.execute(FIRST_SEEN_SQL.format(fetch_source=FETCH_SOURCE_SQL,
                                      outcomes=", ".join(sql_string(o) for o in CAPTURE_OUTCOMES)))
    con.execute(CLUSTERS_SQL)
    con.execute(f"CREATE OR REPLACE VIEW hosts AS {hosts_sql('documents', captures_sql('fetches'))}")
    con.execute(CONSENT_SQL)
    con.execute(f"CREATE OR REPLACE VIEW versions AS SELECT url_key, doc_id, url, source, fetched_at, version, "
                f"previous_doc_id, previous_fetched_at, change, last_fetched_at, captures, seen_before "
                f"FROM ({versions_sql('documents', ('source',), captures_sql('fetches'))})")
    score_columns = ",\n           ".join(
        f"max(score) FILTER (WHERE category = '{c}') AS {c}_score" for c in SCORE_CATEGORIES)
    score_select = ", ".join(f"c.{c}_score" for c in SCORE_CATEGORIES)
    con.execute(DOC_FLAGS_SQL.replace("{score_columns}", score_columns)
                .replace("{noisy_or}", ", ".join(f"'{c}'" for c in NOISY_OR_CATEGORIES))
                .replace("{score_select}", score_select).replace("{flagging}", flagging_tag_sql()))
    return snapshot


def connect_parquet_views(store: Store, kinds: tuple[str, ...], snapshot: Snapshot | None = None
                          ) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with only the Parquet views ``kinds`` (e.g. documents, fetches), unlocked.

    For the store's own reads that need none of the derived views: a crawl's start reads what the
    store knows this way, without the runs table and the views connect() builds (0.3-0.5 s, a
    pandas import among them, measured on a one-page crawl).
    """
    snapshot = snapshot or store.snapshot()
    con = duckdb.connect()
    for kind in kinds:
        parquet_view(con, kind, kind, snapshot.paths(kind))
    return con


def restrict_file_access(con: duckdb.DuckDBPyConnection, readable: list[Path], writable_dirs: list[Path] = ()) -> None:
    """Lock ``con`` so that no SQL run on it reaches a file but ``readable`` and what is under ``writable_dirs``.

    DuckDB's own switches: external access off (no other files, no ATTACH of a
    file, no INSTALL/LOAD of extensions from disk), the exceptions listed, then
    the configuration locked so that no statement can undo any of it. Note that
    DuckDB lets a listed file be written too: callers still allow only reads
    (``read_only_query``, ``boolean_predicate``) on what users hand them.
    """
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET allowed_paths = ?", [[str(p) for p in readable]])
    # A trailing '/' so that /out allows /out/x but not the sibling /out-other/x.
    con.execute("SET allowed_directories = ?", [[str(d).rstrip("/") + "/" for d in writable_dirs]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def connect(store: str | Path | Store, database: str = ":memory:", *, sandbox: bool = False,
            snapshot: Snapshot | None = None, writable_dirs: list[Path] = (),
            spill_dir: Path | None = None, memory_limit_mb: int | None = None,
            settings: dict | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the store's views; the store must exist.

    ``sandbox=True`` is for SQL someone else wrote (the CLI always uses it): the
    connection reads only the snapshot's Parquet files and writes only under
    ``writable_dirs``. ``memory_limit_mb`` bounds DuckDB's memory; what does not fit spills to ``spill_dir``.
    ``settings`` are more DuckDB settings (name -> value), applied before the sandbox locks the configuration.
    The default stays unlocked for analysts in Python, who
    could open any file from Python anyway and may want to read their own
    CSVs or write results next to the store.
    """
    store = store if isinstance(store, Store) else Store.open(store)
    snapshot = snapshot or store.snapshot()
    con = duckdb.connect(database)
    if memory_limit_mb:  # beyond it DuckDB spills sorts and joins to spill_dir (set before the lock)
        con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
    if spill_dir is not None:
        con.execute("SET temp_directory = ?", [str(spill_dir)])
    for name, value in (settings or {}).items():
        con.execute(f"SET {name} = ?", [value])
    if sandbox:
        readable = [p for kind in PARQUET_VIEWS.values() for p in snapshot.paths(kind)]
        restrict_file_access(con, readable, writable_dirs)
    create_views(con, store, snapshot)
    return con


# ----- checks on SQL users hand us ------------------------------------------------------------
def read_only_query(sql: str) -> str:
    """``sql`` if it is exactly one SELECT statement (WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE included).

    A sandboxed connection may still write the store's own files (DuckDB does not
    tell reading from writing for an allowed path), so COPY, EXPORT, CREATE and
    the like are refused here, by the statement type DuckDB's parser reports.
    """
    if not sql.strip():
        raise UserSQLError("the query is empty: give one SELECT statement, e.g. \"SELECT count(*) FROM documents\"")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UserSQLError(f"SQL error: {first_line(exc)}") from None
    if not statements:
        raise UserSQLError("the query holds no statement (only comments?): give one SELECT statement")
    if len(statements) > 1:
        raise UserSQLError(f"the query holds {len(statements)} statements: give exactly one SELECT statement")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise UserSQLError(f"only SELECT statements are allowed (this one is {kind.name}): provenance query "
                           f"reads the store's views and never writes")
    return sql


def boolean_predicate(con: duckdb.DuckDBPyConnection, predicate: str, relation: str, flag: str = "--where",
                      over: str = "documents and doc_flags") -> str:
    """``predicate`` if it is exactly one boolean expression over ``relation`` (a FROM clause); else UserSQLError.

    DuckDB parses ``SELECT * FROM _r WHERE <p>`` and ``... WHERE (<p>)``: both must
    be one SELECT shaped exactly like ``SELECT * FROM _r WHERE true`` (no second
    statement, no ORDER BY / GROUP BY / LIMIT / UNION after the expression) with
    the same WHERE tree. Text that only parses inside the parentheses
    (``x) OR (y``), or only outside them (``x --``), is refused. Then the
    expression is bound against ``relation`` (``over`` names it for the user), in a
    WHERE clause (so an aggregate is refused), and must be BOOLEAN.
    """
    hint = f"give one boolean SQL expression over the columns of {over}, e.g. \"NOT flagged\""
    if not predicate.strip():
        raise UserSQLError(f"{flag} is empty: {hint}")
    (template, _true), _ = _select_star_where(con, "true")
    wheres = []
    for text in (predicate, f"({predicate})"):
        parsed, error = _select_star_where(con, text)
        if error or parsed[0] != template:
            reason = error or "it goes on past one expression"
            raise UserSQLError(f"{flag} {predicate!r} is not one SQL expression ({reason}): {hint}")
        wheres.append(parsed[1])
    if wheres[0] != wheres[1]:
        raise UserSQLError(f"{flag} {predicate!r} is not one SQL expression (parentheses do not match): {hint}")
    try:
        # DESCRIBE binds without running: (column_name, column_type, ...) of the one column.
        kind = con.execute(f"DESCRIBE SELECT ({predicate}) AS keep FROM {relation} WHERE ({predicate})").fetchone()[1]
    except duckdb.Error as exc:
        raise UserSQLError(f"{flag} {predicate!r} is not a valid predicate over {over}: {first_line(exc)}") from None
    if kind != "BOOLEAN":
        raise UserSQLError(f"{flag} {predicate!r} is of type {kind}, not BOOLEAN: {hint}")
    return predicate


def _select_star_where(con, where_text: str) -> tuple[tuple[dict, dict] | None, str | None]:
    """DuckDB's parse tree of ``SELECT * FROM _r WHERE <where_text>``: (tree without WHERE, WHERE), or an error."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"SELECT * FROM _r WHERE {where_text}"]
                                  ).fetchone()[0])
    if tree.get("error"):
        return None, tree.get("error_message", "not a SELECT")
    if len(tree["statements"]) != 1:
        return None, "more than one statement"
    statement = _without_locations(tree["statements"][0])
    where = statement["node"].pop("where_clause", None)
    return (statement, where), None


def _without_locations(node):
    """A parse tree without character offsets, so trees of differently spaced text compare equal."""
    if isinstance(node, dict):
        return {k: _without_locations(v) for k, v in node.items() if not k.startswith("query_location")}
    if isinstance(node, list):
        return [_without_locations(v) for v in node]
    return node


def first_line(exc: BaseException) -> str:
    """The first line of an error's message: DuckDB adds context lines that do not fit a one-line error."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
