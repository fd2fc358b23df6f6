"""Host takeover: most pages of a registered domain replaced at once, on a new server or as a parking page.

Split-view poisoning at host scale (../shared/docs/threat-model.md, section 2): an expired domain is
re-registered and serves new content under URLs a dataset already vetted. One page changing is an edit
(``content_drift`` judges it); a host whose re-captured pages changed *together*, while its server software
or address changed too, or whose pages became a domain-parking page, changed hands.

Corpus-level and state-keeping: ``observe`` keeps per document its URL, registered domain, fetch time, text
hash, the sha256 of its words with dates and counters masked (``content_drift.masked_key``), the ``Server``
header, the resolved IP and whether the text reads as a parking page. ``finish`` orders
the captures of each URL by fetch time (the ``versions`` view's order, ``versions_sql``: documents and the
fetch rows that re-saw their bytes, each at its own time, whatever the order of import; ``reads_fetches``),
takes every document that replaced an earlier version of its URL (a return to an earlier document is no new
content), and groups them per registered domain and capture day. The per-day counts of replaced pages and
their Server and IP changes come from the host table every corpus detector can read (``CorpusState.host_days``),
which also picks the candidate domain-days, so the state rows of other domains are never ordered. A group is a
takeover when it has at least ``min_urls`` re-captured URLs, at least ``min_changed_share`` of them changed
text (after masking: a template whose date line changes on every page, during a hosting move, is no takeover), and at least ``min_signal_share`` of them changed ``Server`` or IP, or are parking pages. Its changed
re-captures are tagged ``host_takeover`` (category ``poison``): score 0.9 with a parking page or both server
and IP changed, else 0.7. Evidence: the domain, the counts, the server and IP before and after, the parked
flag and the earlier capture's doc_id.

A site that moves to a new host and redesigns every page the same day matches too (score 0.7): that is what
a takeover looks like from outside, and the evidence shows a reviewer which one it was.
"""

from __future__ import annotations


import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError
from provenance.plugins.content_drift import masked_key
from provenance.sql import captures_sql, sql_list, versions_sql

# Phrases of domain-parking and for-sale pages (registrars' and parking services' templates).
PARKING_RE2 = ("(?i)(?:this domain (?:name )?(?:is|may be) for sale|buy this domain|domain (?:is|has been) parked|"
               "parked free|this domain has (?:recently )?been registered|the domain name [^ ]+ is for sale|"
               "make an offer on this domain|inquire about this domain|related searches:)")

# DuckDB's memory in finish, beyond which it spills to the scratch directory (unbounded: 80 percent of the
# machine; the worker peaked at 1.7 GB at 1M documents, growing with the corpus)
DUCKDB_MEMORY_MB = 512

# The domain-days that can be a takeover, from the host table every corpus detector reads (CorpusState.host_days:
# versions that replaced an earlier one, with their Server/IP changes), then this detector's own refinement over
# its state rows of those domains only: a page counts as changed only when its masked text changed, parking pages.
# n_replaced_text (any other text) >= the masked count, so the host table's filter keeps every day that passes.
TAKEOVER_SQL = """
WITH days AS (
    SELECT * FROM host_days
    WHERE n_replaced >= {min_urls} AND n_replaced_text >= {min_changed_share} * n_replaced
),
s AS (SELECT * FROM read_parquet({files}) WHERE registered_domain IN (SELECT registered_domain FROM days)),
v AS ({versions}),
recaptured AS (
    SELECT *, fetched_at::DATE AS day,
           change = 'changed' AND masked IS DISTINCT FROM previous_masked AS text_changed
    FROM v WHERE previous_doc_id IS NOT NULL AND NOT seen_before
),
own AS (
    SELECT registered_domain, day, count(*) FILTER (WHERE text_changed) AS n_changed,
           count(*) FILTER (WHERE parked) AS n_parked
    FROM recaptured GROUP BY registered_domain, day
),
hosts AS (
    SELECT registered_domain, day, d.n_replaced AS n_recaptured, o.n_changed, d.n_server_changed, d.n_ip_changed,
           o.n_parked
    FROM days d JOIN own o USING (registered_domain, day)
)
SELECT r.doc_id, r.previous_doc_id, r.registered_domain, r.server, r.previous_server, r.resolved_ip,
       r.previous_resolved_ip, r.parked, h.n_recaptured, h.n_changed, h.n_server_changed, h.n_ip_changed,
       h.n_parked
FROM recaptured r JOIN hosts h USING (registered_domain, day)
WHERE r.text_changed AND h.n_recaptured >= {min_urls}
  AND h.n_changed >= {min_changed_share} * h.n_recaptured
  AND greatest(h.n_server_changed, h.n_ip_changed, h.n_parked) >= {min_signal_share} * h.n_recaptured
ORDER BY r.doc_id
"""


class HostTakeover(provenance.CorpusDetector):
    """Re-captured pages of a domain replaced together, on a new server or IP, or turned into parking pages."""

    name = "host_takeover"
    # 2: a page counts as changed only when its masked text changed (dates, counters ignored); 3: captures in the
    # fetches rows place a document at its earliest capture
    version = "3"
    category = "poison"
    needs = ("url", "registered_domain", "fetched_at", "text_sha256", "headers", "resolved_ip", "text")
    options = {"min_urls": 5, "min_changed_share": 0.8, "min_signal_share": 0.5}
    keeps_state = True
    reads_fetches = True
    state_version = "2"  # 2: the masked-text key
    state_options = ()  # the state rows do not depend on the thresholds

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if merged["min_urls"] < 2:
            raise DetectorError("detector host_takeover: min_urls must be >= 2")
        for key in ("min_changed_share", "min_signal_share"):
            if not 0.0 < merged[key] <= 1.0:
                raise DetectorError(f"detector host_takeover: {key} must be in (0, 1]")
        return merged

    def observe(self, batch: pa.RecordBatch):
        servers = []
        for headers in batch.column("headers").to_pylist():
            # the first Server header, as a browser's developer tools show it
            servers.append(next((h["value"] for h in headers or () if (h["name"] or "").lower() == "server"), None))
        parked = pc.fill_null(pc.match_substring_regex(pc.fill_null(batch.column("text"), ""), PARKING_RE2), False)
        return pa.table({"doc_id": batch.column("doc_id"), "url": batch.column("url"),
                         "registered_domain": batch.column("registered_domain"),
                         "fetched_at": batch.column("fetched_at"), "text_sha256": batch.column("text_sha256"),
                         "server": pa.array(servers, pa.string()), "resolved_ip": batch.column("resolved_ip"),
                         "parked": parked,
                         "masked": pa.array([masked_key(t) for t in batch.column("text").to_pylist()], pa.string())})

    def finish(self, corpus):
        if not corpus.state_files:
            return
        sql = TAKEOVER_SQL.format(
            files=sql_list(corpus.state_files),
            versions=versions_sql("s", ("registered_domain", "server", "resolved_ip", "parked", "masked"),
                                  captures_sql(f"read_parquet({sql_list(corpus.fetch_files)}, union_by_name = true)")
                                  if corpus.fetch_files else None),
            **{k: self.options[k] for k in ("min_urls", "min_changed_share", "min_signal_share")})
        with corpus.connect(DUCKDB_MEMORY_MB) as con:
            corpus.host_days(con).create_view("host_days")
            rows = con.sql(sql).to_arrow_table().to_pylist()
        if not rows:
            return
        scores, evidence = [], []  # a takeover's pages: far fewer rows than the corpus, one part is enough
        for r in rows:
            strong = r["parked"] or (r["server"] != r["previous_server"] and r["resolved_ip"] != r["previous_resolved_ip"])
            scores.append(0.9 if strong else 0.7)
            evidence.append({k: r[k] for k in ("registered_domain", "previous_doc_id", "previous_server", "server",
                                               "previous_resolved_ip", "resolved_ip", "parked", "n_recaptured",
                                               "n_changed", "n_server_changed", "n_ip_changed", "n_parked")})
        yield self.tags([r["doc_id"] for r in rows], "host_takeover", score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(HostTakeover)
