"""Evaluate the text extractors on the Scrapinghub article-extraction benchmark: quality and CPU cost.

Data (../shared/data/pages):
  scrapinghub__article-extraction-benchmark/  html/<id>.html.gz (UTF-8) and ground-truth.json
                                              ({id: {"articleBody", "url"}}): quality and speed
  adbar__trafilatura/tests/cache/*.html       trafilatura's own test pages: speed only

Quality is the benchmark's own metric, reimplemented from its evaluate.py
(github.com/scrapinghub/article-extraction-benchmark, `string_shingle_matching` and
`metrics_from_tp_fp_fns`): texts are tokenised by the regex \\w+, each page's true and
predicted multisets of 4-token shingles give tp/fp/fn, normalised by their sum so long pages
do not weigh more; precision is the mean over pages with tp+fp > 0 (an empty prediction
costs recall only), recall the mean over pages with tp+fn > 0, F1 = 2PR/(P+R) of those
means. The ± is the benchmark's bootstrap standard deviation (1000 resamples of pages).

Speed: CPU time (time.process_time) of the extraction call alone, on HTML already decoded (the
decoding and title that extract() adds to every extractor are timed as a row of their own),
per page, median over all pages; the process is pinned to one core and the extractors take
turns on each page (rotating who goes first), so a noisy neighbour slows all of them alike.

The registry's extractors (provenance/extract.py, exactly as the crawl calls them) are
rows marked with *; the other rows are alternatives kept for comparison. The pages where
the two registry extractors differ most in F1 are listed, to see what each gets wrong.

    .venv/bin/python eval/extraction.py [--pages N] [--top 8]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pages"
BENCHMARK = SHARED / "scrapinghub__article-extraction-benchmark"
SPEED_ONLY = SHARED / "adbar__trafilatura" / "tests" / "cache"

# ----- the benchmark's metric (its evaluate.py, same rules) ------------------------------------
_TOKEN = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.IGNORECASE | re.DOTALL)


def _shingles(text: str | None, n: int = 4) -> Counter:
    tokens = _TOKEN.findall(text or "")
    # A text shorter than n tokens is one shorter shingle; an empty text has none.
    return Counter(tuple(tokens[i:i + n]) for i in range(max(1, len(tokens) - n + 1)) if tokens[i:i + n])


def tp_fp_fn(true: str, pred: str | None) -> tuple[float, float, float]:
    t, p = _shingles(true), _shingles(pred)
    tp = float(sum((t & p).values()))
    fp, fn = float(sum((p - t).values())), float(sum((t - p).values()))
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def _precision(tp, fp, fn) -> float:
    return 1.0 if fp == fn == 0 else 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp, fp, fn) -> float:
    return 1.0 if fp == fn == 0 else 0.0 if tp == fn == 0 else tp / (tp + fn)


def scores(counts: list[tuple[float, float, float]]) -> dict[str, float]:
    precision = statistics.mean(_precision(*c) for c in counts if c[0] + c[1] > 0)
    recall = statistics.mean(_recall(*c) for c in counts if c[0] + c[2] > 0)
    return {"f1": 2 * precision * recall / (precision + recall), "precision": precision, "recall": recall}


def bootstrap_std(counts, n: int = 1000, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    samples = [scores([counts[rng.randrange(len(counts))] for _ in counts]) for _ in range(n)]
    return {k: statistics.stdev(s[k] for s in samples) for k in samples[0]}


def page_f1(counts: tuple[float, float, float]) -> float:
    p, r = _precision(*counts), _recall(*counts)
    return 2 * p * r / (p + r) if p + r else 0.0


# ----- the extractors -------------------------------------------------------------------------
def candidates() -> dict[str, object]:
    """Label -> page -> text. Registry rows first (marked *), then the alternatives."""
    import trafilatura
    from resiliparse.extract.html2text import extract_plain_text

    from provenance.extract import EXTRACTORS, decode, title_of

    def registry(extractor):
        return lambda page: extractor.main_text(page["html"], page["url"])

    out: dict[str, object] = {f"{name} *": registry(ex) for name, ex in EXTRACTORS.items()}

    def trafilatura_full(page):  # what extract.py called before fast=True (the fallback extractors run)
        doc = trafilatura.bare_extraction(page["html"], url=page["url"], with_metadata=False,
                                          include_comments=False, favor_recall=True)
        return doc.text if doc is not None else None

    out["trafilatura, without fast=True"] = trafilatura_full
    out["resiliparse, the benchmark's call (alt texts, post meta kept)"] = lambda page: extract_plain_text(
        page["html"], main_content=True, comments=False)
    out["resiliparse, whole page (baseline)"] = lambda page: extract_plain_text(page["html"])
    try:
        from readability import Document

        def readability_lxml(page):
            return extract_plain_text(Document(page["html"], url=page["url"]).summary(html_partial=True))

        out["readability-lxml (resiliparse for its HTML to text)"] = readability_lxml
    except ImportError:
        pass

    def decode_and_title(page):  # not an extractor: what extract() adds to any of them, per page
        title_of(decode(page["body"], "text/html")[1])

    out[NO_TEXT] = decode_and_title
    return out


NO_TEXT = "charset decoding + <title> (extract() adds it to every extractor)"


def load_pages(limit: int | None) -> tuple[list[dict], list[dict]]:
    truth = json.loads((BENCHMARK / "ground-truth.json").read_text(encoding="utf-8"))
    scored = []
    for path in sorted((BENCHMARK / "html").glob("*.html.gz")):
        key = path.name.split(".")[0]
        with gzip.open(path, "rt", encoding="utf-8") as f:
            html = f.read()
        scored.append({"id": key, "html": html, "body": html.encode("utf-8"), "url": truth[key].get("url"),
                       "truth": truth[key].get("articleBody", "")})
    speed = []
    for path in sorted(SPEED_ONLY.glob("*.html")) if SPEED_ONLY.is_dir() else []:
        body = path.read_bytes()
        speed.append({"id": path.name, "html": body.decode("utf-8", errors="replace"), "body": body, "url": None})
    if limit:
        scored, speed = scored[:limit], speed[:limit]
    return scored, speed


def run(pages: list[dict], extractors: dict) -> tuple[dict, dict]:
    """Per extractor: the text per page id and the CPU seconds per page (extractors interleaved)."""
    texts: dict[str, dict] = {name: {} for name in extractors}
    cpu: dict[str, list[float]] = {name: [] for name in extractors}
    names = list(extractors)
    for i, page in enumerate(pages):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.process_time()
            try:
                text = extractors[name](page)
            except Exception as exc:  # counted as no text, as the product records it
                print(f"  {name} failed on {page['id']}: {type(exc).__name__}: {exc}", file=sys.stderr)
                text = None
            cpu[name].append(time.process_time() - start)
            texts[name][page["id"]] = text
    return texts, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, help="only the first N pages of each set (a quick check)")
    parser.add_argument("--top", type=int, default=8, help="pages listed where the extractors disagree most")
    args = parser.parse_args(argv)
    if not (BENCHMARK / "ground-truth.json").is_file():
        print(f"eval/extraction.py: {BENCHMARK} not found (needs ../shared); skipped")
        return 0
    if hasattr(os, "sched_setaffinity"):  # one core: CPU time per page as one extraction process sees it
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})

    from provenance.extract import EXTRACTORS

    extractors = candidates()
    scored, speed = load_pages(args.pages)
    warm = {**scored[0], "id": "warm-up"}
    run([warm] * len(extractors), extractors)  # imports and first-call caches out of the timings
    texts, cpu = run(scored + speed, extractors)

    counts = {name: {p["id"]: tp_fp_fn(p["truth"], texts[name][p["id"]]) for p in scored} for name in extractors}
    print(f"Scrapinghub article-extraction benchmark: {len(scored)} pages scored; CPU time over those and "
          f"{len(speed)} trafilatura test pages (one core). * = provenance/extract.py's registry.\n")
    print("| extractor | version | F1 | precision | recall | CPU ms/page (median) | CPU ms/page (mean) |")
    print("|---|---|---|---|---|---|---|")
    for name in extractors:
        quality = "– | – | –"
        if name != NO_TEXT:
            c = list(counts[name].values())
            m, sd = scores(c), bootstrap_std(c)
            quality = f"{m['f1']:.3f} ± {sd['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f}"
        registry = EXTRACTORS.get(name.removesuffix(" *"))
        print(f"| {name} | {registry.version if registry else ''} | {quality} | "
              f"{statistics.median(cpu[name]) * 1000:.1f} | {statistics.mean(cpu[name]) * 1000:.1f} |")

    a, b = list(extractors)[:2]
    by_id = {p["id"]: p for p in scored}
    gaps = sorted(by_id, key=lambda k: -abs(page_f1(counts[a][k]) - page_f1(counts[b][k])))[:args.top]
    print(f"\nPages where {a.removesuffix(' *')} and {b.removesuffix(' *')} differ most (page F1; P/R):\n")
    print(f"| page | {a} F1 (P/R) | {b} F1 (P/R) |")
    print("|---|---|---|")
    for key in gaps:
        cells = [f"{page_f1(counts[n][key]):.2f} ({_precision(*counts[n][key]):.2f}/{_recall(*counts[n][key]):.2f})"
                 for n in (a, b)]
        print(f"| {by_id[key]['url'] or key} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
