"""Can a per-document keyword-stuffing threshold meet the targets? A feasibility measurement, no detector.

../shared/docs/threat-model.md, section 9: Gopher-style repetition thresholds flag 16-21% of clean documentation
prose. This measures the most promising per-document signal we found, calibrated on clean real text: the
alphabetic word pair (3+ letters each, digits masked) repeated after the most *different* preceding words
(stuffing drops a phrase anywhere; a table repeats ``mln dlrs`` after a number every time). Per document:
``c`` = the number of distinct preceding words of that pair, ``share`` = 2c / words. For each minimum ``c``,
the share threshold is set so that at most 0.5% of clean texts (the human references and every page of
../shared/data/pages, extracted by the real extractor) are flagged; then recall on stuffed copies of real texts
(80+ words): a "{service} {city}" phrase inserted at random places until it is a given share of the words, and
a keyword list (15-30 variants of the phrase) appended.

    .venv/bin/python eval/keyword_stuffing.py [--stuffed 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doorway import CITIES, SERVICES  # noqa: E402
from poison_gen import PAGES, read_pages  # noqa: E402
from reference import DATA, read_reference  # noqa: E402

from provenance.testing import make_document  # noqa: E402

WORD = re.compile(r"[^\W\d_]{3,}")
DENSITIES = (0.02, 0.03, 0.05, 0.08, 0.12, 0.2)
BUDGET = 0.005


def pair_signal(text: str):
    """(c, share) of the word pair repeated after the most distinct preceding words; None under 50 words."""
    words = [w.lower().strip("\"'()[]{}<>.,;:!?*-|/") for w in text.split()]
    words = ["#" if any(ch.isdigit() for ch in w) else w for w in words]
    if len(words) < 50:
        return None
    before = defaultdict(set)
    for i in range(1, len(words) - 1):
        if WORD.fullmatch(words[i]) and WORD.fullmatch(words[i + 1]):
            before[(words[i], words[i + 1])].add(words[i - 1])
    c = max((len(v) for v in before.values()), default=0)
    return c, 2 * c / len(words)


def stuffed(rng: random.Random, text: str, density: float | None) -> str:
    """``text`` with a keyword phrase at ``density`` of its words, or (None) a keyword list appended."""
    service, city = rng.choice(SERVICES), rng.choice(CITIES)
    words = text.split()
    if density is None:
        variants = [f"{service} {city}", f"{city} {service}", f"best {service} {city}", f"{service} near me",
                    f"cheap {service} {city}", f"{service} in {city}", f"emergency {service} {city}"]
        return text + "\n" + ", ".join(rng.choice(variants) for _ in range(rng.randint(15, 30)))
    phrase = f"{service} {city}".split()
    for _ in range(max(1, round(density * len(words) / len(phrase)))):
        i = rng.randrange(len(words) + 1)
        words[i:i] = phrase
    return " ".join(words)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stuffed", type=int, default=500, help="real texts stuffed per intensity")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    refs = read_reference(DATA, "eval")
    if refs is None or not PAGES.is_dir():
        print("eval: needs ../shared (human references and pages)", file=sys.stderr)
        return 2
    pages = [make_document(i, html=body.decode("utf-8", "replace"))["text"] or ""
             for i, (_, body) in enumerate(read_pages(PAGES))]
    clean = [s for s in map(pair_signal, [r["text"] for r in refs] + pages) if s]
    rng = random.Random(args.seed)
    pool = [r["text"] for r in refs if len(r["text"].split()) >= 80]
    rng.shuffle(pool)
    kinds = list(DENSITIES) + [None]
    attacked = {d: [pair_signal(stuffed(rng, t, d)) for t in pool[:args.stuffed]] for d in kinds}
    budget = int(BUDGET * len(clean))
    print(f"keyword stuffing, per document: {len(clean)} clean texts of 50+ words ({len(pages)} pages), "
          f"{args.stuffed} stuffed copies per intensity; thresholds allow {budget} false flags ({BUDGET:.1%})")
    print("  min c  share>  " + "  ".join(f"{d:>5.0%}" if d else " list" for d in kinds))
    for k in (3, 5, 8, 10, 15):
        shares = sorted((s for c, s in clean if c >= k), reverse=True)
        threshold = shares[budget] if len(shares) > budget else 0.0
        recall = [sum(c >= k and s > threshold for c, s in attacked[d]) / len(attacked[d]) for d in kinds]
        print(f"  {k:>5}  {threshold:6.3f}  " + "  ".join(f"{r:5.3f}" for r in recall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
