"""Near duplicates at corpus scale: MinHash state per document, out-of-core LSH, clusters, campaigns, known texts.

A state-keeping corpus detector (``keeps_state = True``), in two halves.

``observe(batch)`` turns each document into one *state row*, which the runner
stores as Parquet: its text becomes a set of shingles (word 5-grams by
default, or character n-grams) hashed to 32 bits and summarised by a MinHash
signature of ``num_perm`` values; the signature is cut into ``bands`` x
``rows`` (datasketch's choice for ``threshold``) and each band hashed to one
64-bit *band key* with the band index folded in, so one list column serves
every band. Every document gets a row (with fetched_at, domain and
registered_domain) even without shingles, so first-seen dates of domains are
complete. No text is kept.

``finish(corpus)`` reads the state files, never all of them at once:

- *Candidates, out of core.* DuckDB (``temp_directory`` = the scratch
  directory, ``memory_limit`` = ``memory_limit_mb``) unnests the band keys,
  groups them, and for every key shared by two or more documents links the
  bucket's first document (by a dense row number: file order, then row) to
  each other one ("star" edges: linear in the bucket, and the same clusters as
  all pairs). The distinct pairs are written to the scratch directory.
- *Verification and clusters, in bounded memory.* The signatures (or, with
  ``verify = "exact"``, the shingle sets) of documents in some pair are copied
  in one pass over the state files to an Arrow file in the scratch directory,
  in blocks of ``VERIFY_BLOCK_BYTES``; pairs are scored grouped by the two
  blocks they need, two blocks in memory at a time (``CandidateValues``). A
  pair is kept when its Jaccard reaches ``threshold``; kept pairs become
  clusters (connected components). In every
  cluster the earliest document (fetched_at, then doc_id) is kept; every other
  member is tagged ``near_duplicate`` (category duplicate).
- *Amplification.* A cluster spread over at least
  ``amplification_min_domains`` registered domains within
  ``amplification_window_days``, most of whose domains
  (``amplification_new_share``) were first seen in the store at most
  ``amplification_new_domain_days`` before the cluster's first fetch: the same
  text pushed through fresh sites at once. Every member is tagged
  ``amplification`` (category poison). First-seen dates are one DuckDB
  aggregate over all state files, for the clusters' domains only.
- *Known LLM text.* Signatures of the reference sets (``provenance reference
  add``) are computed in ``finish`` and banded for ``reference_threshold``;
  state files are streamed batch by batch, each document's reference band keys
  computed from its stored signature and matched against the (small)
  in-memory set of reference keys; matches are verified by estimated Jaccard.
  Tag ``known_llm_text`` (category llm), one per document and reference set.

Memory in ``finish``: DuckDB's limit, plus two blocks of signatures, plus the
pairs (16 bytes each) and the metadata (doc_id, fetched_at, domains) of the
documents in candidate pairs, plus one batch of state rows, plus the reference
signatures. Output is yielded in parts of ``PART_ROWS`` rows.

**Interoperable with datasketch.** For the same shingles, seed and num_perm,
the signature equals ``datasketch.MinHash(num_perm, seed,
hashfunc=shingle_hashfunc(kind)).hashvalues`` (datasketch's default
"affine32" permutation scheme) fed with ``shingles(text, ...)``, so signatures
can be loaded into ``MinHashLSH`` and friends. Bands x rows are the ones
datasketch's ``MinHashLSH`` picks for the threshold and weights.

The shingle hash is ours (datasketch's default, SHA-1, costs a Python call
per shingle): every token is hashed with 64-bit FNV-1a over its UTF-8 bytes
(once per distinct token of a batch, vectorised over the batch's token
dictionary), the n tokens of a shingle are folded with a multiply-add, and the
top 32 bits of the MurmurHash3 64-bit finalizer of that are the shingle hash.
``shingle_hash`` is the same function in plain Python.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import provenance
from provenance.arrays import unique_sorted
from provenance.detectors import CorpusState, DetectorError, bounded_duckdb

# Tokens: runs of letters and digits (any script), after lower-casing. RE2 syntax (Arrow's regex engine).
WORD_SEPARATORS = r"[^\p{L}\p{N}]+"
SHINGLE_KINDS = ("word", "char")
VERIFY_MODES = ("estimate", "exact", "none")

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
_FOLD = 0x9E3779B97F4A7C15  # odd multiplier folding a shingle's token hashes, in order
_FMIX64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)
_FMIX32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # datasketch's affine32 pre-mix (MurmurHash3 finalizer)
_SHINGLE_BLOCK = 4096  # shingles per permutation block: 4096 x 128 x 4 bytes = 2 MB, stays in cache


# ----- the shingle hash, in plain Python (what datasketch is given as hashfunc) -----------------
def _fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def _fmix64(h: int) -> int:
    s1, m1, s2, m2, s3 = _FMIX64
    h ^= h >> s1
    h = (h * m1) & _MASK64
    h ^= h >> s2
    h = (h * m2) & _MASK64
    return h ^ (h >> s3)


def _fold(token_hashes) -> int:
    acc = 0
    for t in token_hashes:
        acc = (acc * _FOLD + t) & _MASK64
    return _fmix64(acc) >> 32


def shingle_hash(shingle: str, kind: str = "word") -> int:
    """The 32-bit hash of one shingle as ``shingles`` writes it (word shingles: tokens joined by one space)."""
    tokens = shingle.split(" ") if kind == "word" else list(shingle)
    return _fold(_fnv1a64(t.encode("utf-8")) for t in tokens)


def shingle_hashfunc(kind: str = "word"):
    """``hashfunc`` for ``datasketch.MinHash`` that reproduces our signatures from ``shingles(...)``."""
    return functools.partial(shingle_hash, kind=kind)


def shingles(text: str | None, kind: str = "word", ngram: int = 5) -> list[str]:
    """The shingles of one text, in order, through the same Arrow tokenisation the detector uses.

    A text with fewer than ``ngram`` tokens has one shingle made of all of
    them; a text without tokens has none.
    """
    tokens = _token_strings(pa.array([text], pa.large_string()), kind)
    if not tokens:
        return []
    sep = " " if kind == "word" else ""
    n = min(ngram, len(tokens))
    return [sep.join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# ----- vectorised: tokens, shingle hashes, signatures ---------------------------------------------
def _normalise(texts: pa.Array, kind: str) -> pa.Array:
    lowered = pc.utf8_lower(pc.fill_null(texts, ""))
    if kind == "char":  # whitespace runs count as one space; none at the ends
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"\s+", " "))
    return lowered


def _words(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(every non-empty word of every text, flat; words per text)."""
    parts = pc.split_pattern_regex(_normalise(texts, "word"), WORD_SEPARATORS)
    flat, parent = pc.list_flatten(parts), pc.list_parent_indices(parts)
    nonempty = pc.greater(pc.binary_length(flat), 0)
    counts = np.bincount(parent.filter(nonempty).to_numpy(), minlength=len(texts))
    return flat.filter(nonempty), counts


def _chars(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(every character of every normalised text as code points, flat; characters per text)."""
    normal = _normalise(texts, "char")
    counts = pc.utf8_length(normal).to_numpy(zero_copy_only=False).astype(np.int64)
    joined = "".join(normal.to_pylist())
    return np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32), counts


def _token_strings(texts: pa.Array, kind: str) -> list[str]:
    if kind == "word":
        return _words(texts)[0].to_pylist()
    codes, _ = _chars(texts)
    return [chr(c) for c in codes]


def _fnv1a64_strings(strings: pa.Array) -> np.ndarray:
    """64-bit FNV-1a of every string's UTF-8 bytes, vectorised: one numpy step per byte position."""
    strings = strings.cast(pa.large_string())
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset:strings.offset + n + 1]
    data = np.frombuffer(strings.buffers()[2], dtype=np.uint8) if strings.buffers()[2] else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")  # longest first: the strings still going are always a prefix
    starts, sorted_len = offsets[:-1][order], lengths[order]
    h = np.full(n, _FNV_OFFSET, dtype=_U64)
    prime = _U64(_FNV_PRIME)
    for j in range(int(sorted_len[0]) if n else 0):
        k = int(np.count_nonzero(sorted_len > j)) if j else n
        h[:k] ^= data[starts[:k] + j].astype(_U64)
        h[:k] *= prime
    out = np.empty(n, dtype=_U64)
    out[order] = h
    return out


def _fmix(h: np.ndarray, constants, dtype) -> np.ndarray:
    s1, m1, s2, m2, s3 = (dtype(c) for c in constants)
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


def _token_hashes(texts: pa.Array, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every token, flat; tokens per text). Each distinct token is hashed once."""
    if kind == "word":
        words, counts = _words(texts)
        encoded = pc.dictionary_encode(words)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        return _fnv1a64_strings(encoded.dictionary)[encoded.indices.to_numpy()], counts
    codes, counts = _chars(texts)
    distinct, inverse = np.unique(codes, return_inverse=True)
    table = _fnv1a64_strings(pa.array([chr(c) for c in distinct], pa.large_string()))
    return table[inverse.reshape(-1)], counts


def shingle_hashes(texts: pa.Array, kind: str = "word", ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit hash of every shingle of every text, flat, in order; shingles per text)."""
    tokens, counts = _token_hashes(texts, kind)
    per_text = np.where(counts > 0, np.maximum(counts - ngram + 1, 1), 0)
    total = int(per_text.sum())
    token_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    token_end = token_start + counts
    first = np.concatenate([[0], np.cumsum(per_text)[:-1]]).astype(np.int64)
    pos = np.arange(total, dtype=np.int64) - np.repeat(first, per_text) + np.repeat(token_start, per_text)
    end = np.repeat(token_end, per_text)
    acc = np.zeros(total, dtype=_U64)
    fold = _U64(_FOLD)
    last = max(len(tokens) - 1, 0)
    for j in range(ngram):
        idx = pos + j
        inside = idx < end  # a short text's single shingle stops at its last token
        acc = np.where(inside, acc * fold + tokens[np.minimum(idx, last)] if len(tokens) else acc, acc)
    return (_fmix(acc, _FMIX64, _U64) >> _U64(32)).astype(np.uint32), per_text


@functools.lru_cache(maxsize=32)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd, b), drawn exactly as MinHash draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signatures(texts: pa.Array, kind: str = "word", ngram: int = 5, num_perm: int = 128,
               seed: int = 1, compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(MinHash signatures, one uint32 row of num_perm values per text; whether the text had any shingle).

    A text without shingles keeps datasketch's empty value (all 2**32 - 1).
    Word shingles go through the compiled kernel (``_minhash_kernel``, about
    ten times faster) unless ``compiled`` is false; the numpy code below is
    the reference it is tested against, and serves character shingles.
    """
    a, b = permutations(num_perm, seed)
    if compiled and kind == "word":
        from provenance.plugins import _minhash_kernel  # here: numba takes 0.2 s to import, every command

        if _minhash_kernel.available():
            return _minhash_kernel.word_signatures(_normalise(texts, "word"), ngram, a, b)
    hashes, per_text = shingle_hashes(texts, kind, ngram)
    sig = np.full((len(texts), num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    if len(hashes) == 0:
        return sig, per_text > 0
    mixed = _fmix(hashes, _FMIX32, np.uint32)
    owner = np.repeat(np.arange(len(texts)), per_text)
    buf = np.empty((_SHINGLE_BLOCK, num_perm), dtype=np.uint32)
    for start in range(0, len(hashes), _SHINGLE_BLOCK):
        stop = min(start + _SHINGLE_BLOCK, len(hashes))
        block = buf[:stop - start]
        np.multiply(mixed[start:stop, None], a[None, :], out=block)
        np.add(block, b[None, :], out=block)  # uint32 wrap-around is the "mod 2**32" of the scheme
        docs = owner[start:stop]
        seg = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
        mins = np.minimum.reduceat(block, seg, axis=0)
        seg_docs = docs[seg]  # distinct within a block
        sig[seg_docs] = np.minimum(sig[seg_docs], mins)
    return sig, per_text > 0


def distinct_shingle_sets(texts: pa.Array, kind: str = "word", ngram: int = 5) -> pa.Array:
    """Each text's distinct shingle hashes, sorted, as list<uint32> (null for a text without shingles)."""
    hashes, per_text = shingle_hashes(texts, kind, ngram)
    owner = np.repeat(np.arange(len(texts)), per_text)
    order = np.lexsort((hashes, owner))
    hashes, owner = hashes[order], owner[order]
    first = np.concatenate([[True], (hashes[1:] != hashes[:-1]) | (owner[1:] != owner[:-1])])
    counts = np.bincount(owner[first], minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(hashes[first]), mask=pa.array(per_text == 0))


# ----- LSH -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def lsh_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising weighted false-positive and false-negative probability: datasketch's choice.

    The same search as datasketch's ``MinHashLSH`` (``_optimal_param``: every b x r <= num_perm, in order,
    first minimum wins), with the two integrals by Gauss-Legendre quadrature in numpy instead of scipy's
    ``quad``: importing datasketch.lsh loads scipy.integrate, half a second in every tag worker. A test
    asserts the same choice as datasketch over a grid of thresholds, weights and signature lengths.
    """
    nodes, weights = np.polynomial.legendre.leggauss(64)

    def integral(lo: float, hi: float, b: np.ndarray, r: np.ndarray, negative: bool) -> np.ndarray:
        x = (hi - lo) / 2 * nodes + (hi + lo) / 2  # nodes on [lo, hi]
        collide = 1 - (1 - x[None, :] ** r[:, None]) ** b[:, None]
        return (hi - lo) / 2 * ((1 - collide) if negative else collide) @ weights

    b = np.array([b for b in range(1, num_perm + 1) for _r in range(1, num_perm // b + 1)], dtype=np.float64)
    r = np.array([r for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    error = fp_weight * integral(0.0, threshold, b, r, False) + fn_weight * integral(threshold, 1.0, b, r, True)
    best = int(np.argmin(error))
    return int(b[best]), int(r[best])


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per signature row and band, shape (n, bands).

    A band's ``rows`` values are folded after the band index, so equal values
    in different bands give different keys and all bands can share one index.
    """
    out = np.empty((len(sig), bands), dtype=_U64)
    fold = _U64(_FOLD)
    for band in range(bands):
        acc = np.full(len(sig), band, dtype=_U64)
        for col in sig[:, band * rows:(band + 1) * rows].T:
            acc = acc * fold + col.astype(_U64)
        out[:, band] = _fmix(acc, _FMIX64, _U64)
    return out


def estimated_jaccard(sig: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65536,
                      other: np.ndarray | None = None) -> np.ndarray:
    """Share of equal signature values of ``sig[left[k]]`` and ``other[right[k]]`` (``other`` defaults to
    ``sig``): the MinHash estimate of Jaccard."""
    other = sig if other is None else other
    out = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), chunk):
        stop = start + chunk
        out[start:stop] = (sig[left[start:stop]] == other[right[start:stop]]).mean(axis=1)
    return out


class ReferenceIndex:
    """Reference signatures banded for ``threshold`` (datasketch's bands x rows for the weights), in memory:
    which reference texts a batch of signatures matches at estimated Jaccard >= ``threshold``."""

    def __init__(self, ref_sig: np.ndarray, threshold: float, fp_weight: float = 0.5, fn_weight: float = 0.5):
        self.ref_sig, self.threshold = ref_sig, threshold
        self.bands, self.rows = lsh_bands(threshold, ref_sig.shape[1], fp_weight, fn_weight)
        keys = band_keys(ref_sig, self.bands, self.rows).reshape(-1)
        order = np.argsort(keys, kind="stable")
        self.keys, self.owner = keys[order], (np.arange(len(keys)) // self.bands)[order]

    def matches(self, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row of ``sig``, reference row, estimated Jaccard) of every verified pair, by row then reference."""
        n_ref = len(self.ref_sig)
        doc_keys = band_keys(sig, self.bands, self.rows).reshape(-1)
        lo, hi = np.searchsorted(self.keys, doc_keys, "left"), np.searchsorted(self.keys, doc_keys, "right")
        count = hi - lo
        if not count.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        doc = np.repeat(np.arange(len(doc_keys)) // self.bands, count)
        start = np.repeat(lo, count) + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        pairs = unique_sorted(doc.astype(np.int64) * n_ref + self.owner[start])
        doc, ref = pairs // n_ref, pairs % n_ref
        jaccard = estimated_jaccard(sig, doc, ref, other=self.ref_sig)
        close = jaccard >= self.threshold
        return doc[close], ref[close], jaccard[close]


def exact_jaccard(sets: list[np.ndarray], other: list[np.ndarray] | None = None):
    """A function of pairs (left, right) giving the exact Jaccard of the shingle-hash sets ``sets[left[k]]``
    and ``other[right[k]]`` (``other`` defaults to ``sets``)."""
    other = sets if other is None else other

    def jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = np.empty(len(left), dtype=np.float64)
        for k, (i, j) in enumerate(zip(left.tolist(), right.tolist())):
            common = len(np.intersect1d(sets[i], other[j], assume_unique=True))
            out[k] = common / (len(sets[i]) + len(other[j]) - common)
        return out
    return jaccard


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes, given edges (left[k], right[k])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ----- the state files, out of core ---------------------------------------------------------------
class StateFiles:
    """The state files as one table with a dense row id per row (file by file in path order, then row order)."""

    def __init__(self, paths):
        self.paths = sorted(str(p) for p in paths)
        counts = [pq.ParquetFile(p).metadata.num_rows for p in self.paths]
        self.schema = pq.read_schema(self.paths[0]) if self.paths else None
        self.bases = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.bases[-1])

    def batches(self, columns: list[str], batch_rows: int = 65536):
        """(dense id of the first row, record batch) over every file, ``batch_rows`` at a time."""
        for path, base in zip(self.paths, self.bases):
            start = int(base)
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
                yield start, batch
                start += batch.num_rows

    def take_split(self, ids: np.ndarray, columns: list[str], value: str, writer: "CandidateValues") -> pa.Table:
        """The rows with the given dense ids (sorted, distinct), in that order, read one batch at a time; the
        same pass hands column ``value`` of those rows, in the same order, to ``writer`` (which spills it), so
        the values are never all in memory."""
        parts = []
        for start, batch in self.batches([*columns, value]):
            a, b = np.searchsorted(ids, [start, start + batch.num_rows])
            if a < b:
                taken = batch.take(pa.array(ids[a:b] - start))
                writer.append(taken.column(value))
                parts.append(pa.Table.from_batches([taken.select(columns)]))
        writer.close()
        if not parts:
            return pq.read_schema(self.paths[0]).empty_table().select(columns)
        return pa.concat_tables(parts)

    def candidate_pairs(self, con, scratch_dir: str) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (bucket leader, other member) of dense ids sharing a band key, distinct; computed by DuckDB
        out of core and spilled to ``scratch_dir/candidates.parquet`` before they are read back."""
        con.register("_offsets", pa.table({"filename": self.paths, "base": self.bases[:-1]}))
        con.execute("""
            CREATE TEMP TABLE band AS
            SELECT o.base + s.file_row_number AS id, unnest(s.band_keys) AS key
            FROM read_parquet($files, filename = true, file_row_number = true) s
            JOIN _offsets o ON s.filename = o.filename
            WHERE s.band_keys IS NOT NULL""", {"files": self.paths})
        path = os.path.join(scratch_dir, "candidates.parquet")
        con.execute(f"""
            COPY (
                WITH bucket AS (SELECT key, min(id) AS leader FROM band GROUP BY key HAVING count(*) > 1)
                SELECT DISTINCT bucket.leader AS a, band.id AS b
                FROM band JOIN bucket USING (key) WHERE band.id <> bucket.leader
            ) TO '{_sql_string(path)}' (FORMAT parquet)""")
        con.execute("DROP TABLE band")
        pairs = pq.read_table(path)
        return pairs.column("a").to_numpy(), pairs.column("b").to_numpy()

    def first_seen(self, con, sites: list[str]) -> dict:
        """Earliest fetched_at of any state row per site (registered domain, else domain), for ``sites`` only."""
        con.register("_sites", pa.table({"site": pa.array(sites, pa.string())}))
        rows = con.execute("""
            SELECT coalesce(registered_domain, domain) AS site, min(fetched_at)
            FROM read_parquet($files) WHERE site IN (SELECT site FROM _sites) GROUP BY site""",
                           {"files": self.paths}).fetchall()
        return dict(rows)


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def duckdb_connection(scratch_dir: str, memory_limit_mb: int):
    """``provenance.detectors.bounded_duckdb`` (within a worker's memory limit DuckDB gets at most a third of what
    is left, so the signatures read back after it still fit), with no insertion order to keep."""
    return bounded_duckdb(scratch_dir, memory_limit_mb, preserve_insertion_order=False)


VERIFY_BLOCK_BYTES = 64 * 1024 * 1024  # candidates' signatures (or shingle sets) per block that finish reads back


class CandidateValues:
    """The signature (or shingle set) of every candidate document, spilled to one Arrow IPC file in blocks of
    about ``block_bytes`` (in local row order: the order of the sorted candidate ids), and a similarity over
    pairs of local rows that holds at most two blocks at a time.

    Pairs are grouped by (block of left, block of right) and each group is scored with the two blocks it
    needs, so memory is two blocks, whatever the number of candidates; the price is reading a block again for
    every other block it shares a pair with (at most blocks x blocks reads; copies close to their original in
    the store's order make few). The scores are the ones the in-memory functions give
    (``estimated_jaccard``, ``exact_jaccard``), pair by pair.
    """

    def __init__(self, path: str, field: pa.Field, kind: str, num_perm: int, block_bytes: int | None = None):
        self.path, self.kind, self.num_perm = path, kind, num_perm
        self.block_bytes = VERIFY_BLOCK_BYTES if block_bytes is None else block_bytes
        self._sink = pa.OSFile(path, "wb")
        self._writer = pa.ipc.new_file(self._sink, pa.schema([pa.field("v", field.type)]))
        self._pending: list[pa.Array] = []
        self._pending_rows = self._pending_bytes = 0
        self.starts = [0]  # local row of the first value of each block, then the total
        self._cache: dict[int, object] = {}

    def append(self, values) -> None:
        chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
        for chunk in chunks:
            row_bytes = max(1, chunk.nbytes // max(1, len(chunk)))
            start = 0
            while start < len(chunk):  # a block ends once it holds block_bytes (or one value, if bigger)
                rows = max(1, -(-(self.block_bytes - self._pending_bytes) // row_bytes))
                piece = chunk.slice(start, rows)
                start += len(piece)
                self._pending.append(piece)
                self._pending_rows += len(piece)
                self._pending_bytes += len(piece) * row_bytes
                if self._pending_bytes >= self.block_bytes:
                    self._flush()

    def _flush(self) -> None:
        if self._pending_rows:
            values = pa.concat_arrays(self._pending)
            self._writer.write_batch(pa.record_batch([values], names=["v"]))
            self.starts.append(self.starts[-1] + len(values))
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()
        self._reader = pa.ipc.open_file(pa.OSFile(self.path, "rb"))
        self._starts = np.asarray(self.starts, dtype=np.int64)

    def _blocks(self, i: int, j: int):
        """Blocks i and j, each a signature matrix or a list of shingle-hash arrays; no other block is kept."""
        for stale in set(self._cache) - {i, j}:
            del self._cache[stale]
        for k in (i, j):
            if k not in self._cache:
                column = self._reader.get_batch(k).column(0)
                if self.kind == "exact":
                    self._cache[k] = [np.asarray(v, dtype=np.uint32) for v in column.to_numpy(zero_copy_only=False)]
                else:
                    self._cache[k] = _signature_matrix(column, self.num_perm)
        return self._cache[i], self._cache[j]

    def similarity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Estimated (or, for verify = "exact", exact) Jaccard of each pair of local rows (left[k], right[k])."""
        out = np.empty(len(left), dtype=np.float64)
        if len(left) == 0:
            return out
        block_left = np.searchsorted(self._starts, left, "right") - 1
        block_right = np.searchsorted(self._starts, right, "right") - 1
        order = np.lexsort((block_right, block_left))
        bl, br = block_left[order], block_right[order]
        cut = np.flatnonzero(np.concatenate([[True], (bl[1:] != bl[:-1]) | (br[1:] != br[:-1]), [True]]))
        for s, e in zip(cut[:-1].tolist(), cut[1:].tolist()):
            i, j = int(bl[s]), int(br[s])
            a, b = self._blocks(i, j)
            k = order[s:e]
            l, r = left[k] - self._starts[i], right[k] - self._starts[j]
            if self.kind == "exact":
                out[k] = exact_jaccard(a, b)(l, r)
            else:
                out[k] = estimated_jaccard(a, l, r, other=b)
        return out


def _signature_matrix(column, num_perm: int) -> np.ndarray:
    """A fixed_size_list<uint32> column without nulls as an (n, num_perm) array, filled chunk by chunk (no
    concatenated Arrow copy beside it: at 10M documents the candidates' signatures are 0.7 GB)."""
    if not isinstance(column, pa.ChunkedArray):
        return column.flatten().to_numpy().reshape(-1, num_perm)
    out = np.empty((len(column), num_perm), np.uint32)
    start = 0
    for chunk in column.chunks:
        out[start:start + len(chunk)] = chunk.flatten().to_numpy().reshape(-1, num_perm)
        start += len(chunk)
    return out


def _parts(table: pa.Table):
    for start in range(0, table.num_rows, PART_ROWS):
        yield table.slice(start, PART_ROWS)


def _iso(value) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


PART_ROWS = 100_000  # tag rows per part that finish yields


class NearDuplicate(provenance.CorpusDetector):
    """Near-duplicate clusters (all but the earliest tagged), amplification campaigns, and copies of known texts."""

    name = "near_duplicate"
    version = "2"
    category = "duplicate"
    needs = ("text", "fetched_at", "domain", "registered_domain")
    keeps_state = True
    options = {
        "threshold": 0.8,      # Jaccard similarity of shingle sets that makes two texts near duplicates
        "num_perm": 128,       # MinHash permutations (signature length)
        "seed": 1,             # permutation seed (datasketch's default)
        "shingle": "word",     # "word" (word n-grams) or "char" (character n-grams)
        "ngram": 5,            # tokens per shingle
        "verify": "estimate",  # keep candidate pairs whose Jaccard reaches threshold: "estimate" (from the
                               # signatures), "exact" (from stored shingle hashes; bigger state) or "none"
        "fp_weight": 0.1,      # datasketch MinHashLSH weights: bands x rows minimise
        "fn_weight": 0.9,      #   fp_weight * P(false positive) + fn_weight * P(false negative); recall first,
                               #   since verification drops the extra candidates (also for reference matching)
        "amplification_min_domains": 5,         # registered domains a cluster must span to be a campaign
        "amplification_window_days": 7.0,       # ... all its copies fetched within this many days
        "amplification_new_share": 0.5,         # ... and at least this share of its domains new:
        "amplification_new_domain_days": 30.0,  #     first seen in the store at most this many days before it
        "reference_threshold": 0.2,  # Jaccard with a reference text that makes a known_llm_text match
                                     # (a copy with 15% of its words edited has word-5-gram Jaccard ~0.28)
        "memory_limit_mb": 1024,     # DuckDB's memory in finish; beyond it, it spills to the scratch directory
    }
    # What the state rows depend on (the band keys on bands x rows, so threshold and weights too).
    state_options = ("shingle", "ngram", "num_perm", "seed", "threshold", "fp_weight", "fn_weight", "verify")

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        problems = []
        if not 0.0 < merged["threshold"] <= 1.0:
            problems.append("threshold must be in (0, 1]")
        if not 2 <= merged["num_perm"] <= 1024:
            problems.append("num_perm must be in [2, 1024]")
        if not 0 <= merged["seed"] < 2 ** 32:
            problems.append("seed must be in [0, 2**32)")
        if merged["shingle"] not in SHINGLE_KINDS:
            problems.append(f"shingle must be one of {list(SHINGLE_KINDS)}, not {merged['shingle']!r}")
        if merged["verify"] not in VERIFY_MODES:
            problems.append(f"verify must be one of {list(VERIFY_MODES)}, not {merged['verify']!r}")
        if not 1 <= merged["ngram"] <= 64:
            problems.append("ngram must be in [1, 64]")
        weights = (merged["fp_weight"], merged["fn_weight"])
        if any(not 0.0 <= w <= 1.0 for w in weights) or abs(sum(weights) - 1.0) > 1e-9:
            problems.append("fp_weight and fn_weight must be in [0, 1] and add up to 1")
        if merged["amplification_min_domains"] < 2:
            problems.append("amplification_min_domains must be at least 2")
        if not merged["amplification_window_days"] > 0.0:
            problems.append("amplification_window_days must be above 0")
        if not 0.0 <= merged["amplification_new_share"] <= 1.0:
            problems.append("amplification_new_share must be in [0, 1]")
        if not merged["amplification_new_domain_days"] >= 0.0:
            problems.append("amplification_new_domain_days must be at least 0")
        if not 0.0 < merged["reference_threshold"] <= 1.0:
            problems.append("reference_threshold must be in (0, 1]")
        if merged["memory_limit_mb"] < 64:
            problems.append("memory_limit_mb must be at least 64")
        if problems:
            raise DetectorError("detector near_duplicate: " + "; ".join(problems))
        return merged

    def state_schema(self) -> pa.Schema:
        """The schema of every table ``observe`` returns (plain nullable fields: one schema for every batch)."""
        fields = [("doc_id", pa.string()), ("fetched_at", pa.timestamp("us", "UTC")), ("domain", pa.string()),
                  ("registered_domain", pa.string()),
                  ("signature", pa.list_(pa.uint32(), self.options["num_perm"])), ("band_keys", pa.list_(pa.uint64()))]
        if self.options["verify"] == "exact":
            fields.append(("shingle_set", pa.list_(pa.uint32())))
        return pa.schema(fields)

    def observe(self, batch: pa.RecordBatch) -> pa.Table:
        o = self.options
        texts = batch.column("text")
        sig, has_shingles = signatures(texts, o["shingle"], o["ngram"], o["num_perm"], o["seed"])
        bands, rows = lsh_bands(o["threshold"], o["num_perm"], o["fp_weight"], o["fn_weight"])
        keys = band_keys(sig, bands, rows)
        missing = pa.array(~has_shingles)
        schema = self.state_schema()
        columns = [batch.column(c).cast(schema.field(c).type)
                   for c in ("doc_id", "fetched_at", "domain", "registered_domain")]
        columns.append(pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), o["num_perm"], mask=missing))
        offsets = pa.array(np.arange(len(sig) + 1, dtype=np.int32) * bands)
        columns.append(pa.ListArray.from_arrays(offsets, pa.array(keys.reshape(-1)), mask=missing))
        if o["verify"] == "exact":
            columns.append(distinct_shingle_sets(texts, o["shingle"], o["ngram"]))
        return pa.Table.from_arrays(columns, schema=schema)

    def finish(self, corpus: CorpusState | None = None):
        if corpus is None:
            raise TypeError("near_duplicate keeps state: finish needs the CorpusState naming its state files")
        state = StateFiles(corpus.state_files) if corpus.state_files else None
        if state is None or len(state) == 0:
            return
        with contextlib.ExitStack() as stack:
            scratch = corpus.scratch_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="near_dup-"))
            con = stack.enter_context(duckdb_connection(scratch, self.options["memory_limit_mb"]))
            clusters = self._clusters(con, state, scratch)
            if clusters is not None:
                yield from _parts(self._near_duplicate_tags(*clusters))
                yield from _parts(self._amplification_tags(con, state, clusters[0]))
        for name in sorted(corpus.references):
            yield from _parts(self._reference_tags(state, name, corpus.references[name]))

    # ----- clusters ---------------------------------------------------------------------------------
    def _clusters(self, con, state: StateFiles, scratch: str):
        """(cluster members sorted by label, fetched_at, doc_id, with their label and local row; similarity
        function over local rows), or None without clusters."""
        o = self.options
        left, right = state.candidate_pairs(con, scratch)
        if len(left) == 0:
            return None
        ids = unique_sorted(np.concatenate([left, right]))
        columns = ["doc_id", "fetched_at", "domain", "registered_domain"]
        value = "shingle_set" if o["verify"] == "exact" else "signature"
        # The candidates' signatures (or shingle sets) go to the scratch directory in blocks, read back two
        # at a time: at 10M documents they are 1.3M signatures, 0.7 GB.
        values = CandidateValues(os.path.join(scratch, "candidate_values.arrow"),
                                 state.schema.field(value), o["verify"], o["num_perm"])
        docs = state.take_split(ids, columns, value, values)
        left, right = np.searchsorted(ids, left), np.searchsorted(ids, right)
        similarity = values.similarity
        if o["verify"] != "none":
            close = similarity(left, right) >= o["threshold"]
            left, right = left[close], right[close]
        if len(left) == 0:
            return None
        label = components(len(ids), left, right)
        size = np.bincount(label)[label]
        members = np.flatnonzero(size > 1)
        # The kept document of each cluster: earliest fetched_at (nulls last), then doc_id.
        table = docs.take(pa.array(members)).append_column("label", pa.array(label[members])).append_column(
            "row", pa.array(members))
        table = table.sort_by([("label", "ascending"), ("fetched_at", "ascending"), ("doc_id", "ascending")])
        return table, similarity

    def _near_duplicate_tags(self, table: pa.Table, similarity) -> pa.Table:
        table_label = table.column("label").to_numpy()
        first = np.concatenate([[True], table_label[1:] != table_label[:-1]])
        kept_pos = np.flatnonzero(first)[np.cumsum(first) - 1]
        row = table.column("row").to_numpy()
        stats = table.group_by("label").aggregate([("label", "count"), ("domain", "count_distinct"),
                                                   ("registered_domain", "count_distinct")]).sort_by("label")
        index = np.searchsorted(stats.column("label").to_numpy(), table_label)  # per member: its cluster's row
        tagged = ~first
        jaccard = similarity(row[kept_pos][tagged], row[tagged])
        doc_ids = table.column("doc_id")

        def per_member(column):
            return pa.array(stats.column(column).to_numpy()[index[tagged]]).cast(pa.string())

        evidence = pc.binary_join_element_wise(
            '{"cluster_id": "', doc_ids.take(pa.array(kept_pos[tagged])),
            '", "cluster_size": ', per_member("label_count"),
            ', "n_domains": ', per_member("domain_count_distinct"),
            ', "n_registered_domains": ', per_member("registered_domain_count_distinct"),
            ', "jaccard": ', pa.array(np.round(jaccard, 4)).cast(pa.string()), "}", "")
        return self.tags(doc_ids.filter(pa.array(tagged)), "near_duplicate", score=pa.array(jaccard),
                         evidence=evidence, category="duplicate")

    def _amplification_tags(self, con, state: StateFiles, table: pa.Table) -> pa.Table:
        """Every member of each cluster that looks like a campaign of fresh domains (see the module docstring)."""
        o = self.options
        site = pc.coalesce(table.column("registered_domain"), table.column("domain"))
        members = table.select(["doc_id", "label", "fetched_at"]).append_column("site", site)
        stats = members.group_by("label").aggregate([("site", "count_distinct"), ("fetched_at", "min"),
                                                     ("fetched_at", "max")])
        span = pc.subtract(stats.column("fetched_at_max"), stats.column("fetched_at_min"))
        window = timedelta(days=o["amplification_window_days"])
        spread = pc.and_(pc.greater_equal(stats.column("site_count_distinct"), o["amplification_min_domains"]),
                         pc.less_equal(span, pa.scalar(window, pa.duration("us"))))
        stats = stats.filter(pc.fill_null(spread, False))
        if stats.num_rows == 0:
            return self.tags(pa.array([], pa.string()), "amplification")
        labels = stats.column("label")
        sites = members.filter(pc.is_in(members.column("label"), labels)).group_by(["label", "site"]).aggregate([])
        sites = sites.filter(pc.is_valid(sites.column("site")))
        first_seen = state.first_seen(con, pc.unique(sites.column("site")).to_pylist())
        per_label: dict[int, list[str]] = {}
        for lab, s in zip(sites.column("label").to_pylist(), sites.column("site").to_pylist()):
            per_label.setdefault(lab, []).append(s)
        new_window = timedelta(days=o["amplification_new_domain_days"])
        campaigns = {}
        for lab, start, end in zip(labels.to_pylist(), stats.column("fetched_at_min").to_pylist(),
                                   stats.column("fetched_at_max").to_pylist()):
            domains = sorted(per_label[lab])
            new = sum(first_seen[d] is not None and first_seen[d] >= start - new_window for d in domains)
            share = new / len(domains)
            if share >= o["amplification_new_share"]:
                campaigns[lab] = (share, {"n_registered_domains": len(domains), "domains": domains[:50],
                                          "first_seen": _iso(start), "last_seen": _iso(end),
                                          "span_hours": round((end - start).total_seconds() / 3600, 2),
                                          "new_domain_share": round(share, 4)})
        hit = members.filter(pc.is_in(members.column("label"), pa.array(list(campaigns), labels.type)))
        label_list = hit.column("label").to_pylist()
        # cluster_id: the kept (earliest) member, which is the first of its label in the sorted table.
        kept = {}
        for lab, doc in zip(label_list, hit.column("doc_id").to_pylist()):
            kept.setdefault(lab, doc)
        evidence = [json.dumps({"cluster_id": kept[lab], **campaigns[lab][1]}) for lab in label_list]
        return self.tags(hit.column("doc_id"), "amplification", score=[campaigns[lab][0] for lab in label_list],
                         evidence=evidence, category="poison")

    # ----- known texts ------------------------------------------------------------------------------
    def reference_signatures(self, files: list[str]) -> tuple[np.ndarray, list[str]]:
        """(signatures, ref_ids) of the texts of one reference set that have shingles."""
        o = self.options
        sigs, ref_ids = [], []
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["ref_id", "text"]):
                sig, has = signatures(batch.column("text"), o["shingle"], o["ngram"], o["num_perm"], o["seed"])
                sigs.append(sig[has])
                ref_ids += [r for r, h in zip(batch.column("ref_id").to_pylist(), has) if h]
        num_perm = o["num_perm"]
        return (np.concatenate(sigs) if sigs else np.zeros((0, num_perm), np.uint32)), ref_ids

    def _reference_tags(self, state: StateFiles, name: str, files: list[str]) -> pa.Table:
        """known_llm_text: documents whose best reference text of set ``name`` reaches reference_threshold."""
        o = self.options
        ref_sig, ref_ids = self.reference_signatures(files)
        empty = self.tags(pa.array([], pa.string()), "known_llm_text")
        if not ref_ids:
            return empty
        index = ReferenceIndex(ref_sig, o["reference_threshold"], o["fp_weight"], o["fn_weight"])
        found_docs, found_refs, found_j = [], [], []
        for _, batch in state.batches(["doc_id", "signature"]):
            present = pc.is_valid(batch.column("signature"))
            batch = batch.filter(present)
            if batch.num_rows == 0:
                continue
            doc, ref, jaccard = index.matches(_signature_matrix(batch.column("signature"), o["num_perm"]))
            found_docs.append(batch.column("doc_id").take(pa.array(doc)))
            found_refs.append(ref)
            found_j.append(jaccard)
        if not found_docs:
            return empty
        hits = pa.table({"doc_id": pa.concat_arrays(found_docs), "ref": np.concatenate(found_refs),
                         "jaccard": np.concatenate(found_j)})
        hits = hits.sort_by([("doc_id", "ascending"), ("jaccard", "descending"), ("ref", "ascending")])
        doc_ids = hits.column("doc_id").to_numpy(zero_copy_only=False)
        best = np.concatenate([[True], doc_ids[1:] != doc_ids[:-1]]) if len(doc_ids) else np.zeros(0, bool)
        hits = hits.filter(pa.array(best))
        evidence = [json.dumps({"reference": name, "ref_id": ref_ids[r], "jaccard": round(j, 4)})
                    for r, j in zip(hits.column("ref").to_pylist(), hits.column("jaccard").to_pylist())]
        return self.tags(hits.column("doc_id"), "known_llm_text", score=hits.column("jaccard"), evidence=evidence,
                         category="llm")


@provenance.hookimpl
def register_detectors(register):
    register(NearDuplicate)
