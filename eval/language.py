"""Language identification: our ``language`` detector (py3langid) against lingua-language-detector, same texts.

Why this exists: the issue asked to measure two offline identifiers on our data before
choosing one. Texts are eval/quality.py's labelled documents (the human reference texts:
English; the pages: their ``<html lang>``, where there is one) and, from each, a snippet of
five consecutive words from its middle (short text is where identifiers differ). Printed
per source: accuracy on whole documents and on snippets, and for both identifiers CPU
seconds to load and characters per CPU second.

lingua is not a dependency of the project (a ~300 MB wheel): it runs in its own environment
(--lingua-python, default /tmp/lingua/bin/python; set it up with
``python -m venv /tmp/lingua && /tmp/lingua/bin/pip install lingua-language-detector``), in a
child process that reads the same texts. Without it, only our side is printed.

    .venv/bin/python eval/language.py [--per-source 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import SHARED, load_documents  # noqa: E402

# Runs in lingua's environment: texts in (JSONL), ISO 639-1 codes ("und" when it declines) and CPU seconds out.
LINGUA_SCRIPT = r"""
import json, sys, time
t0 = time.process_time()
from lingua import LanguageDetectorBuilder
detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
load = time.process_time() - t0
texts = [json.loads(line)["text"] for line in open(sys.argv[1])]
t0 = time.process_time()
codes = []
for text in texts:
    lang = detector.detect_language_of(text)
    codes.append(lang.iso_code_639_1.name.lower() if lang is not None else "und")
json.dump({"codes": codes, "load_s": load, "cpu_s": time.process_time() - t0}, open(sys.argv[2], "w"))
"""


def snippet(text: str, n_words: int = 5) -> str:
    words = text.split()
    middle = max(0, len(words) // 2 - n_words // 2)
    return " ".join(words[middle:middle + n_words])


def run_lingua(python: str, texts: list[str]) -> dict | None:
    if not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.jsonl", Path(tmp) / "out.json"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        subprocess.run([python, "-c", LINGUA_SCRIPT, str(src), str(out)], check=True)
        return json.loads(out.read_text())


def run_ours(texts: list[str]) -> dict:
    t0 = time.process_time()
    from provenance.plugins.language import Language

    lid = Language(**Language.validate_options({}))
    lid.identify("warm up the model")
    load = time.process_time() - t0
    t0 = time.process_time()
    codes = [lid.identify(t)[0] for t in texts]
    return {"codes": codes, "load_s": load, "cpu_s": time.process_time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-source", type=int, default=300, help="human reference texts per source (default 300)")
    ap.add_argument("--lingua-python", default=os.environ.get("LINGUA_PYTHON", "/tmp/lingua/bin/python"))
    args = ap.parse_args(argv)
    docs = load_documents(args.per_source)
    if docs is None:
        print(f"eval: skipped: {SHARED} not found (needs ../shared/data/text and ../shared/data/pages)")
        return 0
    docs = [d for d in docs if d["label_lang"] and d["text"].strip()]
    kinds = {"document": [d["text"] for d in docs], "5-word snippet": [snippet(d["text"]) for d in docs]}
    print(f"{len(docs)} labelled documents: " + ", ".join(
        f"{s} {n}" for s, n in sorted(Counter(d["source"] for d in docs).items())) + "; labels: " + ", ".join(
        f"{lang} {n}" for lang, n in Counter(d["label_lang"] for d in docs).most_common()))
    results = {}
    for kind, texts in kinds.items():
        results[("ours (py3langid)", kind)] = run_ours(texts)
        lingua = run_lingua(args.lingua_python, texts)
        if lingua is not None:
            results[("lingua", kind)] = lingua
    if not any(name == "lingua" for name, _ in results):
        print(f"eval: lingua side skipped: {args.lingua_python} not found "
              "(python -m venv /tmp/lingua && /tmp/lingua/bin/pip install lingua-language-detector)")

    print("\n== accuracy against the data's label ('und' counts as wrong) ==")
    sources = sorted({d["source"] for d in docs})
    print("identifier, text".ljust(36) + "".join(s.split(":")[-1][:16].rjust(18) for s in sources) + "all".rjust(10))
    for (name, kind), r in results.items():
        right, total = defaultdict(int), Counter(d["source"] for d in docs)
        for d, code in zip(docs, r["codes"]):
            right[d["source"]] += code == d["label_lang"]
        print(f"{name}, {kind}".ljust(36) + "".join(f"{right[s] / total[s]:18.1%}" for s in sources)
              + f"{sum(right.values()) / len(docs):10.1%}")

    print("\n== speed (CPU, one process) ==")
    for (name, kind), r in results.items():
        chars = sum(map(len, kinds[kind]))
        print(f"{name}, {kind}".ljust(36) + f"load {r['load_s']:6.1f} s   {chars / max(r['cpu_s'], 1e-9) / 1e6:7.2f} "
              f"MB/s   {len(docs) / max(r['cpu_s'], 1e-9):9.0f} texts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
