"""``llm_markers`` on the shared references and the labelled dev data: how often it tags human text
(the target: under 0.5% of the human reference texts) and how much LLM text it catches.

    .venv/bin/python eval/llm_markers.py

Prints, per source, the share tagged at the default ``min_score`` and which marker kinds fired, and on the
labelled dev data precision and recall per dataset. Recall is low by design: most LLM text carries no
chat-model artefact; the detector is for the documents that do, with near-zero false flags.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import LABELLED_DEV, read_labelled  # noqa: E402

from provenance.plugins.llm_markers import LlmMarkers  # noqa: E402
from provenance.plugins.llm_ngram import read_records  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tag(texts: list[str], detector: LlmMarkers) -> tuple[list[bool], collections.Counter]:
    """Tagged or not per text, and the marker kinds that fired, through the detector's own tag_batch."""
    tagged = [False] * len(texts)
    kinds = collections.Counter()
    for start in range(0, len(texts), 2000):
        chunk = texts[start:start + 2000]
        batch = pa.RecordBatch.from_pydict({"doc_id": [str(start + i) for i in range(len(chunk))], "text": chunk})
        out = detector.tag_batch(batch)
        if out is None:
            continue
        for doc_id, ev in zip(out.column("doc_id").to_pylist(), out.column("evidence").to_pylist()):
            tagged[int(doc_id)] = True
            kinds.update(json.loads(ev)["kinds"] if isinstance(ev, str) else ev["kinds"])
    return tagged, kinds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--human", default=str(SHARED / "text" / "human_reference.jsonl.gz"))
    ap.add_argument("--llm", default=str(SHARED / "text" / "llm_reference.jsonl.gz"))
    ap.add_argument("--dev", default=str(LABELLED_DEV))
    ap.add_argument("--articles", default=str(SHARED / "pages" / "scrapinghub__article-extraction-benchmark"
                                              / "ground-truth.json"), help="human-written news articles")
    ap.add_argument("--show", type=int, default=0, help="print this many tagged human texts' matches")
    args = ap.parse_args(argv)
    if not Path(args.human).is_file():
        print(f"eval: {args.human} not found (needs ../shared)", file=sys.stderr)
        return 2
    detector = LlmMarkers()
    print(f"llm_markers v{detector.version}, min_score {detector.options['min_score']}")
    for label, path in (("human", args.human), ("llm", args.llm)):
        records = read_records(Path(path))
        by_source = collections.defaultdict(list)
        for r in records:
            by_source[r.get("source", "?")].append(r["text"])
        total_tagged = total = 0
        for source, texts in sorted(by_source.items()):
            tagged, kinds = tag(texts, detector)
            total_tagged += sum(tagged)
            total += len(texts)
            print(f"  {label:<5} {source:<28} n={len(texts):>6}  tagged {sum(tagged) / len(texts):7.3%}  "
                  f"{dict(kinds.most_common(4))}")
            if label == "human" and args.show:
                shown = [t for t, hit in zip(texts, tagged) if hit][:args.show]
                for t in shown:
                    out = detector.tag_batch(pa.RecordBatch.from_pydict({"doc_id": ["x"], "text": [t]}))
                    print("      ", out.column("evidence").to_pylist()[0])
        print(f"  {label:<5} {'ALL':<28} n={total:>6}  tagged {total_tagged / total:7.3%}"
              + ("   (target < 0.5%)" if label == "human" else ""))
    if Path(args.articles).is_file():  # web news, some of it about chatbots: the discussion guard's test
        bodies = [a["articleBody"] for a in json.loads(Path(args.articles).read_text()).values()]
        tagged, kinds = tag(bodies, detector)
        print(f"  human {'news articles (web)':<28} n={len(bodies):>6}  tagged {sum(tagged) / len(bodies):7.3%}  "
              f"{dict(kinds)}")
    dev = read_labelled(Path(args.dev), "eval: dev data skipped", ("dataset", "label", "text"))
    if dev is not None:
        by_ds = collections.defaultdict(list)
        for r in dev:
            by_ds[r["dataset"]].append(r)
        print("labelled dev data (precision / recall of the tag):")
        for ds, rows in sorted(by_ds.items()):
            tagged, _ = tag([r["text"] for r in rows], detector)
            tp = sum(1 for r, t in zip(rows, tagged) if t and r["label"] == 1)
            fp = sum(1 for r, t in zip(rows, tagged) if t and r["label"] == 0)
            pos = sum(r["label"] == 1 for r in rows)
            neg = len(rows) - pos
            prec = tp / (tp + fp) if tp + fp else float("nan")
            print(f"  {ds:<24} n={len(rows):>5}  precision {prec:.3f}  recall {tp / max(pos, 1):.3f}  "
                  f"FPR {fp / max(neg, 1):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
