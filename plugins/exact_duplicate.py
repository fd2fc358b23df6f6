"""Exact duplicates: documents whose extracted text is byte-identical (same text_sha256).

Corpus-level: it must see every document before it knows which copy came
first. The earliest copy (by fetched_at, then doc_id) is the one to keep and
gets no tag; every other copy is tagged ``exact_duplicate`` with score 1.0 and
evidence naming the kept copy, the group size and how many domains carry it.

State-keeping, so that nothing grows with the corpus in memory: ``observe``
returns, per document, its text_sha256, fetched_at, domain and text length
(about 60 bytes a document on disk, beside the tags), and each document is
observed once; ``finish`` groups the stored rows by hash in DuckDB, which spills
to the scratch directory beyond its memory limit, and only the copies of
repeated hashes come back to Python, in parts. Groups are exactly the equal
text_sha256 values, whatever their form.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.sql import sql_list

DUCKDB_MEMORY_MB = 512  # beyond it the grouping spills to the scratch directory
PART_ROWS = 100_000     # tags per part of finish's output

# The copies of every repeated hash, each with its group's earliest copy (by fetched_at, then doc_id), group
# size and number of domains; the earliest copies themselves are left out (kept, not tagged).
COPIES_SQL = """
WITH s AS (
    SELECT doc_id, text_sha256, fetched_at, domain FROM read_parquet({files})
    WHERE n_chars >= {min_chars}
), repeated AS (
    SELECT text_sha256 FROM s GROUP BY text_sha256 HAVING count(*) > 1
), copies AS (
    SELECT s.* FROM s JOIN repeated USING (text_sha256)
), groups AS (
    SELECT text_sha256, count(*) AS group_size, count(DISTINCT domain) AS n_domains,
           first(doc_id ORDER BY fetched_at ASC NULLS LAST, doc_id) AS kept_doc_id
    FROM copies GROUP BY text_sha256
)
SELECT c.doc_id, c.text_sha256, g.kept_doc_id, g.group_size, g.n_domains
FROM copies c JOIN groups g USING (text_sha256)
WHERE c.doc_id <> g.kept_doc_id
ORDER BY c.text_sha256, c.fetched_at ASC NULLS LAST, c.doc_id
"""


class ExactDuplicate(provenance.CorpusDetector):
    """Byte-identical extracted text: every copy except the earliest is tagged."""

    name = "exact_duplicate"
    version = "1"  # state-keeping now; the same tags as before, so not bumped
    category = "duplicate"
    needs = ("text_sha256", "fetched_at", "domain", "text")
    options = {"min_chars": 1}
    keeps_state = True
    state_version = "1"
    state_options = ()  # the state holds every document with a hash and its length: min_chars applies in finish

    def observe(self, batch: pa.RecordBatch) -> pa.Table:
        n_chars = pc.fill_null(pc.utf8_length(batch.column("text")), 0).cast(pa.int64())
        table = pa.Table.from_batches([batch.select(["doc_id", "text_sha256", "fetched_at", "domain"])])
        table = table.append_column("n_chars", n_chars)
        return table.filter(pc.is_valid(table.column("text_sha256")))

    def finish(self, corpus):
        if not corpus.state_files:
            return
        sql = COPIES_SQL.format(files=sql_list(corpus.state_files), min_chars=int(self.options["min_chars"]))
        with corpus.connect(DUCKDB_MEMORY_MB) as con:
            for part in con.sql(sql).to_arrow_reader(PART_ROWS):
                if part.num_rows == 0:
                    continue
                evidence = [{"text_sha256": sha, "kept_doc_id": kept, "group_size": size, "n_domains": domains}
                            for sha, kept, size, domains in zip(*(part.column(c).to_pylist() for c in (
                                "text_sha256", "kept_doc_id", "group_size", "n_domains")))]
                yield self.tags(part.column("doc_id"), "exact_duplicate", score=1.0, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(ExactDuplicate)
