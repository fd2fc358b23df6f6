"""Does any cheap zero-shot CPU signal add to ``llm_ngram``? (issue 14: "the ensemble ahead of every single
detector".) Each candidate's AUROC per dev dataset alone, and with ``llm_ngram``'s v3 statistic under several
combination rules, leave-one-dataset-out.

Same data and protocol as eval/llm_detect.py and eval/llm_ngram_ideas.py: the labelled dev data minus the texts
near a reference; the references minus every text sharing an 8-word run or a prompt with the dev data; documents
under 50 tokens rank lowest (``llm_ngram``'s ``min_tokens``). Candidates are computed from the references only
(the texts the shipped model was trained on for primes and profiles, its held-out tenth for signs and fits):

- ``zlib_delta``: ZipPy-style compression. Each text is compressed by zlib (level 9) with a preset dictionary of
  32 KB of LLM reference text and with one of human reference text (the training texts, shuffled with a fixed
  seed); the score is the human-primed size minus the LLM-primed size, per byte of text (higher: the text
  shares more with the LLM prime). ``zlib_delta4``: the mean over four such prime pairs.
- ``self_compress``: the text's own zlib ratio (compressed over raw; repetitive text compresses better).
- burstiness: ``sent_cv`` (the coefficient of variation of sentence lengths in words), ``sent_mean``; ``ttr``,
  the mean type-token ratio over 50-word windows.
- perplexity variance: ``ppl_window_std``, the standard deviation over 25-token windows of the LLM model's mean
  surprisal (GPTZero's "burstiness" with the n-gram model); ``llr_window_std``, the same of the centred LLR.
- profiles: ``punct_llr``, a multinomial log-likelihood ratio of the text's punctuation characters under the
  LLM and the human references' punctuation distributions (add-one), per character of punctuation;
  ``fw_rate_llr``, the same over a document's rate of each of the 50 most frequent words, as a Poisson LLR.

The sign of each candidate (which way is LLM) is decided on the held-out references. Combination rules with
``llm_ngram``'s ``combined`` statistic (``v3``): a logistic fit on the held-out references (zero-shot, as
``provenance train llm-ngram`` fits ``combined``); a logistic fit on the three other dev datasets inside each
fold; equal weights of the reference-standardised features; and a noisy-or of the two calibrated probabilities
(what ``doc_flags.llm_score`` does with two tagging detectors). Then nested selection: the candidate and rule
best on the other three datasets score the fourth (over every rule, and within each rule), with group-bootstrap
intervals of the gain over v3 for the combinations that looked best. Then the share of human student essays
(fairness) and human texts each candidate flags at the threshold for 1% FPR on the held-out human references; and
``llm_ngram``'s ``min_score`` for the v3 score: the shipped value and the rules that could choose it, each chosen
without the dataset it is scored on. Speed: documents per second of CPU time of each family, in one process.

Result (README, "Other CPU signals"): no candidate adds information that survives an honest choice; nothing of
this is shipped.

    .venv/bin/python eval/llm_signals.py [--cache /tmp/llm_signals.pkl] [--more]   # about 3 minutes on one core

Exit 0 (2 when ../shared is absent).
"""

from __future__ import annotations

import argparse
import pickle
import random
import re
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_detect import near_reference  # noqa: E402
from metrics import tpr_at_fpr  # noqa: E402
from reference import DATA, LABELLED_DEV, LLM_DATA, read_labelled  # noqa: E402

from provenance.plugins import _ngram_lm as M  # noqa: E402
from provenance.plugins import llm_ngram  # noqa: E402
from provenance.plugins.near_duplicate import NearDuplicate  # noqa: E402

MIN_TOKENS = 50
PRIME_BYTES = 32768
SENT = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[^\W_]+")
PUNCT = re.compile(r"[^\w\s]")
WINDOW = 25
FAIRNESS = 0.03


def fast_auroc(labels, scores) -> float:
    labels = np.asarray(labels, bool)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


# ----- data ----------------------------------------------------------------------------------------------
def load(cache: Path | None):
    if cache and cache.is_file():
        return pickle.loads(cache.read_bytes())
    dev = read_labelled(LABELLED_DEV, "eval")
    if dev is None or not DATA.is_file() or not LLM_DATA.is_file():
        return None
    hit = near_reference([r["text"] for r in dev], [DATA, LLM_DATA], NearDuplicate.options["reference_threshold"])
    dev = [r for r, h in zip(dev, hit) if not h]
    excluded: set[str] = set()
    for r in llm_ngram.read_records(LABELLED_DEV):
        excluded |= llm_ngram._shingles(r["text"])
    refs = {}
    for kind, path in (("human", DATA), ("llm", LLM_DATA)):
        kept, _ = llm_ngram.drop_overlap(llm_ngram.read_records(path), excluded)
        refs[kind] = ([r["text"] for r in kept if not llm_ngram.held_out(r)],
                      [r["text"] for r in kept if llm_ngram.held_out(r)])
    data = {"dev": dev, "refs": refs, "removed": int(hit.sum())}
    if cache:
        cache.write_bytes(pickle.dumps(data))
    return data


# ----- candidates ----------------------------------------------------------------------------------------
def primes(texts: list[str], k: int, seed: int) -> list[bytes]:
    """``k`` dictionaries of PRIME_BYTES each, disjoint runs of the shuffled ``texts``."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out, buf = [], bytearray()
    for i in order:
        buf += texts[i].encode() + b"\n\n"
        if len(buf) >= PRIME_BYTES:
            out.append(bytes(buf[-PRIME_BYTES:]))
            buf = bytearray()
            if len(out) == k:
                break
    return out


def primed_size(data: bytes, prime: bytes) -> int:
    c = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, prime)
    return len(c.compress(data)) + len(c.flush())


def zlib_delta(texts, human_primes, llm_primes) -> np.ndarray:
    out = np.zeros(len(texts))
    for i, t in enumerate(texts):
        b = t.encode()
        d = [primed_size(b, h) - primed_size(b, m) for h, m in zip(human_primes, llm_primes)]
        out[i] = np.mean(d) / max(len(b), 1)
    return out


def style(texts) -> dict[str, np.ndarray]:
    cv, smean, ttr, selfc = (np.zeros(len(texts)) for _ in range(4))
    for i, t in enumerate(texts):
        lens = [len(WORD.findall(s)) for s in SENT.split(t)]
        lens = np.array([n for n in lens if n > 0], float)
        if len(lens) >= 2:
            cv[i] = lens.std() / lens.mean()
        smean[i] = lens.mean() if len(lens) else 0.0
        words = [w.lower() for w in WORD.findall(t)]
        if words:
            ttr[i] = np.mean([len(set(words[j:j + 50])) / len(words[j:j + 50])
                              for j in range(0, max(1, len(words) - 49), 25)])
        b = t.encode()
        selfc[i] = len(zlib.compress(b, 9)) / max(len(b), 1)
    return {"sent_cv": cv, "sent_mean": smean, "ttr": ttr, "self_compress": selfc}


class Profiles:
    """Punctuation-character and frequent-word distributions of the two training references."""

    def __init__(self, human: list[str], llm: list[str], n_words: int = 50):
        self.punct = {}
        for kind, texts in (("human", human), ("llm", llm)):
            self.punct[kind] = Counter(c for t in texts for c in PUNCT.findall(t))
        chars = sorted(set(self.punct["human"]) | set(self.punct["llm"]))
        self.chars = {c: j for j, c in enumerate(chars)}
        p = {k: np.array([self.punct[k][c] + 1.0 for c in chars]) for k in self.punct}
        self.punct_lr = np.log(p["llm"] / p["llm"].sum()) - np.log(p["human"] / p["human"].sum())
        words = {k: Counter(w.lower() for t in texts for w in WORD.findall(t))
                 for k, texts in (("human", human), ("llm", llm))}
        top = [w for w, _ in (words["human"] + words["llm"]).most_common(n_words)]
        self.words = {w: j for j, w in enumerate(top)}
        total = {k: sum(words[k].values()) for k in words}
        self.rate = {k: np.array([(words[k][w] + 1) / total[k] for w in top]) for k in words}

    def scores(self, texts) -> dict[str, np.ndarray]:
        p_llr, w_llr = np.zeros(len(texts)), np.zeros(len(texts))
        for i, t in enumerate(texts):
            js = [self.chars[c] for c in PUNCT.findall(t) if c in self.chars]
            p_llr[i] = self.punct_lr[js].mean() if js else 0.0
            ws = [w.lower() for w in WORD.findall(t)]
            counts = np.zeros(len(self.words))
            for w in ws:
                j = self.words.get(w)
                if j is not None:
                    counts[j] += 1
            n = max(len(ws), 1)
            # Poisson log-likelihood ratio of the counts under the two rates, per word
            lam_l, lam_h = self.rate["llm"] * n, self.rate["human"] * n
            w_llr[i] = (counts * np.log(lam_l / lam_h) - (lam_l - lam_h)).sum() / n
        return {"punct_llr": p_llr, "fw_rate_llr": w_llr}


def ngram_signals(art: M.Artifact, texts) -> dict[str, np.ndarray]:
    """The artifact's statistics and two windowed variances of its per-token values."""
    st = art.doc_stats(texts)
    hashes, lengths = M.token_hashes(texts)
    ids, real = M.padded_ids(art.vocab, hashes, lengths, art.order)
    pos = np.flatnonzero(real)
    lp_l, lp_h = art.llm.logprob(ids, pos), art.human.logprob(ids, pos)
    ctx = M.contexts(ids, pos, art.order)
    centred = lp_l - lp_h - M.expected_f(art, ctx, "llm", 1.0, -1.0)[0]
    doc = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(len(doc)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    win = within // WINDOW
    out = {"v3": st["combined"], "p_v3": art.score(st["combined"]), "n": st["n_tokens"],
           "centred_llr": st["centred_llr"], "binoculars": st["binoculars"], "centred_std": st["centred_std"]}
    for name, v in (("ppl_window_std", -lp_l), ("llr_window_std", centred)):
        key = doc * 100000 + win
        uk, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        wmean = np.bincount(inv, weights=v) / cnt
        wdoc = uk // 100000
        full = cnt >= WINDOW // 2
        s = np.zeros(len(texts))
        for d in np.unique(wdoc[full]):
            m = full & (wdoc == d)
            if m.sum() >= 2:
                s[d] = wmean[m].std()
        out[name] = s
    return out


def candidates(texts, refs, art, profiles) -> dict[str, np.ndarray]:
    """Every candidate per text, and the CPU time of each family (printed as documents per second, one process:
    compare the rates with each other, not with another machine)."""
    h1, l1 = primes(refs["human"][0], 4, 1), primes(refs["llm"][0], 4, 1)
    out, rates = {}, []
    for name, fn in (("llm_ngram (v3 and windows)", lambda: ngram_signals(art, texts)),
                     ("llm_ngram's doc_stats alone", lambda: {"_": art.doc_stats(texts)["combined"]}),
                     ("zlib_delta (1 prime pair)", lambda: {"zlib_delta": zlib_delta(texts, h1[:1], l1[:1])}),
                     ("zlib_delta4 (4 prime pairs)", lambda: {"zlib_delta4": zlib_delta(texts, h1, l1)}),
                     ("burstiness, ttr, self_compress", lambda: style(texts)),
                     ("profiles", lambda: profiles.scores(texts))):
        t0 = time.process_time()
        out.update(fn())
        rates.append(f"{name} {len(texts) / max(time.process_time() - t0, 1e-9):.0f}")
    out.pop("_")
    print(f"  {len(texts)} texts, docs/s (CPU): " + ", ".join(rates))
    return out


# ----- evaluation ----------------------------------------------------------------------------------------
def per_dataset(score, n, labels, datasets, sets):
    s = np.where(n >= MIN_TOKENS, score, -np.inf)
    return {ds: (fast_auroc(labels[m], s[m]), tpr_at_fpr(labels[m], s[m], 0.01)) for ds in sets
            for m in [datasets == ds]}


def line(name, per):
    a, t = np.mean([v[0] for v in per.values()]), np.mean([v[1] for v in per.values()])
    return (f"  {name:<44} macro AUROC {a:.3f}  TPR@1%FPR {t:.3f}   "
            + "  ".join(f"{ds} {v[0]:.3f}" for ds, v in per.items()))


JOINT = ["zlib_delta4", "sent_cv", "sent_mean", "ppl_window_std"]
BOOTSTRAP = [("zlib_delta4", "reference fit"), ("zlib_delta4", "noisy-or of calibrated"),
             ("sent_mean", "fit on the other three dev sets"), ("sent_cv", "reference fit"), ("joint", "reference fit")]


def bootstrap_gain(new, old, labels, datasets, groups, valid, resamples: int = 200):
    rng = np.random.default_rng(0)
    sets = sorted(set(datasets))
    members = {}
    for i in np.flatnonzero(valid):
        members.setdefault((datasets[i], groups[i]), []).append(i)
    by_set = {ds: [members[k] for k in members if k[0] == ds] for ds in sets}
    point = np.mean([fast_auroc(labels[m], new[m]) - fast_auroc(labels[m], old[m])
                     for ds in sets for m in [valid & (datasets == ds)]])
    gains = []
    for _ in range(resamples):
        g = 0.0
        for ds in sets:
            pick = rng.integers(0, len(by_set[ds]), len(by_set[ds]))
            idx = np.concatenate([by_set[ds][j] for j in pick])
            g += fast_auroc(labels[idx], new[idx]) - fast_auroc(labels[idx], old[idx])
        gains.append(g / len(sets))
    lo, hi = np.percentile(gains, [2.5, 97.5])
    return lo, point, hi


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="pickle of the decontaminated data (reused)")
    ap.add_argument("--more", action="store_true",
                    help="also 2, 8, 16 prime pairs and word n-gram LMs over a large vocabulary (about 5 minutes more)")
    args = ap.parse_args(argv)
    data = load(args.cache)
    if data is None:
        return 2
    dev, refs = data["dev"], data["refs"]
    art = M.Artifact.load(llm_ngram.DEFAULT_ARTIFACT)
    labels = np.array([r["label"] == 1 for r in dev])
    datasets = np.array([r["dataset"] for r in dev])
    domains = np.array([r["domain"] or "" for r in dev])
    sets = sorted(set(datasets))
    print(f"{len(dev)} dev texts ({data['removed']} near a reference removed); references "
          f"{len(refs['human'][0])} human, {len(refs['llm'][0])} LLM for primes and profiles, "
          f"{len(refs['human'][1])} + {len(refs['llm'][1])} held out for signs and fits")
    profiles = Profiles(refs["human"][0], refs["llm"][0])
    print("candidates on the held-out references")
    ref = candidates(refs["human"][1] + refs["llm"][1], refs, art, profiles)
    y_ref = np.r_[np.zeros(len(refs["human"][1]), bool), np.ones(len(refs["llm"][1]), bool)]
    print("candidates on the dev data")
    devc = candidates([r["text"] for r in dev], refs, art, profiles)
    names = [k for k in devc if k not in ("v3", "p_v3", "n")]
    n = devc["n"]

    print("\nalone (sign from the held-out references; their AUROC first)")
    sign = {}
    alone = {}
    for k in names:
        a_ref = fast_auroc(y_ref, ref[k])
        sign[k] = 1.0 if a_ref >= 0.5 else -1.0
        alone[k] = per_dataset(sign[k] * devc[k], n, labels, datasets, sets)
        print(line(f"{k} (refs {max(a_ref, 1 - a_ref):.3f}, {'+' if sign[k] > 0 else '-'})", alone[k]))
    base = per_dataset(devc["v3"], n, labels, datasets, sets)
    print(line("v3 (llm_ngram as shipped)", base))

    print("\nwith v3: combination rules (each candidate's macro AUROC minus v3's in brackets)")
    base_macro = np.mean([v[0] for v in base.values()])
    combos = {("v3", "none"): base}
    combo_scores = {}
    for k in names:
        if k in ("centred_llr", "binoculars", "centred_std"):
            continue
        X, Xr = np.c_[devc["v3"], devc[k]], np.c_[ref["v3"], ref[k]]
        rules = {}
        b0, w = M.fit_combination(Xr, y_ref)
        rules["reference fit"] = X @ w
        mu, sd = Xr.mean(0), Xr.std(0) + 1e-12
        rules["equal weights"] = ((X - mu) / sd * np.array([1.0, sign[k]])).sum(1)
        a1, b1 = M.fit_logistic(ref[k], y_ref.astype(float))
        p_k = sigmoid(a1 + b1 * devc[k])
        rules["noisy-or of calibrated"] = 1 - (1 - devc["p_v3"]) * (1 - p_k)
        score = np.zeros(len(X))
        for ds in sets:
            train = (datasets != ds) & (n >= MIN_TOKENS)
            weight = np.zeros(len(X))
            for other in (o for o in sets if o != ds):
                for c in (False, True):
                    m = train & (datasets == other) & (labels == c)
                    weight[m] = 1.0 / max(m.sum(), 1)
            _, w2 = M.fit_combination(X[train], labels[train], sample_weight=weight[train])
            score[datasets == ds] = X[datasets == ds] @ w2
        rules["fit on the other three dev sets"] = score
        for rule, s in rules.items():
            per = per_dataset(s, n, labels, datasets, sets)
            combos[(k, rule)] = per
            combo_scores[(k, rule)] = s
            gain = np.mean([v[0] for v in per.values()]) - base_macro
            print(line(f"v3 + {k}, {rule} [{gain:+.3f}]", per))

    X, Xr = np.stack([devc[k] for k in ["v3"] + JOINT], 1), np.stack([ref[k] for k in ["v3"] + JOINT], 1)
    _, w = M.fit_combination(Xr, y_ref)
    joint = X @ w
    per = per_dataset(joint, n, labels, datasets, sets)
    print(line(f"v3 + {' + '.join(JOINT)}, reference fit "
               f"[{np.mean([v[0] for v in per.values()]) - base_macro:+.3f}]", per))

    groups = np.array([str(r["group"]) for r in dev])
    print("\ngroup-bootstrap 95% intervals of the macro AUROC gain over v3 (200 resamples of groups within each "
          "dataset; every document of 50+ tokens)")
    valid = n >= MIN_TOKENS
    for k, rule in BOOTSTRAP:
        s = joint if k == "joint" else combo_scores[(k, rule)]
        lo, mid, hi = bootstrap_gain(s, devc["v3"], labels, datasets, groups, valid)
        print(f"  v3 + {k}, {rule:<32} gain {mid:+.4f}  [{lo:+.4f}, {hi:+.4f}]")

    print("\nnested selection (candidate and rule best on the other three datasets score the held-out one)")
    for label, keys in (("every candidate x rule, and v3 alone", list(combos)),
                        ("reference fit only, and v3 alone",
                         [c for c in combos if c[1] in ("none", "reference fit")]),
                        ("noisy-or only, and v3 alone",
                         [c for c in combos if c[1] in ("none", "noisy-or of calibrated")]),
                        ("fit on the other three only, and v3 alone",
                         [c for c in combos if c[1] in ("none", "fit on the other three dev sets")])):
        a, t, chosen = [], [], []
        for ds in sets:
            best = max(keys, key=lambda c: np.mean([combos[c][d][0] for d in sets if d != ds]))
            a.append(combos[best][ds][0])
            t.append(combos[best][ds][1])
            chosen.append(best)
        print(f"  {label:<40} macro AUROC {np.mean(a):.3f} (v3 {base_macro:.3f})  TPR@1%FPR {np.mean(t):.3f}  "
              "chose: " + "; ".join(f"{ds}: {'/'.join(c)}" for ds, c in zip(sets, chosen)))

    print("\nfairness of each candidate alone: share of human texts flagged at the threshold for 1% FPR on the "
          "held-out human references")
    human_ref = ~y_ref
    for k in names:
        thr = np.quantile(sign[k] * ref[k][human_ref], 0.99)
        flag = (sign[k] * devc[k] > thr) & (n >= MIN_TOKENS)
        essays = (~labels) & np.isin(domains, ("student-essay", "essay"))
        print(f"  {k:<20} student essays {flag[essays].mean():.3f} (n={essays.sum()})  "
              + "  ".join(f"{ds} human {flag[(datasets == ds) & ~labels].mean():.3f}" for ds in sets))
    thresholds(devc["p_v3"], ref["p_v3"], n, labels, datasets, domains, y_ref, ref["n"])
    if args.more:
        more(devc, ref, y_ref, refs, [r["text"] for r in dev], labels, datasets, sets)
    return 0


def more(devc, ref, y_ref, refs, dev_texts, labels, datasets, sets) -> None:
    """Other numbers of prime pairs for ``zlib_delta``, and word n-gram LMs over a large vocabulary (what a text
    says rather than how): alone, with v3 by a reference fit, and by a noisy-or of the calibrated probabilities."""
    import llm_ngram_ideas as ideas

    n = devc["n"]
    ref_texts = refs["human"][1] + refs["llm"][1]

    def show(name, d, r):
        a_ref = fast_auroc(y_ref, r)
        print(line(f"{name} alone (refs {max(a_ref, 1 - a_ref):.3f})",
                   per_dataset(d if a_ref >= 0.5 else -d, n, labels, datasets, sets)))
        _, w = M.fit_combination(np.c_[ref["v3"], r], y_ref)
        print(line("  v3 + it, reference fit", per_dataset(np.c_[devc["v3"], d] @ w, n, labels, datasets, sets)))
        a1, b1 = M.fit_logistic(r, y_ref.astype(float))
        p = 1 - (1 - devc["p_v3"]) * (1 - sigmoid(a1 + b1 * d))
        print(line("  v3 + it, noisy-or of calibrated", per_dataset(p, n, labels, datasets, sets)), flush=True)

    print("\n--more: other numbers of prime pairs; word n-gram LMs over a large vocabulary")
    for k in (2, 8, 16):
        h, m = primes(refs["human"][0], k, 1), primes(refs["llm"][0], k, 1)
        show(f"zlib_delta, {k} prime pairs", zlib_delta(dev_texts, h, m), zlib_delta(ref_texts, h, m))
    corpora = {"human": ideas.Corpus(refs["human"][0]), "llm": ideas.Corpus(refs["llm"][0])}
    on_dev, on_ref = ideas.Corpus(dev_texts), ideas.Corpus(ref_texts)
    for vocab, order in ((50000, 1), (50000, 2), (50000, 3), (5000, 3)):
        art = ideas.build(corpora, V=vocab, order=order, min_count=2 if order > 1 else 1)
        sd, sr = ideas.statistics(art, on_dev), ideas.statistics(art, on_ref)
        for f in ("mean_llr", "centred_llr", "binoculars"):
            show(f"{vocab} tokens, {order}-gram, {f}", sd[f], sr[f])


def lowest_threshold(human_scores: np.ndarray, max_fpr: float) -> float:
    """The lowest t (score >= t flags) whose false-positive rate on ``human_scores`` is <= max_fpr."""
    s = np.sort(human_scores)[::-1]
    k = int(np.floor(max_fpr * len(s)))
    return float(np.nextafter(s[k], np.inf)) if k < len(s) else 0.0


def thresholds(p, p_ref, n, labels, datasets, domains, y_ref, n_ref) -> None:
    """``llm_ngram``'s ``min_score`` for the v3 score: the shipped value and rules that choose it on training data
    only (the held-out references, or the three other dev datasets), each scored on the held-out dataset."""
    sets = sorted(set(datasets))
    valid = n >= MIN_TOKENS
    s = np.where(valid, p, -1.0)  # shorter documents are never tagged
    essays = (~labels) & np.isin(domains, ("student-essay", "essay"))

    def report(name, t_of):
        cells, flagged_all = [], np.zeros(len(s), bool)
        for ds in sets:
            t = t_of(ds)
            m = datasets == ds
            flag = s >= t
            flagged_all[m] = flag[m]
            cells.append(f"{ds} t={t:.4f} FPR {flag[m & ~labels].mean():.3f} TPR {flag[m & labels].mean():.3f}")
        print(f"  {name}\n    " + "\n    ".join(cells) + f"\n    pooled human FPR {flagged_all[~labels].mean():.3f}, "
              f"LLM TPR {flagged_all[labels].mean():.3f}; student essays {int(flagged_all[essays].sum())}/"
              f"{int(essays.sum())} = {flagged_all[essays].mean():.3f} (target <= 0.03)")

    print(f"\nllm_ngram min_score for the v3 score (documents of {MIN_TOKENS}+ tokens; each rule's threshold is "
          "chosen without the dataset it is scored on)")
    shipped = llm_ngram.LlmNgram.options["min_score"]
    report(f"the shipped default, {shipped}", lambda ds: shipped)
    report("0.97 (chosen for v2's score, v3's default until it was re-chosen)", lambda ds: 0.97)
    h_ref = np.where(n_ref >= MIN_TOKENS, p_ref, -1.0)[~y_ref]
    report("1% FPR on the held-out human references", lambda ds: lowest_threshold(h_ref, 0.01))
    report("student essays of the other datasets <= 3% FPR",
           lambda ds: lowest_threshold(s[essays & (datasets != ds)], 0.03))
    def shipped_rule(m):
        return max(lowest_threshold(s[~labels & m], 0.01), lowest_threshold(s[essays & m], FAIRNESS))

    report("the shipped rule on the other datasets: <= 1% of the pooled human texts and <= 3% of the student "
           "essays", lambda ds: shipped_rule(datasets != ds))
    print(f"  the shipped rule on all four datasets: {shipped_rule(np.ones(len(s), bool)):.4f} (rounded up to "
          f"three decimals: min_score's default)")
    report("every other dataset's human texts <= 3% FPR",
           lambda ds: max(lowest_threshold(s[~labels & (datasets == o)], 0.03) for o in sets if o != ds))


if __name__ == "__main__":
    sys.exit(main())
