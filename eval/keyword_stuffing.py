"""keyword_stuffing on real clean text and stuffed copies of it: recall by intensity and length, false flags.

Clean text: the human reference texts (../shared/data/text), split in two halves by a hash of the text. The
detector's thresholds (``PHRASE_THRESHOLDS``, ``min_block_share``) were set on the *calibration* half
(``--calibrate`` prints what this data gives: for each length band the share that 0.25% of its texts exceed);
false flags are counted on the other half, on every page of ../shared/data/pages and on every distinct HTML
page of the WARC files (extracted by the real extractor), none of which the thresholds saw. Stuffed copies: texts of the measurement half (80+ words)
with a "{service} {city}" phrase inserted at random places until it is a given share of the words, or a
keyword list (15-30 variants of the phrase) appended. The detector is called as the runner calls it (one
Arrow batch per 500 texts).

    .venv/bin/python eval/keyword_stuffing.py [--stuffed 500] [--seed 0] [--calibrate]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doorway import CITIES, SERVICES  # noqa: E402
from poison_gen import PAGES, read_pages, read_warc_pages  # noqa: E402
from reference import DATA, read_reference  # noqa: E402

from provenance.plugins.keyword_stuffing import (PHRASE_LENGTHS, KeywordStuffing, keyword_block,  # noqa: E402
                                                 repeated_phrase, words_of)
from provenance.testing import make_document  # noqa: E402

DENSITIES = (0.02, 0.05, 0.08, 0.12, 0.2, 0.3)
BANDS = ((80, 200), (200, 400), (400, 10**9))
CALIBRATION_BUDGET = 0.0025


def calibration_half(text: str) -> bool:
    return hashlib.sha256(text.encode("utf-8", "replace")).digest()[0] % 2 == 0


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


def tagged(texts: list[str]) -> list[list[tuple[str, dict]]]:
    """Per text, the (tag, evidence) pairs the detector gives."""
    detector = KeywordStuffing()
    out = [[] for _ in texts]
    for lo in range(0, len(texts), 500):
        chunk = texts[lo:lo + 500]
        ids = [str(lo + i) for i in range(len(chunk))]
        table = detector.tag_batch(pa.record_batch({"doc_id": ids, "text": chunk}))
        for doc_id, tag, evidence in zip(*(table.column(c).to_pylist() for c in ("doc_id", "tag", "evidence"))):
            out[int(doc_id)].append((tag, json.loads(evidence)))
    return out


def calibrate(texts: list[str], budget: float) -> None:
    bands = defaultdict(list)
    blocks = []
    for text in texts:
        words, contexts = words_of(text)
        if len(words) < 50:
            continue
        found = repeated_phrase(words, contexts)
        band = max(i for i, lo in enumerate(PHRASE_LENGTHS) if len(words) >= lo)
        bands[band].append(found[0] if found else 0.0)
        block = keyword_block(words, contexts, 60, 0.2)
        blocks.append(block[0] if block else 0.0)
    print(f"calibration half: {len(blocks)} texts of 50+ words; share exceeded by {budget:.2%} of them")
    for band, shares in sorted(bands.items()):
        shares.sort(reverse=True)
        print(f"  phrase, {PHRASE_LENGTHS[band]:>5}+ words ({len(shares):>5} texts): "
              f"{shares[int(budget * len(shares))]:.3f}")
    blocks.sort(reverse=True)
    print(f"  block (densest 60 tokens, two words): {blocks[int(budget * len(blocks))]:.3f} "
          f"(highest {blocks[:5]})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stuffed", type=int, default=500, help="real texts stuffed per intensity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", action="store_true", help="print the thresholds the calibration half gives")
    ap.add_argument("--worst", type=int, default=6)
    ap.add_argument("--budget", type=float, default=CALIBRATION_BUDGET, help="share of clean texts a "
                    "threshold may flag, per length band (with --calibrate)")
    args = ap.parse_args(argv)
    refs = read_reference(DATA, "eval")
    if refs is None or not PAGES.is_dir():
        print("eval: needs ../shared (human references and pages)", file=sys.stderr)
        return 2
    texts = [r["text"] for r in refs]
    if args.calibrate:
        calibrate([t for t in texts if calibration_half(t)], args.budget)
        return 0
    held_out = [t for t in texts if not calibration_half(t)]
    pages = [make_document(i, html=body.decode("utf-8", "replace"))["text"] or ""
             for i, (_, body) in enumerate(read_pages(PAGES))]
    warc_pages = [make_document(i, html=body.decode("utf-8", "replace"))["text"] or ""
                  for i, (_, body) in enumerate(read_warc_pages())]
    rng = random.Random(args.seed)
    pool = [t for t in held_out if len(t.split()) >= 80]
    rng.shuffle(pool)

    print(f"keyword_stuffing: clean = {len(held_out)} human reference texts not used for calibration and "
          f"{len(pages)} + {len(warc_pages)} real pages (pages/, WARC HTML); {args.stuffed} stuffed copies per intensity")
    false_flags = []
    for name, clean in (("reference (held out)", held_out), ("pages", pages), ("WARC HTML", warc_pages),
                        ("all real pages", pages + warc_pages)):
        got = tagged(clean)
        long_enough = sum(len(t.split()) >= 50 for t in clean)
        flagged = [(t, g) for t, g in zip(clean, got) if g]
        by_tag = defaultdict(int)
        for _, g in flagged:
            for tag, _ in g:
                by_tag[tag] += 1
        print(f"  false flags, {name}: {len(flagged) / len(clean):.3%} of {len(clean)} "
              f"({len(flagged)}; {len(flagged) / max(1, long_enough):.3%} of the {long_enough} of 50+ words) "
              f"{dict(by_tag)}")
        if name != "all real pages":
            false_flags += [(name, t, g) for t, g in flagged]

    kinds = list(DENSITIES) + [None]
    print("\nrecall by intensity (any tag; in brackets: keyword_block, repeated_phrase)")
    for kind in kinds:
        got = tagged([stuffed(rng, t, kind) for t in pool[:args.stuffed]])
        hit = sum(bool(g) for g in got) / len(got)
        block = sum(any(t == "keyword_block" for t, _ in g) for g in got) / len(got)
        phrase = sum(any(t == "repeated_phrase" for t, _ in g) for g in got) / len(got)
        label = f"phrase at {kind:.0%} of words" if kind else "keyword list appended"
        print(f"  {label:<26} {hit:6.3f}  ({block:.3f}, {phrase:.3f})")

    print("\nrecall of the inserted phrase by text length (words)")
    print("  " + " " * 14 + "  ".join(f"{d:>5.0%}" for d in DENSITIES))
    for lo, hi in BANDS:
        sub = [t for t in pool if lo <= len(t.split()) < hi][:min(args.stuffed, 300)]
        row = [sum(bool(g) for g in tagged([stuffed(rng, t, d) for t in sub])) / max(1, len(sub))
               for d in DENSITIES]
        print(f"  {lo:>5}-{hi if hi < 10**9 else '':<6} {len(sub):>3}  " + "  ".join(f"{r:5.3f}" for r in row))

    print(f"\nworst false flags (of {len(false_flags)})")
    for name, text, got in false_flags[:args.worst]:
        for tag, evidence in got:
            shown = {k: v for k, v in evidence.items() if k != "block"}
            if "block" in evidence:
                shown["block"] = evidence["block"]["text"][:160]
            print(f"  {name}: {tag} {json.dumps(shown, ensure_ascii=False)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
