"""Evaluate the built-in content_drift detector on planted versions of real texts.

Data: ../shared/data/text/human_reference.jsonl.gz (texts of 8+ sentences, at most 20,000 characters). Each
case is a text as first captured (2021) and a second capture of the same URL (2024), built at run time:

  unchanged   the same text with every number changed and month names swapped (a new date, a view counter):
              no tag expected
  minor_edit  0.5-2% of the words edited (replaced, deleted or inserted; at least one), numbers changed
  major_edit  25-45% of the sentences (a contiguous run) replaced by another text's sentences
  replaced    another text altogether at the same URL

The later captures are ingested *first*, the earlier ones after them (as a WARC of last year imported after
this week's crawl), so the cases also check that versions link by capture time, not import order. The
detector runs through the real pipeline (JSONL ingest -> store -> tag runner); a case's prediction is its
content_drift tag (none: unchanged). Prints precision and recall per class and the confusion matrix.

    .venv/bin/python eval/drift.py [--per-class 250] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import DATA, edited, read_reference, tag_with  # noqa: E402

import provenance  # noqa: E402

CLASSES = ("unchanged", "minor_edit", "major_edit", "replaced")
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_NUMBER = re.compile(r"\d+")
_MONTH = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def new_numbers(rng: random.Random, text: str) -> str:
    """Every number changed, every month name another month: what a page's date line and counters do."""
    text = _NUMBER.sub(lambda m: str(rng.randrange(1, 10 ** len(m.group()) + 1)), text)
    return _MONTH.sub(lambda m: rng.choice([x for x in MONTHS if x != m.group()]), text)


def plant(rng: random.Random, kind: str, text: str, donor: str) -> str:
    """The second capture of ``text`` for class ``kind``; ``donor`` is another text to take sentences from."""
    ours, theirs = sentences(text), sentences(donor)
    if kind == "unchanged":
        return new_numbers(rng, text)
    if kind == "minor_edit":
        return new_numbers(rng, edited(rng, text, rng.uniform(0.005, 0.02), donor.split()))
    if kind == "major_edit":
        n = max(2, round(len(ours) * rng.uniform(0.25, 0.45)))
        start = rng.randrange(len(ours) - n + 1)
        new = [theirs[i % len(theirs)] for i in range(n)]
        return " ".join(ours[:start] + new + ours[start + n:])
    return donor


def build_cases(rows: list[dict], per_class: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    usable = [r for r in rows if r.get("text") and len(r["text"]) <= 20_000 and len(sentences(r["text"])) >= 8]
    rng.shuffle(usable)
    need = 2 * per_class * len(CLASSES)
    if len(usable) < need:
        sys.exit(f"eval: only {len(usable)} usable texts, {need} needed; lower --per-class")
    cases = []
    for i, kind in enumerate(CLASSES * per_class):
        text, donor = usable[2 * i]["text"], usable[2 * i + 1]["text"]
        cases.append({"case": i, "kind": kind, "url": f"https://drift.example/{i}", "before": text,
                      "after": plant(rng, kind, text, donor)})
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = read_reference(args.data, "eval")
    if rows is None:
        return 1
    cases = build_cases(rows, args.per_class, args.seed)

    from provenance.ingest import run_ingest
    from provenance.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "store", create=True)
        # Later captures first: the links must follow capture time, not the order of import.
        for name, field, when in (("later", "after", "2024-06-01T00:00:00Z"),
                                  ("earlier", "before", "2021-06-01T00:00:00Z")):
            src = Path(tmp) / f"{name}.jsonl"
            with open(src, "w") as fh:
                for c in cases:
                    fh.write(json.dumps({"url": c["url"], "text": c[field], "fetched_at": when,
                                         "case": c["case"], "capture": name}) + "\n")
            result = run_ingest(store, [src], crawl_id=name)
            if result.problems:
                sys.exit(f"eval: {len(result.problems)} texts failed to ingest, e.g. {result.problems[0]}")
        t0 = time.perf_counter()
        tag_with(store, ["content_drift"])
        seconds = time.perf_counter() - t0
        con = provenance.connect(store)
        predicted = dict(con.execute("""
            SELECT json_extract(d.metadata, '$.case')::INT, t.tag FROM tags t JOIN documents d USING (doc_id)
            WHERE t.detector = 'content_drift'""").fetchall())
        tagged_earlier = con.execute("""
            SELECT count(*) FROM tags t JOIN documents d USING (doc_id)
            WHERE t.detector = 'content_drift' AND json_extract_string(d.metadata, '$.capture') = 'earlier'
        """).fetchone()[0]
        linked = con.execute("SELECT count(*) FROM versions WHERE version = 2").fetchone()[0]
        con.close()

    truth = {c["case"]: c["kind"] for c in cases}
    pred = {i: predicted.get(i, "unchanged") for i in truth}
    print(f"content_drift on {len(cases)} planted version pairs ({args.per_class} per class, seed {args.seed}) "
          f"from {args.data.name}; tag run {seconds:.1f} s")
    print(f"  versions linked by capture time: {linked}/{len(cases)}; earlier captures tagged: {tagged_earlier}")
    print(f"  {'class':<12} {'precision':>9} {'recall':>7} {'n':>5}")
    for kind in CLASSES:
        tp = sum(1 for i in truth if truth[i] == kind and pred[i] == kind)
        n_pred, n_true = sum(1 for i in pred if pred[i] == kind), sum(1 for i in truth if truth[i] == kind)
        print(f"  {kind:<12} {tp / n_pred if n_pred else float('nan'):>9.3f} {tp / n_true:>7.3f} {n_true:>5}")
    confusion = Counter((truth[i], pred[i]) for i in truth)
    print("  confusion (rows: planted, columns: predicted):")
    print("  " + " " * 12 + "".join(f"{k:>12}" for k in CLASSES))
    for kind in CLASSES:
        print(f"  {kind:<12}" + "".join(f"{confusion[(kind, p)]:>12}" for p in CLASSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
