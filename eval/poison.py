"""Evaluate the per-document poison detectors on real pages: invisible_unicode, hidden_content, prompt_injection,
backdoor_tail, keyword_stuffing.

Data: every HTML page under ../shared/data/pages (clean, as published), the same pages with each kind of
poison injected by eval/poison_gen.py (a seeded sample of ``--inject-pages`` pages), and hard negatives built
from them (emoji and flags, Persian/Hindi joiners, Hebrew with bidi marks, Russian and maths, hidden menus and
screen-reader text, a page discussing prompt injection, ordinary mentions of AI). All of it goes through the
real pipeline: JSONL records with ``html`` -> ``provenance ingest`` (text extraction) -> the ``tag`` runner.

Prints recall per kind and variant (the expected tag on the poisoned page), precision per detector (a tag on
a poisoned page that its clean original did not get counts as right; any tag on a clean page or a hard
negative as wrong), the false-flag rate on the clean pages and on the hard negatives, and the worst false
flags with their evidence.

    .venv/bin/python eval/poison.py [--inject-pages 100] [--seed 0] [--extractor trafilatura]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poison_gen import PAGES, hard_negatives, poisoned, read_pages  # noqa: E402
from reference import tag_with  # noqa: E402

import provenance  # noqa: E402
from provenance.extract import decode  # noqa: E402
from provenance.ingest import run_ingest  # noqa: E402
from provenance.store import Store  # noqa: E402

DETECTORS = ["invisible_unicode", "hidden_content", "prompt_injection", "backdoor_tail", "keyword_stuffing"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=PAGES)
    parser.add_argument("--inject-pages", type=int, default=100, help="clean pages (seeded sample) to poison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extractor", default=None, help="ingest extractor (default: the configured one)")
    parser.add_argument("--worst", type=int, default=8, help="false flags to print")
    args = parser.parse_args()
    if not args.pages.exists():
        print(f"eval: {args.pages} not found (needs ../shared)", file=sys.stderr)
        return 1
    pages = [(name, decode(body, None)[1]) for name, body in read_pages(args.pages)]
    sample = random.Random(args.seed).sample(pages, min(args.inject_pages, len(pages)))
    cases = [(f"{name}#clean", "clean", "clean", html, None) for name, html in pages]
    cases += list(poisoned(sample, args.seed)) + list(hard_negatives(pages, args.seed))

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        records = ({"url": f"https://eval.example/{i}", "html": html, "fetched_at": "2024-01-01T00:00:00Z",
                    "ref_id": name} for i, (name, _, _, html, _) in enumerate(cases))
        src = Path(tmp) / "pages.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        store = Store.open(Path(tmp) / "store", create=True)
        done = run_ingest(store, [src], crawl_id="eval", extractor=args.extractor)
        if done.problems:
            sys.exit(f"eval: {len(done.problems)} pages failed to ingest, e.g. {done.problems[0]}")
        t1 = time.perf_counter()
        tag_with(store, DETECTORS)
        t2 = time.perf_counter()
        con = provenance.connect(store)
        rows = con.execute("""
            SELECT json_extract_string(d.metadata, '$.ref_id'), t.detector, t.tag, t.score, t.evidence
            FROM tags t JOIN documents d USING (doc_id) WHERE list_contains(?, t.detector)""", [DETECTORS]).fetchall()

    tags = defaultdict(list)  # case name -> [(detector, tag, score, evidence)]
    for name, detector, tag, score, evidence in rows:
        tags[name].append((detector, tag, score, evidence))
    n_clean = sum(1 for c in cases if c[1] == "clean")
    n_poisoned = sum(1 for c in cases if c[4])
    n_negative = sum(1 for c in cases if c[1] == "negative")
    print(f"poison detectors on {n_clean} clean pages of {args.pages.name}/, {n_poisoned} poisoned copies of "
          f"{len(sample)} of them, {n_negative} hard negatives; ingest {t1 - t0:.0f} s, tag {t2 - t1:.1f} s")

    print("\nrecall (expected tag on the poisoned page)")
    by_variant = defaultdict(lambda: [0, 0])
    by_kind = defaultdict(lambda: [0, 0])
    for name, kind, variant, _, expected in cases:
        if expected:
            hit = any(t[1] == expected for t in tags.get(name, []))
            for key, table in (((kind, variant), by_variant), (kind, by_kind)):
                table[key][0] += hit
                table[key][1] += 1
    for kind, (hit, n) in sorted(by_kind.items()):
        print(f"  {kind:<10} {hit / n:6.3f}  ({hit}/{n})")
        for (k, variant), (h, m) in sorted(by_variant.items()):
            if k == kind and h < m or (k == kind and kind != "hidden"):
                print(f"      {variant:<32} {h / m:6.3f}  ({h}/{m})")

    print("\nper detector: precision, false flags on clean pages, on hard negatives")
    false_flags = []
    for detector in DETECTORS:
        right = wrong = 0
        clean_flagged = negative_flagged = 0
        for name, kind, variant, _, expected in cases:
            mine = [t for t in tags.get(name, []) if t[0] == detector]
            if not mine:
                continue
            if kind in ("clean", "negative"):
                wrong += len(mine)
                clean_flagged += kind == "clean"
                negative_flagged += kind == "negative"
                false_flags += [(t[2] or 1.0, name, t) for t in mine]
            else:
                original = {t[1] for t in tags.get(name.split("#")[0] + "#clean", []) if t[0] == detector}
                for t in mine:
                    right += t[1] not in original
                    wrong += t[1] in original
        precision = right / (right + wrong) if right + wrong else float("nan")
        print(f"  {detector:<18} precision {precision:6.3f} ({right}/{right + wrong})   clean "
              f"{clean_flagged / n_clean:6.2%} ({clean_flagged}/{n_clean})   hard negatives "
              f"{negative_flagged / n_negative:6.2%} ({negative_flagged}/{n_negative})")
    negatives = Counter(c[2] for c in cases if c[1] == "negative" and tags.get(c[0]))
    if negatives:
        print(f"  hard negatives flagged, by kind: {dict(negatives)}")

    print(f"\nworst false flags (of {len(false_flags)})")
    for score, name, (detector, tag, _, evidence) in sorted(false_flags, key=lambda f: -f[0])[:args.worst]:
        print(f"  {score:.2f} {detector}/{tag} {name}\n      {evidence[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
