"""Near duplicates: MinHash signatures, LSH banding and clusters, all vectorised over Arrow batches.

Corpus-level. Each document's text becomes a set of shingles (word 5-grams by
default, or character n-grams), hashed to 32 bits and summarised by a MinHash
signature of ``num_perm`` values. Documents whose signatures agree on a whole
band of ``rows`` values become candidate pairs (LSH); a candidate pair is kept
when its estimated Jaccard similarity reaches ``threshold`` (``verify``); the
kept pairs are joined into clusters (connected components). In every cluster
of two or more documents the earliest one (by fetched_at, then doc_id) is the
one to keep and gets no tag; every other member is tagged ``near_duplicate``
with its estimated Jaccard similarity to the kept document as the score.

**Interoperable with datasketch.** For the same shingles, seed and num_perm,
the signature equals ``datasketch.MinHash(num_perm, seed,
hashfunc=shingle_hashfunc(kind)).hashvalues`` (datasketch's default
"affine32" permutation scheme) fed with ``shingles(text, ...)``, so signatures
can be loaded into ``MinHashLSH`` and friends. Bands x rows come from
datasketch's own ``_optimal_param`` for the threshold and weights.

The shingle hash is ours (datasketch's default, SHA-1, costs a Python call
per shingle): every token is hashed with 64-bit FNV-1a over its UTF-8 bytes
(once per distinct token of a batch, vectorised over the batch's token
dictionary), the n tokens of a shingle are folded with a multiply-add, and the
top 32 bits of the MurmurHash3 64-bit finalizer of that are the shingle hash.
``shingle_hash`` is the same function in plain Python.

Memory: one signature (4 x num_perm bytes) plus doc_id, fetched_at and domain
per document; no text is kept between batches. Candidate pairs are generated
band by band with a numpy sort, as "star" edges from each bucket's first
document to the others (linear in the bucket, not quadratic).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.detectors import DetectorError

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
               seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(MinHash signatures, one uint32 row of num_perm values per text; whether the text had any shingle).

    A text without shingles keeps datasketch's empty value (all 2**32 - 1).
    """
    hashes, per_text = shingle_hashes(texts, kind, ngram)
    a, b = permutations(num_perm, seed)
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


# ----- LSH and clusters ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def lsh_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising weighted false-positive and false-negative probability: datasketch's own choice."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, fp_weight, fn_weight)


def candidate_pairs(sig: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of signature rows that agree on at least one whole band, without duplicates.

    Per band: sort the band hashes, and link every member of a bucket to the
    bucket's first (lowest) row. Star edges keep memory linear in the bucket
    size; the clusters (connected components) are the same as with all pairs.
    """
    n = len(sig)
    left, right = [], []
    fold = _U64(_FOLD)
    for band in range(bands):
        acc = np.zeros(n, dtype=_U64)
        for col in sig[:, band * rows:(band + 1) * rows].T:
            acc = acc * fold + col.astype(_U64)
        key = _fmix(acc, _FMIX64, _U64)
        order = np.lexsort((np.arange(n), key))
        sorted_key = key[order]
        new_bucket = np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])
        leader = order[np.flatnonzero(new_bucket)][np.cumsum(new_bucket) - 1]
        member = ~new_bucket
        left.append(leader[member])
        right.append(order[member])
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.concatenate(left).astype(np.int64) * n + np.concatenate(right))
    return pairs // n, pairs % n


def estimated_jaccard(sig: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Share of equal signature values for each pair (left[k], right[k]): the MinHash estimate of Jaccard."""
    out = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), chunk):
        stop = start + chunk
        out[start:stop] = (sig[left[start:stop]] == sig[right[start:stop]]).mean(axis=1)
    return out


def exact_jaccard(sets: list[np.ndarray]):
    """A function of pairs (left, right) giving the exact Jaccard of the documents' shingle-hash sets."""
    def jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = np.empty(len(left), dtype=np.float64)
        for k, (i, j) in enumerate(zip(left.tolist(), right.tolist())):
            common = len(np.intersect1d(sets[i], sets[j], assume_unique=True))
            out[k] = common / (len(sets[i]) + len(sets[j]) - common)
        return out
    return jaccard


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes, given edges (left[k], right[k])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


class NearDuplicate(provenance.CorpusDetector):
    """Texts whose shingle sets overlap by Jaccard >= threshold: every cluster member except the earliest is tagged."""

    name = "near_duplicate"
    version = "1"
    category = "duplicate"
    needs = ("text", "fetched_at", "domain")
    options = {
        "threshold": 0.8,      # Jaccard similarity of shingle sets that makes two texts near duplicates
        "num_perm": 128,       # MinHash permutations (signature length)
        "seed": 1,             # permutation seed (datasketch's default)
        "shingle": "word",     # "word" (word n-grams) or "char" (character n-grams)
        "ngram": 5,            # tokens per shingle
        "verify": "estimate",  # keep candidate pairs whose Jaccard reaches threshold: "estimate" (from the
                               # signatures), "exact" (from stored shingle hashes; more memory) or "none"
        "fp_weight": 0.1,      # datasketch MinHashLSH weights: bands x rows minimise
        "fn_weight": 0.9,      #   fp_weight * P(false positive) + fn_weight * P(false negative); recall first,
                               #   since verification drops the extra candidates
    }

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
        if problems:
            raise DetectorError("detector near_duplicate: " + "; ".join(problems))
        return merged

    def __init__(self, **options):
        super().__init__(**options)
        self._meta: list[pa.Table] = []
        self._sigs: list[np.ndarray] = []
        self._sets: list[np.ndarray] = []  # verify="exact": each document's distinct shingle hashes, sorted

    def observe(self, batch: pa.RecordBatch) -> None:
        o = self.options
        sig, has_shingles = signatures(batch.column("text"), o["shingle"], o["ngram"], o["num_perm"], o["seed"])
        keep = pa.array(has_shingles)
        if o["verify"] == "exact":
            hashes, per_text = shingle_hashes(batch.column("text"), o["shingle"], o["ngram"])
            self._sets += [np.unique(part) for part in np.split(hashes, np.cumsum(per_text)[:-1]) if len(part)]
        # Plain (nullable) fields: the runner's batches of one run may differ in nullability (e.g. files read
        # with and without previous_* columns), and concat_tables refuses schemas that differ in it.
        columns = ["doc_id", "fetched_at", "domain"]
        self._meta.append(pa.Table.from_arrays([batch.column(c) for c in columns], names=columns).filter(keep))
        self._sigs.append(sig[has_shingles])

    def finish(self):
        if not self._sigs:
            return None
        o = self.options
        sig, docs = np.concatenate(self._sigs), pa.concat_tables(self._meta)
        self._sigs, self._meta = [], []
        bands, rows = lsh_bands(o["threshold"], o["num_perm"], o["fp_weight"], o["fn_weight"])
        left, right = candidate_pairs(sig, bands, rows)
        similarity = exact_jaccard(self._sets) if o["verify"] == "exact" else functools.partial(estimated_jaccard, sig)
        if o["verify"] != "none":
            close = similarity(left, right) >= o["threshold"]
            left, right = left[close], right[close]
        if len(left) == 0:
            return None
        label = components(len(sig), left, right)
        size = np.bincount(label)[label]
        members = np.flatnonzero(size > 1)
        # The kept document of each cluster: earliest fetched_at (nulls last), then doc_id.
        table = docs.take(pa.array(members)).append_column("label", pa.array(label[members])).append_column(
            "row", pa.array(members))
        table = table.sort_by([("label", "ascending"), ("fetched_at", "ascending"), ("doc_id", "ascending")])
        table_label = table.column("label").to_numpy()
        first = np.concatenate([[True], table_label[1:] != table_label[:-1]])
        kept_pos = np.flatnonzero(first)[np.cumsum(first) - 1]
        row = table.column("row").to_numpy()
        domains = table.group_by("label").aggregate([("domain", "count_distinct")])
        n_domains = dict(zip(domains.column("label").to_pylist(), domains.column("domain_count_distinct").to_pylist()))
        tagged = ~first
        jaccard = similarity(row[kept_pos][tagged], row[tagged])
        doc_ids = table.column("doc_id")
        cluster_id = doc_ids.take(pa.array(kept_pos[tagged]))
        cluster_size = np.bincount(label)[table_label[tagged]]
        domain_count = np.array([n_domains[lab] for lab in table_label[tagged]], dtype=np.int64)
        evidence = pc.binary_join_element_wise(
            '{"cluster_id": "', cluster_id, '", "cluster_size": ', pa.array(cluster_size).cast(pa.string()),
            ', "n_domains": ', pa.array(domain_count).cast(pa.string()),
            ', "jaccard": ', pa.array(np.round(jaccard, 4)).cast(pa.string()), "}", "")
        return self.tags(doc_ids.filter(pa.array(tagged)), "near_duplicate", score=pa.array(jaccard),
                         evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(NearDuplicate)
