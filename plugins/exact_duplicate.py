"""Exact duplicates: documents whose extracted text is byte-identical (same text_sha256).

Corpus-level: it must see every document before it knows which copy came
first. The earliest copy (by fetched_at, then doc_id) is the one to keep and
gets no tag; every other copy is tagged ``exact_duplicate`` with score 1.0 and
evidence naming the kept copy, the group size and how many domains carry it.
Memory: about 100 bytes per document (10M documents: 1 GB): its text_sha256 as
four 64-bit integers in numpy, and doc_id, fetched_at and domain in buffers of
their own (not slices that share the batch's). ``finish`` sorts the hashes with
numpy, and only the rows of hashes seen more than once go through the Arrow
grouping (grouping, joining and sorting every row's 64-character hash with Arrow
took 1.2 GB at 1M documents); no per-row Python until the (usually few)
duplicates are written out.
"""

from __future__ import annotations

import hashlib

import numpy as np
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
        self._hashes: list[np.ndarray] = []  # per batch: (n, 4) uint64, the sha256 big-endian (sorts as the hex)
        self._parts: list[pa.Table] = []     # per batch: doc_id, fetched_at, domain, and text_sha256 where it
                                             # is not 64 lower-case hex digits (else null: the words say it)

    def observe(self, batch: pa.RecordBatch) -> None:
        lengths = pc.utf8_length(batch.column("text"))
        keep = pc.and_(pc.is_valid(batch.column("text_sha256")),
                       pc.greater_equal(pc.fill_null(lengths, 0), self.options["min_chars"]))
        table = pa.Table.from_batches([batch.select(["doc_id", "text_sha256", "fetched_at", "domain"])]).filter(keep)
        words, canonical = _sha_words(table.column("text_sha256"))
        self._hashes.append(words)
        # Buffers of their own: a filtered or sliced column may share the batch's, which go with it otherwise.
        part = {name: _copy(table.column(name)) for name in ("doc_id", "fetched_at", "domain")}
        part["text_sha256"] = pa.nulls(table.num_rows, pa.string()) if canonical.all() else \
            pc.if_else(pa.array(canonical), pa.scalar(None, pa.string()), _copy(table.column("text_sha256")))
        self._parts.append(pa.table(part))

    def finish(self):
        if not self._parts:
            return None
        hashes = np.concatenate(self._hashes)
        self._hashes = []
        order = np.lexsort(hashes.T[::-1])  # by the first word, then the second, ...
        ordered = hashes[order]
        same = np.all(ordered[1:] == ordered[:-1], axis=1)  # row i+1 has row i's hash
        in_group = np.zeros(len(order), bool)
        in_group[1:] |= same
        in_group[:-1] |= same
        rows = np.sort(order[in_group])  # every copy of every hash seen twice or more, in arrival order
        if len(rows) == 0:
            self._parts = []
            return None
        docs = pa.concat_tables(self._parts).take(pa.array(rows))
        self._parts = []
        hex_digits = pa.array([h.tobytes().hex() for h in hashes[rows].astype(">u8")], pa.string())
        docs = docs.set_column(docs.schema.get_field_index("text_sha256"), "text_sha256",
                               pc.coalesce(docs.column("text_sha256"), hex_digits))
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


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def _sha_words(column) -> tuple[np.ndarray, np.ndarray]:
    """((n, 4) uint64, canonical): a text_sha256 of 64 lower-case hex digits (canonical) as four big-endian words
    (which sort as the hex strings do); any other value as the words of the sha256 of its UTF-8 bytes. Equal
    values give equal words, different ones (all but certainly) different words."""
    arr = (pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], pa.string())).cast(pa.string())
    n = len(arr)
    words, canonical = np.zeros((n, 32), np.uint8), np.zeros(n, bool)
    if n == 0:
        return words.view(">u8").astype(np.uint64), canonical
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    if np.all(np.diff(offsets) == 64) and arr.null_count == 0:
        nibbles = _HEX[np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].reshape(n, 64)]
        canonical = ~(nibbles == 255).any(axis=1)
        words[canonical] = (nibbles[canonical, 0::2] << 4) | nibbles[canonical, 1::2]
    for i in np.flatnonzero(~canonical):
        value = arr[int(i)].as_py() or ""
        if len(value) == 64 and not (_HEX[np.frombuffer(value.encode(), np.uint8)] == 255).any():
            words[i], canonical[i] = np.frombuffer(bytes.fromhex(value), np.uint8), True
        else:
            words[i] = np.frombuffer(hashlib.sha256(value.encode()).digest(), np.uint8)
    return words.view(">u8").astype(np.uint64), canonical


def _copy(column) -> pa.Array:
    """The column's values in buffers of their own."""
    arr = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
    return pc.take(arr, pa.array(np.arange(len(arr), dtype=np.int64)))


@provenance.hookimpl
def register_detectors(register):
    register(ExactDuplicate)
