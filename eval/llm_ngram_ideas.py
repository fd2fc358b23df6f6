"""The experiments behind llm_ngram v3 (issue 14): each idea's macro AUROC and TPR at 1% FPR on the labelled dev
data, leave-one-dataset-out, and how much of it survives choosing among the ideas honestly.

Same data and protocol as eval/llm_detect.py (references minus every text sharing an 8-word run or a prompt with
the dev data; the dev texts near a reference removed; documents under 50 tokens score lowest, as the detector's
``min_tokens`` leaves them untagged), computed here without the runner so that many models can be compared:

- models: vocabulary size and order; modified Kneser-Ney (three discounts) instead of one discount per order;
  no case folding; word-shape classes for the words outside the vocabulary (capitalised/lower/number/symbol and
  a few suffixes: a cheap word-piece); scoring only the first 200 tokens of each document;
- statistics of one model pair: the centred LLR (v2), the Binoculars ratio, the LLM model's own surprisal
  centred (Fast-DetectGPT with one model), the spread of the centred LLR over the tokens (burstiness);
- combinations: a logistic fit on the held-out tenth of the references (zero-shot, what ``provenance train
  llm-ngram`` does for ``combined``), on the three other dev datasets (fitted inside each fold), or equal
  weights of the standardised features;
- nested selection: for each held-out dataset the candidate that is best on the other three, scored on it.

    .venv/bin/python eval/llm_ngram_ideas.py      # about 5 minutes on one core

Exit 0 (2 when ../shared is absent).
"""

from __future__ import annotations

import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_detect import near_reference  # noqa: E402
from metrics import auroc, tpr_at_fpr  # noqa: E402
from reference import DATA, LABELLED_DEV, LLM_DATA, read_labelled  # noqa: E402

from provenance.plugins import _ngram_lm as M  # noqa: E402
from provenance.plugins import llm_ngram  # noqa: E402
from provenance.plugins.near_duplicate import NearDuplicate  # noqa: E402

MIN_TOKENS = 50
TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")
SUFFIXES = ("ing", "ed", "ly", "tion", "s", "al", "er", "ic")


def shape(t: str) -> str:
    if t.isdigit():
        return "<num>"
    if not t[0].isalpha():
        return "<sym>"
    head = "<cap" if t[0].isupper() else "<low"
    return head + next((f"-{s}>" for s in SUFFIXES if t.lower().endswith(s)), ">")


class Corpus:
    """Token hashes (and word-shape hashes) of a list of texts, per tokenisation."""

    def __init__(self, texts: list[str]):
        self.texts, self.cache = texts, {}

    def get(self, fold_case: bool):
        if fold_case not in self.cache:
            h, s, lens = [], [], []
            for text in self.texts:
                toks = TOKEN.findall(text.lower() if fold_case else text)
                lens.append(len(toks))
                h.extend(zlib.crc32(t.encode()) for t in toks)
                s.extend(zlib.crc32(shape(t).encode()) for t in toks)
            self.cache[fold_case] = (np.asarray(h, np.uint64), np.asarray(s, np.uint64), np.asarray(lens, np.int64))
        return self.cache[fold_case]


class ShapeVocab(M.Vocabulary):
    def __init__(self, hashes, shapes):
        super().__init__(hashes)
        self.shapes = np.asarray(shapes, np.uint64)
        self.radix = len(self.hashes) + 2 + len(self.shapes)

    def ids2(self, h, s):
        pos, found = M._lookup(self.hashes, h)
        unk = M.UNK
        if len(self.shapes):
            sp, sf = M._lookup(self.shapes, s)
            unk = np.where(sf, len(self.hashes) + 2 + sp, M.UNK)
        return np.where(found, pos + 2, unk).astype(np.uint64)


def padded(vocab, h, s, lens, order, window=None):
    if window:
        starts = np.cumsum(lens) - lens
        keep = np.arange(len(h)) - np.repeat(starts, lens) < window
        h, s, lens = h[keep], s[keep], np.minimum(lens, window)
    pad = order - 1
    ids = np.full(len(h) + pad * len(lens), M.BOS, np.uint64)
    starts = np.cumsum(lens + pad) - lens
    where = np.arange(len(h)) + np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    ids[where] = vocab.ids2(h, s)
    real = np.zeros(len(ids), bool)
    real[where] = True
    return ids, real, lens


def level_modified_kn(keys, counts, r, min_count):
    """NgramLM._level with Chen & Goodman's three discounts (counts 1, 2, 3+)."""
    n = [(counts == k).sum() for k in (1, 2, 3, 4)]
    d3 = np.array([0.5, 0.5, 0.5])
    if all(n):
        y = n[0] / (n[0] + 2 * n[1])
        d3 = np.clip([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]], 0.05, None)
    d = np.where(counts == 1, d3[0], np.where(counts == 2, d3[1], d3[2]))
    ctx_keys, first, distinct = np.unique(keys // r, return_index=True, return_counts=True)
    total = np.add.reduceat(counts, first)
    discounted = np.maximum(counts - d, 0.0)
    keep = counts >= min_count
    pruned = np.add.reduceat(np.where(keep, 0.0, discounted), first)
    gamma = (np.add.reduceat(np.minimum(d, counts), first) + pruned) / total
    part = discounted / np.repeat(total, distinct)
    live = np.add.reduceat(keep.astype(np.int64), first) > 0
    return keys[keep], part[keep].astype(np.float32), ctx_keys[live], gamma[live].astype(np.float32)


def build(corpora, V=200, order=4, min_count=3, fold_case=True, shapes=False, modified_kn=False):
    hh, hs, hl = corpora["human"].get(fold_case)
    lh, ls, ll = corpora["llm"].get(fold_case)
    values, counts = np.unique(np.concatenate([hh, lh]), return_counts=True)
    vocab = ShapeVocab(np.sort(values[np.lexsort((values, -counts))[:V]]),
                       np.unique(np.concatenate([hs, ls])) if shapes else [])
    original = M.NgramLM._level
    M.NgramLM._level = staticmethod(level_modified_kn) if modified_kn else original
    try:
        models = [M.NgramLM.train(*padded(vocab, h, s, n, order)[:2], order, vocab.radix, min_count)
                  for h, s, n in ((hh, hs, hl), (lh, ls, ll))]
    finally:
        M.NgramLM._level = original
    return M.Artifact(vocab, *models, meta={"statistic": "centred_llr"})


def statistics(art, corpus, fold_case=True, window=None) -> dict[str, np.ndarray]:
    h, s, lens = corpus.get(fold_case)
    ids, real, lens = padded(art.vocab, h, s, lens, art.order, window)
    pos = np.flatnonzero(real)
    lp_l, lp_h = art.llm.logprob(ids, pos), art.human.logprob(ids, pos)
    ctx = M.contexts(ids, pos, art.order)
    doc = np.repeat(np.arange(len(lens)), lens)
    n = np.maximum(lens, 1)

    def mean(v):
        return np.bincount(doc, weights=v, minlength=len(lens)) / n

    llr = lp_l - lp_h
    centred = llr - M.expected_f(art, ctx, "llm", 1.0, -1.0)[0]
    own, _ = M.expected_f(art, ctx, "llm", 1.0, 0.0)
    cross, _ = M.expected_f(art, ctx, "human", -1.0, 0.0)
    out = {"n": lens, "mean_llr": mean(llr), "centred_llr": mean(centred),
           "binoculars": -mean(-lp_l) / np.maximum(mean(cross), 1e-12),
           "llm_surprisal_centred": mean(lp_l - own)}
    out["centred_std"] = np.sqrt(np.maximum(mean(centred ** 2) - out["centred_llr"] ** 2, 0))
    return out


def per_dataset(score, n, labels, datasets):
    s = np.where(n >= MIN_TOKENS, score, -np.inf)
    return {ds: (auroc(labels[m], s[m]), tpr_at_fpr(labels[m], s[m], 0.01))
            for ds in sorted(set(datasets)) for m in [datasets == ds]}


def line(name, per):
    a, t = np.mean([v[0] for v in per.values()]), np.mean([v[1] for v in per.values()])
    return (f"  {name:<58} macro AUROC {a:.3f}  TPR@1%FPR {t:.3f}   "
            + "  ".join(f"{ds} {v[0]:.3f}" for ds, v in per.items()))


def nested(cands: dict, sets) -> tuple[float, float, list]:
    """Each held-out dataset scored by the candidate with the best mean AUROC on the other three."""
    a, t, chosen = [], [], []
    for ds in sets:
        best = max(cands, key=lambda k: np.mean([cands[k][d][0] for d in sets if d != ds]))
        a.append(cands[best][ds][0])
        t.append(cands[best][ds][1])
        chosen.append(best)
    return float(np.mean(a)), float(np.mean(t)), chosen


def main() -> int:
    dev = read_labelled(LABELLED_DEV, "eval")
    if dev is None or not DATA.is_file() or not LLM_DATA.is_file():
        return 2
    t0 = time.time()
    hit = near_reference([r["text"] for r in dev], [DATA, LLM_DATA], NearDuplicate.options["reference_threshold"])
    dev = [r for r, h in zip(dev, hit) if not h]
    labels = np.array([r["label"] == 1 for r in dev])
    datasets = np.array([r["dataset"] for r in dev])
    sets = sorted(set(datasets))
    excluded: set[str] = set()
    for r in llm_ngram.read_records(LABELLED_DEV):
        excluded |= llm_ngram._shingles(r["text"])
    corpora, calib = {}, {}
    for kind, path in (("human", DATA), ("llm", LLM_DATA)):
        kept, _ = llm_ngram.drop_overlap(llm_ngram.read_records(path), excluded)
        corpora[kind] = Corpus([r["text"] for r in kept if not llm_ngram.held_out(r)])
        calib[kind] = [r["text"] for r in kept if llm_ngram.held_out(r)]
    corpora["calib"] = Corpus(calib["human"] + calib["llm"])
    corpora["dev"] = Corpus([r["text"] for r in dev])
    y_ref = np.r_[np.zeros(len(calib["human"])), np.ones(len(calib["llm"]))]
    print(f"{len(dev)} dev texts ({hit.sum()} near a reference removed); references "
          f"{len(corpora['human'].texts)} human, {len(corpora['llm'].texts)} LLM, {len(y_ref)} held out "
          f"({time.time() - t0:.0f} s)")

    feature_sets = [("centred_llr",), ("binoculars",), ("centred_llr", "centred_std"),
                    ("centred_llr", "binoculars"), ("centred_llr", "llm_surprisal_centred"),
                    ("centred_llr", "binoculars", "centred_std"),
                    ("centred_llr", "binoculars", "llm_surprisal_centred", "centred_std")]
    models = {"200 tokens, 4-gram (v2's models)": {}, "modified Kneser-Ney": {"modified_kn": True},
              "no case folding": {"fold_case": False}, "word shapes for rare words": {"shapes": True},
              "100 tokens, 4-gram": {"V": 100}, "500 tokens, 4-gram": {"V": 500}, "1000 tokens, 4-gram": {"V": 1000},
              "200 tokens, 3-gram": {"order": 3}, "200 tokens, 5-gram": {"order": 5},
              "100 tokens, 5-gram": {"V": 100, "order": 5}}
    cands = {}
    for name, cfg in models.items():
        t0 = time.time()
        art = build(corpora, **cfg)
        fc = cfg.get("fold_case", True)
        dev_s, ref_s = statistics(art, corpora["dev"], fc), statistics(art, corpora["calib"], fc)
        print(f"\n{name} (radix {art.vocab.radix}, {time.time() - t0:.0f} s)")
        for fs in feature_sets:
            X_ref = np.stack([ref_s[f] for f in fs], 1)
            b0, w = M.fit_combination(X_ref, y_ref)
            per = per_dataset(np.stack([dev_s[f] for f in fs], 1) @ w, dev_s["n"], labels, datasets)
            cands[(name, fs)] = per
            print(line(" + ".join(fs) + (" (reference fit)" if len(fs) > 1 else ""), per))
        if cfg:
            continue
        print(line("centred_llr on the first 200 tokens only",
                   per_dataset(statistics(art, corpora["dev"], True, 200)["centred_llr"], dev_s["n"], labels,
                               datasets)))
        for fs in feature_sets[2:]:
            X = np.stack([dev_s[f] for f in fs], 1)
            score = np.zeros(len(X))
            for ds in sets:  # fitted on the other three datasets, classes and datasets weighted equally
                train = (datasets != ds) & (dev_s["n"] >= MIN_TOKENS)
                weight = np.zeros(len(X))
                for other in (o for o in sets if o != ds):
                    for c in (False, True):
                        m = train & (datasets == other) & (labels == c)
                        weight[m] = 1.0 / m.sum()
                b0, w = M.fit_combination(X[train], labels[train], sample_weight=weight[train])
                score[datasets == ds] = X[datasets == ds] @ w
            print(line(" + ".join(fs) + " (fitted on the other three dev datasets)",
                       per_dataset(score, dev_s["n"], labels, datasets)))
            X_ref = np.stack([ref_s[f] for f in fs], 1)
            mu, sd = X_ref.mean(0), X_ref.std(0)
            sign = np.sign([auroc(y_ref.astype(bool), X_ref[:, j]) - 0.5 for j in range(len(fs))])
            print(line(" + ".join(fs) + " (equal weights, signs from the references)",
                       per_dataset(((X - mu) / sd * sign).sum(1), dev_s["n"], labels, datasets)))

    print("\nnested selection: the candidate best on the other three datasets scores the held-out one")
    v2 = "200 tokens, 4-gram (v2's models)"
    shipped = ("centred_llr", "binoculars", "centred_std")
    for label, keys in (
            ("every model x every statistic", list(cands)),
            ("the shipped statistic, model chosen in-fold", [k for k in cands if k[1] == shipped]),
            ("v2's models: v2's centred_llr or the shipped combination", [(v2, ("centred_llr",)), (v2, shipped)]),
            ("v2's models, combinations of 2+ features", [k for k in cands if k[0] == v2 and len(k[1]) > 1])):
        a, t, chosen = nested({k: cands[k] for k in keys}, sets)
        print(f"  {label:<58} macro AUROC {a:.3f}  TPR@1%FPR {t:.3f}   chose: "
              + "; ".join(f"{ds}: {c[0]} / {'+'.join(c[1])}" for ds, c in zip(sets, chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
