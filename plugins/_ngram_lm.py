"""Word n-gram language models with interpolated Kneser-Ney smoothing, as numpy arrays (for ``llm_ngram``).

Tokens: the lower-cased text cut into runs of letters/digits and single other characters; each
token is identified by its CRC-32 (so an artifact holds no words, only hashes and counts). The
``max_vocab`` most frequent token hashes over both training corpora get ids 2.., every other
token is 0 (unknown) and 1 pads the start of a document. An n-gram is one integer in radix
``R = vocab + 2``, so lookups are ``np.searchsorted`` over sorted uint64 keys, for a whole batch
of documents at once.

Smoothing: interpolated Kneser-Ney (Chen & Goodman 1998) with one discount per order,
``D = n1 / (n1 + 2 n2)`` (0.5 where that is undefined, kept in [0.05, 0.95]); lower orders use continuation counts; the unigram level is the
continuation unigram with add-one smoothing over the vocabulary. Pruning drops n-grams (order >= 2)
seen fewer than ``min_count`` times *after* the totals are taken, and moves their discounted mass
into the context's back-off weight, so each distribution still sums to one. Per level an artifact
stores the n-gram keys with ``max(c - D, 0) / c(h)`` and the context keys with their back-off
weight ``gamma(h)``; the probability of a token is then computed order by order:
``p_n = part_n + gamma_n(h) * p_{n-1}`` (``p_n = p_{n-1}`` for an unseen context).

The document statistics (``STATISTICS``) are computed from both models in one pass; ``combined`` weighs three of
them with weights fitted on held-out references (``fit_combination``) and stored in the artifact's metadata.
Expectations over the whole vocabulary (``expected_f``: Fast-DetectGPT's analytic mean and variance, Binoculars'
cross-entropy) are exact and cost only the explicit n-grams of the contexts seen: outside the tokens a model
holds explicitly for a context, ``p_n = gamma_n(h) * p_{n-1}``, so the sum over the rest of the vocabulary is
the lower order's sum (computed once per distinct context) minus the explicit tokens' share.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from provenance.arrays import unique_sorted

FORMAT = "llm-ngram/1"
# The document statistic the calibration applies to (higher = more LLM-like). mean_llr: the mean per-token
# log P_llm - log P_human. centred_llr: the same minus, per token, its expectation over the whole vocabulary under
# P_llm (Fast-DetectGPT's analytic centring; dividing by the standard deviation as well lowered the macro AUROC).
# binoculars: minus the LLM model's log-perplexity over the cross-entropy of the human model's prediction under
# the LLM model (Binoculars' ratio with the human model as performer). eval/llm_detect.py --variants compares them.
# combined: a logistic combination of three of them, ``COMBINED_FEATURES`` (centred_llr, binoculars, and
# centred_std, the standard deviation over the document's tokens of the centred LLR: LLM text is more even),
# weighted by a logistic fit on held-out reference texts (``fit_combination``; the weights are in the artifact).
STATISTICS = ("mean_llr", "centred_llr", "binoculars", "combined")
COMBINED_FEATURES = ("centred_llr", "binoculars", "centred_std")
UNK, BOS = 0, 1
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_hashes(texts) -> tuple[np.ndarray, np.ndarray]:
    """CRC-32 of every token of every text, concatenated, and each text's token count."""
    hashes: list[int] = []
    lengths = np.empty(len(texts), np.int64)
    crc = zlib.crc32
    for i, text in enumerate(texts):
        toks = tokens(text or "")
        lengths[i] = len(toks)
        hashes.extend(crc(t.encode()) for t in toks)
    return np.asarray(hashes, np.uint64), lengths


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each key in ``sorted_keys`` and whether it is there."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == keys


class Vocabulary:
    """Token hash -> id (0 unknown, 1 start pad, 2.. the kept hashes in sorted order)."""

    def __init__(self, hashes: np.ndarray):
        self.hashes = np.asarray(hashes, np.uint64)  # sorted
        self.radix = len(self.hashes) + 2

    @classmethod
    def build(cls, corpora_hashes: list[np.ndarray], max_vocab: int) -> "Vocabulary":
        values, counts = np.unique(np.concatenate(corpora_hashes), return_counts=True)
        # most frequent first; ties by hash value, so the choice is reproducible
        order = np.lexsort((values, -counts))[:max_vocab]
        return cls(np.sort(values[order]))

    def ids(self, hashes: np.ndarray) -> np.ndarray:
        pos, found = _lookup(self.hashes, hashes)
        return np.where(found, pos + 2, UNK).astype(np.uint64)


def padded_ids(vocab: Vocabulary, hashes: np.ndarray, lengths: np.ndarray, order: int):
    """Ids of all texts, each preceded by ``order - 1`` start pads; and where the real tokens are."""
    pad = order - 1
    total = len(hashes) + pad * len(lengths)
    ids = np.full(total, BOS, np.uint64)
    starts = np.cumsum(lengths + pad) - lengths  # index of each text's first real token
    real = np.zeros(total, bool)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    where = np.arange(len(hashes)) + offsets
    ids[where] = vocab.ids(hashes)
    real[where] = True
    return ids, real


def ngram_keys(ids: np.ndarray, positions: np.ndarray, n: int, radix: int) -> np.ndarray:
    """The n-gram ending at each position, as one integer in radix ``radix``."""
    key = np.zeros(len(positions), np.uint64)
    r = np.uint64(radix)
    for j in range(n - 1, -1, -1):
        key = key * r + ids[positions - j]
    return key


class NgramLM:
    """One interpolated Kneser-Ney model: per order n >= 2 (keys, part) and (context keys, gamma); unigram probs."""

    def __init__(self, order: int, radix: int, unigram: np.ndarray, levels: list[tuple]):
        self.order, self.radix = order, radix
        self.unigram = unigram  # float32 [radix]
        self.levels = levels  # for n = 2..order: (keys, part, ctx_keys, gamma)

    @classmethod
    def train(cls, ids: np.ndarray, real: np.ndarray, order: int, radix: int, min_count: int) -> "NgramLM":
        positions = np.flatnonzero(real)
        keys, counts = np.unique(ngram_keys(ids, positions, order, radix), return_counts=True)
        r = np.uint64(radix)
        levels = []
        for n in range(order, 1, -1):
            levels.append(cls._level(keys, counts.astype(np.float64), r, min_count))
            # continuation counts of the (n-1)-gram suffixes: how many distinct words precede each
            keys, counts = np.unique(keys % r ** np.uint64(n - 1), return_counts=True)
        unigram = np.ones(radix, np.float64)
        np.add.at(unigram, keys.astype(np.int64), counts)
        unigram[BOS] = 0.0  # never predicted
        unigram /= unigram.sum()
        return cls(order, radix, unigram.astype(np.float32), levels[::-1])

    @staticmethod
    def _level(keys, counts, r, min_count):
        n1, n2 = (counts == 1).sum(), (counts == 2).sum()
        # Chen & Goodman's estimate needs singletons and doubletons; without them (tiny corpora) 0.5, and never
        # 0 or 1, which would leave an unseen word in a seen context probability 0 or the n-gram none of its own
        d = float(np.clip(n1 / (n1 + 2 * n2), 0.05, 0.95)) if n1 and n2 else 0.5
        ctx = keys // r
        # keys are sorted, so each context's n-grams are one run
        ctx_keys, first, distinct = np.unique(ctx, return_index=True, return_counts=True)
        total = np.add.reduceat(counts, first)
        discounted = np.maximum(counts - d, 0.0)
        keep = counts >= min_count
        pruned = np.add.reduceat(np.where(keep, 0.0, discounted), first)
        gamma = (d * distinct + pruned) / total
        part = discounted / np.repeat(total, distinct)
        # A context whose n-grams were all pruned has gamma 1 and no own mass: exactly an unseen context, so it
        # is left out (most contexts of the highest order: this halves the artifact).
        live = np.add.reduceat(keep.astype(np.int64), first) > 0
        return keys[keep], part[keep].astype(np.float32), ctx_keys[live], gamma[live].astype(np.float32)

    def logprob(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Natural-log probability of the token at each position given the ``order - 1`` before it."""
        p = self.unigram[ids[positions].astype(np.int64)].astype(np.float64)
        r = np.uint64(self.radix)
        for n, (keys, part, ctx_keys, gamma) in enumerate(self.levels, start=2):
            key = ngram_keys(ids, positions, n, self.radix)
            pos, found = _lookup(keys, key)
            cpos, cfound = _lookup(ctx_keys, key // r)
            own = np.where(found, part[pos], 0.0) if len(part) else 0.0  # every n-gram may have been pruned
            p = np.where(cfound, own + gamma[cpos] * p, p) if len(gamma) else p
        return np.log(p)

    def arrays(self, prefix: str) -> dict:
        out = {f"{prefix}unigram": self.unigram}
        for n, (keys, part, ctx_keys, gamma) in enumerate(self.levels, start=2):
            out.update({f"{prefix}{n}_keys": keys, f"{prefix}{n}_part": part,
                        f"{prefix}{n}_ctx": ctx_keys, f"{prefix}{n}_gamma": gamma})
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str, order: int, radix: int) -> "NgramLM":
        levels = [tuple(arrays[f"{prefix}{n}_{k}"] for k in ("keys", "part", "ctx", "gamma"))
                  for n in range(2, order + 1)]
        return cls(order, radix, arrays[f"{prefix}unigram"], levels)


class Artifact:
    """A vocabulary, a human LM, an LLM LM, the statistic's weights (combined) and its logistic calibration;
    saved as one .npz."""

    def __init__(self, vocab: Vocabulary, human: NgramLM, llm: NgramLM, calibration=(0.0, 1.0), meta=None):
        self.vocab, self.human, self.llm = vocab, human, llm
        self.order = human.order
        self.calibration = tuple(float(x) for x in calibration)  # (a, b): score = sigmoid(a + b * statistic)
        self.meta = dict(meta or {})
        self.statistic = self.meta.get("statistic", "mean_llr")  # artifacts before it was recorded: mean_llr
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown llm-ngram statistic {self.statistic!r}; one of {list(STATISTICS)}")
        # combined: statistic = weights . (centred_llr, binoculars, centred_std); the intercept is in calibration
        self.weights = np.asarray(self.meta.get("weights", [1.0, 0.0, 0.0]), np.float64)
        if self.statistic == "combined" and self.weights.shape != (len(COMBINED_FEATURES),):
            raise ValueError(f"a combined llm-ngram artifact needs {len(COMBINED_FEATURES)} weights")
        self.sha256 = ""

    @classmethod
    def train(cls, human_texts, llm_texts, order: int = 3, max_vocab: int = 50000, min_count: int = 2,
              meta=None, statistic: str = "centred_llr") -> "Artifact":
        if order < 1 or (max_vocab + 2) ** order >= 2 ** 63:
            raise ValueError(f"order {order} with vocabulary {max_vocab} does not fit 64-bit n-gram keys")
        h_hashes, h_len = token_hashes(human_texts)
        l_hashes, l_len = token_hashes(llm_texts)
        vocab = Vocabulary.build([h_hashes, l_hashes], max_vocab)
        models = []
        for hashes, lengths in ((h_hashes, h_len), (l_hashes, l_len)):
            ids, real = padded_ids(vocab, hashes, lengths, order)
            models.append(NgramLM.train(ids, real, order, vocab.radix, min_count))
        return cls(vocab, *models, meta={**(meta or {}), "statistic": statistic, "order": order,
                                           "max_vocab": max_vocab,
                                           "min_count": min_count, "human_texts": len(h_len),
                                           "llm_texts": len(l_len), "human_tokens": int(h_len.sum()),
                                           "llm_tokens": int(l_len.sum())})

    def token_llr(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Per-token log P_llm - log P_human for all texts concatenated, and each text's token count."""
        hashes, lengths = token_hashes(texts)
        ids, real = padded_ids(self.vocab, hashes, lengths, self.order)
        positions = np.flatnonzero(real)
        return self.llm.logprob(ids, positions) - self.human.logprob(ids, positions), lengths

    def doc_stats(self, texts, statistics=None) -> dict[str, np.ndarray]:
        """Per text: ``statistic`` (the artifact's: see ``STATISTICS``), its parts (``mean_llr``, the mean token
        LLR, always; ``expected_llr`` and ``centred_llr`` for centred_llr, its mean expectation under the LLM model
        and the difference; ``log_ppl``, ``cross_entropy`` and ``binoculars`` for binoculars; all of these and
        ``centred_std`` for combined), ``z`` (the mean of the per-token difference behind the statistic over
        its standard error: how sure its sign is) and ``n_tokens``. ``statistics``: compute the parts of these
        statistics too (the artifact's own always)."""
        wanted = {self.statistic, *(statistics or ())}
        if "combined" in wanted:
            wanted |= {"centred_llr", "binoculars"}
        hashes, lengths = token_hashes(texts)
        ids, real = padded_ids(self.vocab, hashes, lengths, self.order)
        positions = np.flatnonzero(real)
        lp_llm = self.llm.logprob(ids, positions)
        llr = lp_llm - self.human.logprob(ids, positions)
        doc = np.repeat(np.arange(len(lengths)), lengths)
        n = np.maximum(lengths, 1)
        ctx = contexts(ids, positions, self.order) if wanted - {"mean_llr"} else None

        def mean_of(v):
            return np.bincount(doc, weights=v, minlength=len(lengths)) / n

        out = {"mean_llr": mean_of(llr)}
        per_token = {"mean_llr": llr}
        if "centred_llr" in wanted:
            expected, _ = expected_f(self, ctx, "llm", 1.0, -1.0)
            per_token["centred_llr"] = llr - expected
            out["expected_llr"] = mean_of(expected)
            out["centred_llr"] = mean_of(per_token["centred_llr"])
            out["centred_std"] = np.sqrt(np.maximum(mean_of(per_token["centred_llr"] ** 2)
                                                    - out["centred_llr"] ** 2, 0.0))
        if "binoculars" in wanted:
            cross, _ = expected_f(self, ctx, "human", -1.0, 0.0)
            per_token["binoculars"] = cross + lp_llm  # below the expected surprisal: LLM-like
            out["log_ppl"], out["cross_entropy"] = mean_of(-lp_llm), mean_of(cross)
            out["binoculars"] = -out["log_ppl"] / np.maximum(out["cross_entropy"], 1e-12)
            out["binoculars"][lengths == 0] = 0.0
        if self.statistic == "combined":
            out["combined"] = np.stack([out[f] for f in COMBINED_FEATURES], axis=1) @ self.weights
            out["combined"][lengths == 0] = 0.0
        out["statistic"] = out[self.statistic]
        # z of the per-token values behind the statistic (combined: the centred LLR's, its main part)
        token = per_token["centred_llr" if self.statistic == "combined" else self.statistic]
        mean = mean_of(token)
        var = mean_of(token ** 2) - mean ** 2
        out["z"] = mean / np.sqrt(np.maximum(var, 1e-12) / n)
        out["n_tokens"] = lengths
        return out

    def features(self, texts) -> np.ndarray:
        """The ``COMBINED_FEATURES`` of each text, as rows."""
        stats = self.doc_stats(texts, ("centred_llr", "binoculars"))
        return np.stack([stats[f] for f in COMBINED_FEATURES], axis=1)

    def score(self, statistic: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a + b * statistic)))

    def save(self, path) -> str:
        arrays = {"vocab": self.vocab.hashes, "calibration": np.asarray(self.calibration, np.float64),
                  **self.human.arrays("human_"), **self.llm.arrays("llm_")}
        meta = {**self.meta, "format": FORMAT, "order": self.order, "radix": self.vocab.radix}
        arrays["meta"] = np.frombuffer(_json_dumps(meta).encode(), np.uint8)
        buffer = io.BytesIO()
        # np.savez_compressed stamps the time into the zip; a fixed date makes the same model the same bytes
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)
        data = buffer.getvalue()
        Path(path).write_bytes(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        return self.sha256

    @classmethod
    def load(cls, path) -> "Artifact":
        data = Path(path).read_bytes()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        import json
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not an llm-ngram artifact (format {meta.get('format')!r}, want {FORMAT!r})")
        vocab = Vocabulary(arrays["vocab"])
        order = meta["order"]
        art = cls(vocab, NgramLM.from_arrays(arrays, "human_", order, vocab.radix),
                  NgramLM.from_arrays(arrays, "llm_", order, vocab.radix), arrays["calibration"], meta)
        art.sha256 = hashlib.sha256(data).hexdigest()
        return art


def _json_dumps(obj) -> str:
    import json
    return json.dumps(obj, sort_keys=True)


def fit_logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """(a, b) of P(y=1|x) = sigmoid(a + b x) by Newton's method, classes weighted equally (a prior of 1/2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    X = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-X @ beta))
        grad = X.T @ (w * (y - p))
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def fit_combination(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 50,
                    sample_weight: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(intercept, weights) of P(y=1|x) = sigmoid(intercept + weights . x) by Newton's method, classes weighted
    equally (or rows by ``sample_weight``), with an L2 penalty ``l2`` on the weights of the standardised
    features (the total weight is 1, so 1e-3 is mild: it only keeps the fit finite when the held-out texts are
    separable). Weights on the raw features."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-12
    Z = np.c_[np.ones(len(X)), (X - mu) / sd]
    if sample_weight is None:
        w = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1))
    else:
        w = np.asarray(sample_weight, float) / np.sum(sample_weight)
    penalty = l2 * np.diag(np.r_[0.0, np.ones(X.shape[1])])
    beta = np.zeros(Z.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-Z @ beta))
        grad = Z.T @ (w * (y - p)) - penalty @ beta
        hess = (Z * (w * p * (1 - p))[:, None]).T @ Z + penalty + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    weights = beta[1:] / sd
    return float(beta[0] - weights @ mu), weights


# ----- expectations under a model's own predictive distribution (Fast-DetectGPT, Binoculars) --------------
def _combine(columns: list[np.ndarray], radix: int) -> np.ndarray:
    key = np.zeros(len(columns[0]), np.uint64)
    for col in columns:
        key = key * np.uint64(radix) + col
    return key


def _level_probs(lm: NgramLM, ctx: np.ndarray, x: np.ndarray, upto: int) -> np.ndarray:
    """P(x | context) at order ``upto`` for rows of context ids ``ctx`` (shape (m, order - 1), last column the
    previous token): ``logprob``'s recursion over explicit columns instead of a padded text."""
    p = lm.unigram[x.astype(np.int64)].astype(np.float64)
    for n, (keys, part, ctx_keys, gamma) in enumerate(lm.levels[:upto - 1], start=2):
        cols = [ctx[:, -(n - 1) + j] for j in range(n - 1)]
        ckey = _combine(cols, lm.radix)
        pos, found = _lookup(keys, _combine(cols + [x], lm.radix))
        cpos, cfound = _lookup(ctx_keys, ckey)
        own = np.where(found, part[pos], 0.0) if len(part) else 0.0
        p = np.where(cfound, own + gamma[cpos] * p, p) if len(gamma) else p
    return p


def _gamma(lm: NgramLM, n: int, ckey: np.ndarray) -> np.ndarray:
    """Back-off weight of each order-``n`` context key (1 for a context the model does not hold)."""
    _, _, ctx_keys, gamma = lm.levels[n - 2]
    if len(ctx_keys) == 0:
        return np.ones(len(ckey))
    cpos, cfound = _lookup(ctx_keys, ckey)
    return np.where(cfound, gamma[cpos], 1.0)


def _continuations(lms, n: int, ckey: np.ndarray, radix: int) -> tuple[np.ndarray, np.ndarray]:
    """(index into ``ckey``, token) of every order-``n`` n-gram either model holds explicitly for the
    contexts ``ckey`` (distinct pairs)."""
    owners, tokens_ = [], []
    r = np.uint64(radix)
    for lm in lms:
        keys = lm.levels[n - 2][0]
        lo, hi = np.searchsorted(keys, ckey * r), np.searchsorted(keys, (ckey + np.uint64(1)) * r)
        count = hi - lo
        idx = np.repeat(np.arange(len(ckey)), count)
        start = np.repeat(lo, count) + np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        owners.append(idx)
        tokens_.append(keys[start] % r)
    pairs = unique_sorted(np.concatenate(owners).astype(np.uint64) * r + np.concatenate(tokens_))
    return (pairs // r).astype(np.int64), pairs % r


def expected_f(art: "Artifact", ctx: np.ndarray, q: str, alpha: float, beta: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """For each context row (the ``order - 1`` ids before a position): the mean and second moment of
    ``f(x) = alpha log P_llm(x|h) + beta log P_human(x|h)`` over the whole vocabulary, x drawn from model ``q``
    ('llm' or 'human'). Exact for interpolated Kneser-Ney: outside the n-grams a model holds explicitly for a
    context, both models are their back-off weight times the lower order, so the sum over the rest of the
    vocabulary is the lower order's (cached) sum minus the explicit tokens' share; cost is the explicit
    n-grams of the contexts seen, not the vocabulary size."""
    models = {"llm": art.llm, "human": art.human}
    lq = models[q]
    radix, order = art.vocab.radix, art.order

    def f_of(p_l, p_h):
        return alpha * np.log(p_l) + beta * np.log(p_h)

    # order 1: every token but the start pad
    real = np.ones(radix, bool)
    real[BOS] = False
    u_l, u_h, u_q = (m.unigram.astype(np.float64) for m in (art.llm, art.human, lq))
    d1 = f_of(np.where(real, u_l, 1.0), np.where(real, u_h, 1.0))
    mean, second = float((u_q * d1)[real].sum()), float((u_q * d1 ** 2)[real].sum())
    mean = np.full(len(ctx), mean)
    second = np.full(len(ctx), second)
    for n in range(2, order + 1):
        # the distinct order-n contexts of the rows, and each one's explicit continuations
        ckey_rows = _combine([ctx[:, -(n - 1) + j] for j in range(n - 1)], radix)
        ckey, inverse = np.unique(ckey_rows, return_inverse=True)
        lower_mean = np.zeros(len(ckey))
        lower_second = np.zeros(len(ckey))
        np.put(lower_mean, inverse, mean)  # every row of a context has the same lower-order sums
        np.put(lower_second, inverse, second)
        first_row = np.zeros(len(ckey), np.int64)
        np.put(first_row, inverse, np.arange(len(ctx)))
        owner, x = _continuations((art.llm, art.human), n, ckey, radix)
        cctx = ctx[first_row[owner]]
        p_l, p_h = _level_probs(art.llm, cctx, x, n), _level_probs(art.human, cctx, x, n)
        pl_low, ph_low = _level_probs(art.llm, cctx, x, n - 1), _level_probs(art.human, cctx, x, n - 1)
        pq, pq_low = (p_l, pl_low) if q == "llm" else (p_h, ph_low)
        f, f_low = f_of(p_l, p_h), f_of(pl_low, ph_low)
        g_l, g_h = _gamma(art.llm, n, ckey), _gamma(art.human, n, ckey)
        g_q = g_l if q == "llm" else g_h
        c = alpha * np.log(g_l) + beta * np.log(g_h)
        k = len(ckey)
        s_exp = np.bincount(owner, pq * f, k)              # explicit tokens at this order
        s_exp2 = np.bincount(owner, pq * f ** 2, k)
        s_low = np.bincount(owner, pq_low, k)              # the same tokens' lower-order share ...
        s_low_f = np.bincount(owner, pq_low * f_low, k)
        s_low_f2 = np.bincount(owner, pq_low * f_low ** 2, k)
        # ... taken out of the lower order's sums; elsewhere f = c + f_low and P_q = g_q P_q,low
        rest = 1.0 - s_low
        m_rest = lower_mean - s_low_f
        sq_rest = lower_second - s_low_f2
        mean_c = s_exp + g_q * (c * rest + m_rest)
        second_c = s_exp2 + g_q * (c ** 2 * rest + 2 * c * m_rest + sq_rest)
        mean, second = mean_c[inverse], second_c[inverse]
    return mean, second


def contexts(ids: np.ndarray, positions: np.ndarray, order: int) -> np.ndarray:
    """The ``order - 1`` ids before each position, as rows."""
    return np.stack([ids[positions - j] for j in range(order - 1, 0, -1)], axis=1) if order > 1 \
        else np.zeros((len(positions), 0), np.uint64)

