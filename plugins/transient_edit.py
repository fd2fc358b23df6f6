"""Transient edits: a page whose text changed and then changed back (frontrunning).

Frontrunning (Carlini et al., arXiv:2302.10149; ../shared/docs/threat-model.md, section 3) times an edit just
before a predictable snapshot and reverts it soon after: the snapshot keeps the poison, the live page looks
clean again. A second capture shortly after (a confirmation fetch, a later re-crawl, an archive's capture)
shows the revert; a crawl with ``[crawl] confirm_after_s`` makes that confirmation fetch itself, after a
random delay (crawlers/session.py). This detector tags the captures of a URL whose text differs from the
capture before them *and* the capture after them, while those two agree: an edit that was undone.

"Agree" and "differ" are judged on the text after the masking ``content_drift`` applies (dates, times,
numbers and counters, month and day names: ``masked_words``), so a page that only shows a new date is
unchanged, and a revert that re-renders the date still agrees with the original.

Corpus-level and state-keeping: ``observe`` keeps per document its URL, fetch time and the sha256 of its
masked words. ``finish`` lays out every capture of each URL by fetch time: each document at its capture time
(as the ``versions`` view orders them, by the same URL key) and every other capture of the same bytes the
store recorded (``fetches`` rows with a doc_id: a crawl's unchanged, 304 and changed fetches, and an import's
``recaptured`` rows; ``reads_fetches``), since a revert often brings back the very bytes of an earlier
document, which is then no new document. Consecutive captures with the same masked text form one run; a
run whose neighbours on both sides are runs of one and the same masked text is transient, and each document
in it is tagged ``transient_edit`` (category ``poison``): score 0.9 when the revert was seen within
``quick_hours`` (72) of the edit's first capture, else 0.6 (a longer-lived edit that was undone).

Evidence: ``previous_doc_id``, ``next_doc_id`` (the capture that shows the revert), the three capture times
``previous_fetched_at``, ``fetched_at``, ``next_fetched_at``, ``reverted_within_s`` (the edit's first capture to
the revert's), ``captures`` (how often the edit was captured), and the transient diff against the version
before: ``edit`` (``content_drift``'s class: replaced, major_edit, minor_edit), ``similarity``, ``count`` and up
to five ``spans`` (``text``: what the edit added, ``previous_text``: what it took away).
"""

from __future__ import annotations


import pyarrow as pa

import provenance
from provenance.detectors import DetectorError
from provenance.plugins.content_drift import compare, masked_key
from provenance.sql import captures_sql, sql_list, url_key_sql

# DuckDB's memory in finish, beyond which it spills to the scratch directory (unbounded: 80 percent of the
# machine; the worker peaked at 1.0 GB at 1M documents, growing with the corpus)
DUCKDB_MEMORY_MB = 512

TRANSIENT_SQL = """
WITH s AS (SELECT DISTINCT ON (doc_id) * FROM read_parquet({state}) ORDER BY doc_id, fetched_at NULLS LAST),
f AS ({fetches}),
captures AS (
    SELECT doc_id, url, fetched_at, masked FROM s WHERE fetched_at IS NOT NULL
    UNION ALL
    SELECT f.doc_id, s.url, f.fetched_at, s.masked FROM f JOIN s USING (doc_id)
),
keyed AS (SELECT DISTINCT {url_key} AS url_key, doc_id, fetched_at, masked FROM captures),
marked AS (
    SELECT *, CASE WHEN masked IS NOT DISTINCT FROM lag(masked) OVER w THEN 0 ELSE 1 END AS starts
    FROM keyed WINDOW w AS (PARTITION BY url_key ORDER BY fetched_at, doc_id)
),
runs AS (
    SELECT *, sum(starts) OVER (PARTITION BY url_key ORDER BY fetched_at, doc_id ROWS UNBOUNDED PRECEDING) AS run
    FROM marked
),
per_run AS (
    SELECT url_key, run, any_value(masked) AS masked, count(*) AS captures,
           min(fetched_at) AS first_at, max(fetched_at) AS last_at,
           arg_min(doc_id, fetched_at) AS first_doc, arg_max(doc_id, fetched_at) AS last_doc
    FROM runs GROUP BY url_key, run
),
chain AS (
    SELECT *, lag(masked) OVER w AS previous_masked, lag(last_doc) OVER w AS previous_doc_id,
           lag(last_at) OVER w AS previous_fetched_at, lead(masked) OVER w AS next_masked,
           lead(first_doc) OVER w AS next_doc_id, lead(first_at) OVER w AS next_fetched_at
    FROM per_run WINDOW w AS (PARTITION BY url_key ORDER BY run)
)
SELECT DISTINCT ON (r.doc_id) r.doc_id, r.fetched_at, c.previous_doc_id, c.previous_fetched_at, c.next_doc_id,
       c.next_fetched_at, c.first_at, c.captures
FROM runs r JOIN chain c USING (url_key, run)
WHERE c.masked IS NOT NULL AND c.previous_masked = c.next_masked
ORDER BY r.doc_id, r.fetched_at
"""


class TransientEdit(provenance.CorpusDetector):
    """Captures of a URL that differ from the captures before and after them, which agree: an edit undone."""

    name = "transient_edit"
    version = "1"
    category = "poison"
    needs = ("url", "fetched_at", "text")
    options = {"quick_hours": 72.0, "shingle": 3, "replaced_below": 0.3, "major_below": 0.8}
    keeps_state = True
    reads_fetches = True
    state_version = "1"
    state_options = ()  # the masked key does not depend on the options

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["quick_hours"] <= 0:
            raise DetectorError(f"detector transient_edit: quick_hours must be > 0, got {merged['quick_hours']}")
        if merged["shingle"] < 1 or not 0.0 <= merged["replaced_below"] <= merged["major_below"] <= 1.0:
            raise DetectorError("detector transient_edit: need shingle >= 1 and 0 <= replaced_below <= major_below"
                                " <= 1 (the edit classes of content_drift)")
        return merged

    def observe(self, batch: pa.RecordBatch):
        return pa.table({"doc_id": batch.column("doc_id"), "url": batch.column("url"),
                         "fetched_at": batch.column("fetched_at"),
                         "masked": pa.array([masked_key(t) for t in batch.column("text").to_pylist()], pa.string())})

    def finish(self, corpus):
        if not corpus.state_files:
            return
        fetches = (captures_sql(f"read_parquet({sql_list(corpus.fetch_files)}, union_by_name = true)")
                   if corpus.fetch_files else "SELECT NULL::VARCHAR AS doc_id, NULL::TIMESTAMPTZ AS fetched_at LIMIT 0")
        sql = TRANSIENT_SQL.format(state=sql_list(corpus.state_files), fetches=fetches, url_key=url_key_sql("url"))
        with corpus.connect(DUCKDB_MEMORY_MB) as con:
            rows = con.sql(sql).to_arrow_table().to_pylist()
            if not rows:
                return
            # The texts of the tagged documents and of the versions before them, for the diff: few rows.
            wanted = pa.table({"doc_id": sorted({r["doc_id"] for r in rows} | {r["previous_doc_id"] for r in rows})})
            con.register("wanted", wanted)
            texts = dict(con.sql(
                f"SELECT DISTINCT ON (doc_id) doc_id, text FROM read_parquet({sql_list(corpus.doc_files)}, "
                f"union_by_name = true) WHERE doc_id IN (SELECT doc_id FROM wanted)").fetchall())
        opts = self.options
        scores, evidence = [], []
        for r in rows:
            diff = compare(texts.get(r["doc_id"]) or "", texts.get(r["previous_doc_id"]) or "", opts["shingle"],
                           opts["replaced_below"], opts["major_below"]) or {}
            within = (r["next_fetched_at"] - r["first_at"]).total_seconds()
            scores.append(0.9 if within <= opts["quick_hours"] * 3600 else 0.6)
            evidence.append({"previous_doc_id": r["previous_doc_id"], "next_doc_id": r["next_doc_id"],
                             "previous_fetched_at": r["previous_fetched_at"].isoformat(),
                             "fetched_at": r["fetched_at"].isoformat(),
                             "next_fetched_at": r["next_fetched_at"].isoformat(),
                             "reverted_within_s": round(within), "captures": r["captures"],
                             "edit": diff.get("tag"), "similarity": diff.get("similarity"),
                             "count": diff.get("count"), "spans": diff.get("spans", [])})
        yield self.tags([r["doc_id"] for r in rows], "transient_edit", score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(TransientEdit)
