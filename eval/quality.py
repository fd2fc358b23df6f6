"""Our quality detectors side by side with datatrove's filters, and what each rule costs human text.

Documents: every page of ../shared/data/pages (text extracted by the default extractor,
as ingest does) and a seeded sample of the human reference texts
(../shared/data/text/human_reference.jsonl.gz: Reuters, Wikipedia, Gutenberg, speeches),
up to --per-source texts of each source.

datatrove is not a dependency of the project: it runs in its own environment
(--datatrove-python, default /tmp/dt/bin/python; set it up with
``python -m venv /tmp/dt && /tmp/dt/bin/pip install datatrove spacy``), in a child
process that reads the same texts and writes its keep/drop decision and reason per
document and filter. Its GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter
and FineWebQualityFilter run with their defaults, which are ours too.

Printed: per rule set, the agreement of keep/drop decisions, the disagreement classes
(our first failing rule vs datatrove's reason, with counts and an example), and the
share of documents each rule drops, by source and by length. Language: our language
tag against the label the data carries (human reference: English; pages: the
``<html lang>`` attribute, where there is one).

    .venv/bin/python eval/quality.py [--per-source 1000] [--datatrove-python /tmp/dt/bin/python]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HUMAN = SHARED / "text" / "human_reference.jsonl.gz"
PAGES = SHARED / "pages"

# Our detector name -> datatrove's filter class.
FILTERS = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "c4_quality": "C4QualityFilter",
    "fineweb_quality": "FineWebQualityFilter",
}

# Runs in datatrove's environment: texts in (JSONL), decisions and CPU seconds out (JSON).
DATATROVE_SCRIPT = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline import filters
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
names = sys.argv[3].split(",")
out = {"decisions": {}, "cpu_s": {}}
for name in names:
    f = getattr(filters, name)()
    f.filter(Document(text="Warm up the tokenizer. " * 20, id="w"))
    decisions, t0 = [], time.process_time()
    for i, text in enumerate(texts):
        r = f.filter(Document(text=text, id=str(i)))
        decisions.append([True, None] if r is True else [False, r[1] if isinstance(r, tuple) else None])
    out["cpu_s"][name] = time.process_time() - t0
    out["decisions"][name] = decisions
json.dump(out, open(sys.argv[2], "w"))
"""


def load_documents(per_source: int, seed: int = 0) -> list[dict] | None:
    """[{id, source, label_lang, text}]: every page and up to per_source human texts of each source."""
    if not HUMAN.exists() or not PAGES.exists():
        return None
    from provenance.extract import extract

    docs = []
    files = sorted(PAGES.glob("scrapinghub__article-extraction-benchmark/html/*.html.gz"))
    files += sorted(PAGES.glob("adbar__trafilatura/tests/cache/*.html"))
    files += sorted(PAGES.glob("adbar__trafilatura/tests/resources/*.html"))
    for f in files:
        body = gzip.open(f).read() if f.suffix == ".gz" else f.read_bytes()
        lang = re.search(rb"<html[^>]*\blang=[\"']?([A-Za-z]{2,3})", body[:5000], re.I)
        docs.append({"id": f.name, "source": "pages:" + f.relative_to(PAGES).parts[0],
                     "label_lang": lang.group(1).decode().lower() if lang else None,
                     "text": extract(body, "text/html").text or ""})
    by_source = defaultdict(list)
    with gzip.open(HUMAN, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            by_source[r["source"]].append(r)
    rng = random.Random(seed)
    for source, rows in sorted(by_source.items()):
        for r in rng.sample(rows, min(per_source, len(rows))):
            docs.append({"id": r["id"], "source": "human:" + source, "label_lang": "en", "text": r["text"]})
    return docs


def run_datatrove(python: str, texts: list[str], names: list[str]) -> dict | None:
    """datatrove's decisions ({filter: [[keep, reason], ...]}) and CPU seconds, from its own environment."""
    if not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.jsonl", Path(tmp) / "out.json"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        env = {**os.environ, "LOGURU_LEVEL": "ERROR"}
        subprocess.run([python, "-c", DATATROVE_SCRIPT, str(src), str(out), ",".join(names)], check=True, env=env)
        return json.loads(out.read_text())


def run_ours(texts: list[str], batch_size: int = 1000) -> tuple[dict, dict]:
    """Our detectors' first failing rule per document (None: kept) and CPU seconds, through tag_batch."""
    from provenance.plugins.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition

    ids = [f"{i:08d}" for i in range(len(texts))]
    decisions, cpu = {}, {}
    for cls in (GopherQuality, GopherRepetition, C4Quality, FineWebQuality):
        detector = cls(**cls.validate_options({}))
        reasons: list = [None] * len(texts)
        t0 = time.process_time()
        for start in range(0, len(texts), batch_size):
            batch = pa.record_batch({"doc_id": ids[start:start + batch_size], "text": texts[start:start + batch_size]})
            out = detector.tag_batch(batch)
            if out is not None:
                for doc_id, tag in zip(out.column("doc_id").to_pylist(), out.column("tag").to_pylist()):
                    reasons[int(doc_id)] = tag
        cpu[cls.name] = time.process_time() - t0
        decisions[cls.name] = reasons
    return decisions, cpu


def _length_bucket(text: str) -> str:
    n = len(text.split())
    return "<50 words" if n < 50 else "50-500" if n < 500 else "500-5000" if n < 5000 else ">=5000"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-source", type=int, default=1000, help="human reference texts per source (default 1000)")
    ap.add_argument("--datatrove-python", default=os.environ.get("DATATROVE_PYTHON", "/tmp/dt/bin/python"))
    ap.add_argument("--examples", type=int, default=1, help="example documents per disagreement class")
    args = ap.parse_args(argv)
    docs = load_documents(args.per_source)
    if docs is None:
        print(f"eval: skipped: {SHARED} not found (needs ../shared/data/text and ../shared/data/pages)")
        return 0
    texts = [d["text"] for d in docs]
    print(f"{len(docs)} documents: " + ", ".join(f"{s} {n}" for s, n in sorted(Counter(d['source'] for d in docs).items())))
    ours, _ = run_ours(texts)

    dt = run_datatrove(args.datatrove_python, texts, list(FILTERS.values()))
    if dt is None:
        print(f"eval: datatrove side skipped: {args.datatrove_python} not found "
              "(python -m venv /tmp/dt && /tmp/dt/bin/pip install datatrove spacy)")
    else:
        print("\n== keep/drop agreement with datatrove (target >= 99%) ==")
        for name, dt_name in FILTERS.items():
            theirs = dt["decisions"][dt_name]
            agree = sum((o is None) == keep for o, (keep, _) in zip(ours[name], theirs))
            both_drop = [(o, r) for o, (keep, r) in zip(ours[name], theirs) if o is not None and not keep]
            same_reason = sum(o.removeprefix("gopher_").removeprefix("c4_").removeprefix("fineweb_") in (r or "")
                              or (o, r) in _SAME_REASON for o, r in both_drop)
            print(f"{name:18s} {agree}/{len(docs)} = {agree / len(docs):.2%} agree; "
                  f"dropped by both: {len(both_drop)}, same first reason: {same_reason}")
            classes = defaultdict(list)
            for i, (o, (keep, r)) in enumerate(zip(ours[name], theirs)):
                if (o is None) != keep:
                    classes[(o or "kept", r or "kept")].append(i)
            for (o, r), idx in sorted(classes.items(), key=lambda kv: -len(kv[1])):
                ex = "; ".join(f"{docs[i]['source']} {docs[i]['id']}" for i in idx[:args.examples])
                print(f"    ours {o} / datatrove {r}: {len(idx)} (e.g. {ex})")

    print("\n== share of documents each rule drops (our detectors, first failing rule) ==")
    sources = sorted({d["source"] for d in docs})
    print("rule".ljust(34) + "".join(s.split(":")[-1][:14].rjust(15) for s in sources))
    totals = Counter(d["source"] for d in docs)
    for name in FILTERS:
        per_rule = defaultdict(Counter)
        for d, tag in zip(docs, ours[name]):
            per_rule[name + " (any)"][d["source"]] += tag is not None
            if tag:
                per_rule["  " + tag][d["source"]] += 1
        for rule, counts in sorted(per_rule.items(), key=lambda kv: (not kv[0].endswith("(any)"), kv[0])):
            print(rule[:34].ljust(34) + "".join(f"{counts[s] / totals[s]:15.1%}" for s in sources))
    print("\nby length (words), all documents, the human reference texts, and the pages:")
    buckets = ["<50 words", "50-500", "500-5000", ">=5000"]
    lengths = [_length_bucket(t) for t in texts]
    print("detector".ljust(34) + "".join(b.rjust(18) for b in buckets))
    for group in ("all", "human", "pages"):
        keep = [group == "all" or d["source"].startswith(group + ":") for d in docs]
        n_bucket = Counter(b for b, k in zip(lengths, keep) if k)
        print(f"-- {group}: " + ", ".join(f"{b} {n_bucket[b]}" for b in buckets))
        for name in FILTERS:
            dropped = Counter(b for b, k, tag in zip(lengths, keep, ours[name]) if k and tag)
            print(name.ljust(34) + "".join(
                (f"{dropped[b] / n_bucket[b]:18.1%}" if n_bucket[b] else "-".rjust(18)) for b in buckets))

    print("\n== language: our tag against the data's label ==")
    from provenance.plugins.language import Language

    lid = Language(**Language.validate_options({}))
    hits = defaultdict(Counter)
    for d in docs:
        if d["label_lang"]:
            lang, conf, _ = lid.identify(d["text"])
            key = "right" if lang == d["label_lang"] else "und" if lang == "und" else "wrong"
            hits[d["source"]][key] += 1
            hits[d["source"]]["conf_" + key] += conf
    for source, c in sorted(hits.items()):
        n = c["right"] + c["wrong"] + c["und"]
        print(f"{source:40s} {c['right']}/{n} right ({c['right'] / n:.1%}), {c['wrong']} wrong "
              f"(mean confidence {c['conf_wrong'] / max(1, c['wrong']):.2f} vs {c['conf_right'] / max(1, c['right']):.2f}"
              f" when right), {c['und']} undetermined")
    return 0


# Our rule names where datatrove's reason string is spelled differently.
_SAME_REASON = {
    ("gopher_below_avg_word_length", "gopher_below_avg_threshold"),
    ("gopher_above_avg_word_length", "gopher_above_avg_threshold"),
    ("gopher_too_few_stop_words", "gopher_enough_stop_words"),
    ("empty_text", "empty"),
    ("c4_too_few_sentences", "too_few_sentences"),
    ("c4_lorem_ipsum", "lorem_ipsum"),
    ("c4_curly_bracket", "curly_bracket"),
    *{(f"gopher_top_{n}_gram", f"top_{n}_gram") for n in (2, 3, 4)},
    *{(f"gopher_dup_{n}_gram", f"duplicated_{n}_n_grams") for n in range(5, 11)},
}

if __name__ == "__main__":
    sys.exit(main())
