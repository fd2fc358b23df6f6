"""Provenance tier: was this exact text seen before a cut-off date (default 2022-11-30, ChatGPT's release)?

Corpus-level and state-keeping: ``observe`` keeps one narrow row per document (doc_id, text_sha256, url,
source, fetch time), ``finish`` groups every *capture* by ``text_sha256`` and takes the earliest capture time
among captures by *trusted sources*: our own crawls and archive captures (``crawl``, ``warc``, ``wet`` by
default; a WARC's time is its capture date). A capture is a document (its state row), or a ``fetches`` row
that saw a stored document's bytes again (``reads_fetches``; the outcomes of ``CAPTURE_OUTCOMES``: a crawl's
unchanged, 304 and confirmation fetches, and an import's ``recaptured`` rows, e.g. a WARC of 2021 imported
after this week's crawl of the same bytes, which stores no document), counted at that document's text and
with the fetch row's own time, URL and source (``FETCH_SOURCE_SQL``: a recaptured row written before fetches
schema v3 has no source and is trusted by no rule). Never a date the page claims about itself, and never a
JSONL or Parquet import's ``fetched_at``, which is whatever the file says. Every document whose text a trusted
source saw gets one tag (category ``provenance``, score 0: a fact, not a suspicion; these two tags
never make a document flagged, see ``NOT_FLAG_TAGS`` in provenance/sql.py):

  first_seen_before_cutoff   the text was first seen before ``cutoff``
  first_seen_after_cutoff    it was first seen at or after ``cutoff``

A document whose text no trusted source ever fetched gets no tag (its age is unknown), so the predicate
``list_contains(flags, 'provenance:first_seen_before_cutoff')`` selects only text of proven age. A copy
imported today of a text crawled in 2021 is pre-cut-off too: the evidence names that first copy.
Evidence: ``{"first_seen_at", "first_doc_id", "first_url", "first_source", "cutoff", "n_seen"}`` (``first_doc_id``:
the document whose bytes the first capture saw; ``n_seen``: trusted captures, a document and its crawl's own
fetch row at the same time counted once). Version 2 counts re-captures (version 1: documents only).

Why a detector and not only a view: its tags reach ``doc_flags.flags``, which ``export --where`` can read
(one predicate, no join), and the cut-off and trusted sources are options, so the export manifest records
which rule chose the tier (config hash). Changing them re-runs only ``finish``: the state rows do not
depend on any option. New fetches rows re-run it too (a re-capture adds no document).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.sql import CAPTURE_OUTCOMES, FETCH_SOURCE_SQL, sql_list, sql_string

KNOWN_SOURCES = ("crawl", "warc", "wet", "jsonl", "parquet")
PART_ROWS = 100_000
# DuckDB's memory in finish: beyond it the grouping spills to the scratch directory. Unbounded (80% of the
# machine) the worker peaked at 0.7 GB at 1M documents, growing with the corpus toward the worker's limit
DUCKDB_MEMORY_MB = 512

# Every capture of a text: each document (the state rows), and each fetches row that saw a stored document's bytes
# again (``fetches``: doc_id, url, fetched_at, source; sql.captures of CAPTURE_OUTCOMES), at that document's
# text_sha256. A crawl's document row and its own fetch row at the same time are one capture.
TIER_SQL = """
WITH s AS (SELECT * FROM read_parquet({files})),
docs AS (SELECT DISTINCT ON (doc_id) doc_id, text_sha256 FROM s),
captures AS (
    SELECT text_sha256, doc_id, url, source, fetched_us, fetched_iso, 0 AS via_fetch FROM s
    WHERE fetched_us IS NOT NULL
    UNION ALL
    SELECT d.text_sha256, f.doc_id, f.url, f.source, epoch_us(f.fetched_at) AS fetched_us,
           strftime(timezone('UTC', f.fetched_at), '%Y-%m-%dT%H:%M:%SZ') AS fetched_iso, 1 AS via_fetch
    FROM ({fetches}) f JOIN docs d USING (doc_id)
),
trusted AS (
    SELECT text_sha256,
           min(fetched_us) AS first_us,
           arg_min(fetched_iso, fetched_us) AS first_seen_at,
           arg_min(doc_id, (fetched_us, via_fetch, doc_id)) AS first_doc_id,
           arg_min(url, (fetched_us, via_fetch, doc_id)) AS first_url,
           arg_min(source, (fetched_us, via_fetch, doc_id)) AS first_source,
           count(DISTINCT (doc_id, fetched_us)) AS n_seen
    FROM captures WHERE source IN ({sources}) GROUP BY text_sha256
)
SELECT s.doc_id,
       CASE WHEN t.first_us < {cutoff_us} THEN 'first_seen_before_cutoff' ELSE 'first_seen_after_cutoff' END AS tag,
       to_json({{'first_seen_at': t.first_seen_at, 'first_doc_id': t.first_doc_id, 'first_url': t.first_url,
                 'first_source': t.first_source, 'cutoff': {cutoff_iso}, 'n_seen': t.n_seen}})::VARCHAR AS evidence
FROM (SELECT DISTINCT ON (doc_id) doc_id, text_sha256 FROM s) s JOIN trusted t USING (text_sha256)
"""
NO_FETCHES = ("SELECT NULL::VARCHAR AS doc_id, NULL::VARCHAR AS url, NULL::TIMESTAMPTZ AS fetched_at, "
              "NULL::VARCHAR AS source LIMIT 0")


def fetch_captures_sql(con, files: list[str]) -> str:
    """(doc_id, url, fetched_at, source) of the capture rows of the fetches ``files`` (any schema version)."""
    if not files:
        return NO_FETCHES
    relation = f"read_parquet({sql_list(files)}, union_by_name = true)"
    columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()}
    if "source" not in columns:  # only files of fetches schema version 1 or 2
        relation = f"(SELECT *, NULL::VARCHAR AS source FROM {relation})"
    outcomes = ", ".join(sql_string(o) for o in CAPTURE_OUTCOMES)
    return (f"SELECT doc_id, url, fetched_at, {FETCH_SOURCE_SQL} AS source FROM {relation} "
            f"WHERE doc_id IS NOT NULL AND fetched_at IS NOT NULL AND outcome IN ({outcomes})")


def parse_cutoff(value: str) -> datetime:
    """The cut-off as an aware UTC datetime; a date alone means its midnight UTC."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class ProvenanceTier(provenance.CorpusDetector):
    """When our crawls or an archive first saw each document's exact text: before or after a cut-off."""

    name = "provenance_tier"
    version = "2"  # 2: every capture counts, a re-capture's fetch row too (its time, URL and source)
    category = "provenance"
    needs = ("text_sha256", "fetched_at", "source", "url")
    options = {"cutoff": "2022-11-30", "sources": ["crawl", "warc", "wet"]}
    keeps_state = True
    reads_fetches = True  # re-captures of stored bytes (an older WARC imported later) are fetches rows only
    state_version = "1"
    state_options = ()  # the state rows are the same whatever the cut-off or the trusted sources

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        try:
            parse_cutoff(merged["cutoff"])
        except ValueError:
            raise DetectorError(f"detector provenance_tier: cutoff {merged['cutoff']!r} is not an ISO 8601 date "
                                "or time, e.g. \"2022-11-30\"") from None
        sources = merged["sources"]
        if not sources or any(s not in KNOWN_SOURCES for s in sources):
            raise DetectorError(f"detector provenance_tier: sources must be a non-empty list of "
                                f"{', '.join(KNOWN_SOURCES)}; got {sources!r}")
        return merged

    def observe(self, batch: pa.RecordBatch):
        keep = pc.is_valid(batch.column("text_sha256"))
        rows = pa.Table.from_batches([batch.select(["doc_id", "text_sha256", "url", "source"])]).filter(keep)
        fetched = batch.column("fetched_at").filter(keep).cast(pa.timestamp("us", "UTC"))
        rows = rows.append_column("fetched_us", fetched.cast(pa.int64()))
        # Whole seconds: Arrow's %S adds the microseconds.
        iso = pc.utf8_slice_codeunits(pc.strftime(fetched, "%Y-%m-%dT%H:%M:%S"), 0, 19)
        rows = rows.append_column("fetched_iso", pc.binary_join_element_wise(iso, "Z", ""))
        return rows if rows.num_rows else None

    def finish(self, corpus):
        if not corpus.state_files:
            return
        cutoff = parse_cutoff(self.options["cutoff"])
        cutoff_us = int(cutoff.timestamp()) * 1_000_000 + cutoff.microsecond
        with corpus.connect(DUCKDB_MEMORY_MB) as con:
            sql = TIER_SQL.format(files=sql_list(corpus.state_files),
                                  fetches=fetch_captures_sql(con, corpus.fetch_files),
                                  sources=", ".join(sql_string(s) for s in self.options["sources"]),
                                  cutoff_us=cutoff_us,
                                  cutoff_iso=sql_string(cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")))
            reader = con.sql(sql).to_arrow_reader(PART_ROWS)
            for part in reader:
                if part.num_rows:
                    # score 0: an age is no suspicion, so provenance_score stays what integrity
                    # mismatches and other provenance flags make it
                    yield self.tags(part.column("doc_id"), part.column("tag"), score=0.0,
                                    evidence=part.column("evidence"))


@provenance.hookimpl
def register_detectors(register):
    register(ProvenanceTier)
