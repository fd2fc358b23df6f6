"""The signature stage of near_duplicate as one compiled pass (numba): tokens, shingle hashes and MinHash together.

Same arithmetic as the vectorised numpy path in ``near_duplicate`` (tokens:
maximal runs of letters and digits of the lower-cased text; token hash: 64-bit
FNV-1a of its UTF-8 bytes; shingle: the n token hashes folded by multiply-add,
MurmurHash3's 64-bit finalizer, top 32 bits; datasketch's affine32
permutations), so its signatures are equal value for value: a test asserts
it. The numpy path stays the reference and serves what this one does not
(shingle hash lists for exact verification, character shingles).

Why compiled: the numpy path makes about fifteen passes over every token and
shingle, each through memory; this one reads each byte once and keeps the
token window and the signature row in registers and cache. Compiled once per
machine (``cache=True`` keeps the machine code beside this file, or under
NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:  # numba is a dependency; a broken install still leaves the numpy path working
    import numba
except ImportError:  # pragma: no cover
    numba = None

_WORD_CLASS = r"^[\p{L}\p{N}]$"  # what near_duplicate.WORD_SEPARATORS splits on, one character at a time


@functools.lru_cache(maxsize=1)
def word_code_points() -> np.ndarray:
    """A bool per Unicode code point: a letter or digit, classified by the same regex engine (RE2, in Arrow)
    that splits the numpy path's tokens, so both paths cut tokens at exactly the same characters."""
    points = np.arange(0x110000, dtype=np.uint32)
    points = points[(points < 0xD800) | (points > 0xDFFF)]  # surrogates are not characters
    utf8 = points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
    widths = np.select([points < 0x80, points < 0x800, points < 0x10000], [1, 2, 3], 4).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    singles = pa.LargeStringArray.from_buffers(len(points), pa.py_buffer(offsets), pa.py_buffer(utf8))
    table = np.zeros(0x110000, dtype=np.bool_)
    table[points] = pc.match_substring_regex(singles, _WORD_CLASS).to_numpy(zero_copy_only=False)
    return table


if numba is not None:
    @numba.njit(cache=True, nogil=True)
    def _fmix64(h):
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
        return h

    @numba.njit(cache=True, nogil=True)
    def _fmix32(h):
        # In 64-bit arithmetic (numba widens uint32 products), cut back to 32 bits after each multiply.
        mask = np.uint64(0xFFFFFFFF)
        h = np.uint64(h)
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x85EBCA6B)) & mask
        h ^= h >> np.uint64(13)
        h = (h * np.uint64(0xC2B2AE35)) & mask
        h ^= h >> np.uint64(16)
        return h

    @numba.njit(cache=True, nogil=True)
    def _add_shingle(window, start, count, ngram, a, b, row):
        """Fold tokens window[start .. start+count) (a ring of size ngram) into a shingle; min it into row."""
        acc = np.uint64(0)
        fold = np.uint64(0x9E3779B97F4A7C15)
        for j in range(count):
            acc = acc * fold + window[(start + j) % ngram]
        mixed = _fmix32(_fmix64(acc) >> np.uint64(32))
        mask = np.uint64(0xFFFFFFFF)
        for p in range(row.shape[0]):
            v = np.uint32((mixed * np.uint64(a[p]) + np.uint64(b[p])) & mask)  # datasketch's "mod 2**32"
            if v < row[p]:
                row[p] = v

    @numba.njit(cache=True, nogil=True)
    def _signatures(data, offsets, is_word, ngram, a, b, sig, has):
        fnv_offset = np.uint64(0xCBF29CE484222325)
        fnv_prime = np.uint64(0x100000001B3)
        window = np.zeros(ngram, dtype=np.uint64)
        for t in range(offsets.shape[0] - 1):
            row = sig[t]
            pos, end = offsets[t], offsets[t + 1]
            tokens = 0  # tokens finished in this text
            in_word = False
            h = fnv_offset
            while pos <= end:
                word = False
                width = 1
                if pos < end:
                    c = np.uint32(data[pos])
                    if c < 0x80:
                        cp = c
                    elif c < 0xE0:
                        width = 2
                        cp = ((c & np.uint32(0x1F)) << np.uint32(6)) | (np.uint32(data[pos + 1]) & np.uint32(0x3F))
                    elif c < 0xF0:
                        width = 3
                        cp = (((c & np.uint32(0x0F)) << np.uint32(12))
                              | ((np.uint32(data[pos + 1]) & np.uint32(0x3F)) << np.uint32(6))
                              | (np.uint32(data[pos + 2]) & np.uint32(0x3F)))
                    else:
                        width = 4
                        cp = (((c & np.uint32(0x07)) << np.uint32(18))
                              | ((np.uint32(data[pos + 1]) & np.uint32(0x3F)) << np.uint32(12))
                              | ((np.uint32(data[pos + 2]) & np.uint32(0x3F)) << np.uint32(6))
                              | (np.uint32(data[pos + 3]) & np.uint32(0x3F)))
                    word = is_word[cp]
                if word:
                    for k in range(width):
                        h = (h ^ np.uint64(data[pos + k])) * fnv_prime
                    in_word = True
                elif in_word:  # a token ends: into the window; a full window is a shingle
                    window[tokens % ngram] = h
                    tokens += 1
                    if tokens >= ngram:
                        _add_shingle(window, tokens - ngram, ngram, ngram, a, b, row)
                    h = fnv_offset
                    in_word = False
                pos += width
            if 0 < tokens < ngram:  # a short text: one shingle of all its tokens
                _add_shingle(window, 0, tokens, ngram, a, b, row)
            has[t] = tokens > 0


def available() -> bool:
    return numba is not None


def word_signatures(lowered: pa.Array, ngram: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, has shingles) of already lower-cased texts (no nulls), word shingles."""
    lowered = lowered.cast(pa.large_string())
    n = len(lowered)
    offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int64)[lowered.offset:lowered.offset + n + 1]
    data = np.frombuffer(lowered.buffers()[2], dtype=np.uint8) if lowered.buffers()[2] else np.zeros(1, np.uint8)
    sig = np.full((n, len(a)), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    has = np.zeros(n, dtype=np.bool_)
    _signatures(data, offsets, word_code_points(), ngram, a, b, sig, has)
    return sig, has
