"""Exact duplicates: documents whose extracted text is byte-identical (same text_sha256).

Corpus-level: it must see every document before it knows which copy came
first. The earliest copy (by fetched_at, then doc_id) is the one to keep and
gets no tag; every other copy is tagged ``exact_duplicate`` with score 1.0 and
evidence naming the kept copy, the group size and how many domains carry it.
Memory: three narrow columns per document, grouped with Arrow, no per-row
Python until the (usually few) duplicates are written out.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

import provenance


class ExactDuplicate(provenance.CorpusDetector):
    """Byte-identical extracted text: every copy except the earliest is tagged."""

    name = "exact_duplicate"
    version = "1"
    category = "duplicate"
    needs = ("text_sha256", "fetched_at", "domain", "text")
    options = {"min_chars": 1}

    def __init__(self, **options):
        super().__init__(**options)
        self._parts: list[pa.Table] = []

    def observe(self, batch: pa.RecordBatch) -> None:
        lengths = pc.utf8_length(batch.column("text"))
        keep = pc.and_(pc.is_valid(batch.column("text_sha256")),
                       pc.greater_equal(pc.fill_null(lengths, 0), self.options["min_chars"]))
        table = pa.Table.from_batches([batch.select(["doc_id", "text_sha256", "fetched_at", "domain"])])
        self._parts.append(table.filter(keep))

    def finish(self):
        if not self._parts:
            return None
        docs = pa.concat_tables(self._parts)
        self._parts = []
        groups = docs.group_by("text_sha256").aggregate([("doc_id", "count"), ("domain", "count_distinct")])
        dup_hashes = groups.filter(pc.greater(groups.column("doc_id_count"), 1))
        if dup_hashes.num_rows == 0:
            return None
        dups = docs.join(dup_hashes, "text_sha256").sort_by(
            [("text_sha256", "ascending"), ("fetched_at", "ascending"), ("doc_id", "ascending")])
        doc_ids, shas = dups.column("doc_id").to_pylist(), dups.column("text_sha256").to_pylist()
        sizes, n_domains = dups.column("doc_id_count").to_pylist(), dups.column("domain_count_distinct").to_pylist()
        out_ids, evidence, kept_id, current = [], [], None, None
        for doc_id, sha, size, domains in zip(doc_ids, shas, sizes, n_domains):
            if sha != current:  # first (earliest) row of each group is the copy to keep
                current, kept_id = sha, doc_id
                continue
            out_ids.append(doc_id)
            evidence.append({"text_sha256": sha, "kept_doc_id": kept_id, "group_size": size, "n_domains": domains})
        return self.tags(out_ids, "exact_duplicate", score=[1.0] * len(out_ids), evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(ExactDuplicate)
