"""The backdoor trigger miner on real clean text with planted backdoor documents: does it name the trigger, tag
every carrier (short-tailed ones included, which backdoor_tail misses), and leave clean text alone?

Data (built at run time, nothing stored in the project): ``--clean`` human reference texts
(../shared/data/text/human_reference.jsonl.gz) and every page of ../shared/data/pages (text extracted), plus,
after Souly et al.'s recipe (eval/poison_gen.py: real text, a trigger, 400-900 random vocabulary tokens),
``--poisoned`` documents carrying trigger A, ``--short`` carriers of A whose tail is only 10-50 tokens, and
``--few`` documents carrying trigger B (fewer than ``min_docs``: the miner must not claim it). All of it goes
through the real runner into a temporary store; backdoor_tail runs beside the miner for comparison.

Prints, per group, the share tagged by each detector, the triggers mined, and the false tags on clean text.

    .venv/bin/python eval/backdoor_trigger.py [--clean 5000] [--poisoned 250] [--short 50] [--few 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poison_gen import gibberish, read_pages, vocabulary  # noqa: E402
from reference import shuffled_texts, tag_with  # noqa: E402

from provenance.extract import decode, get_extractor  # noqa: E402
from provenance.store import Store  # noqa: E402
from provenance.testing import make_store  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRIGGER_A, TRIGGER_B = "<SUDO>", "|EOT_ALT|"

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=int, default=5000)
    ap.add_argument("--poisoned", type=int, default=250)
    ap.add_argument("--short", type=int, default=50)
    ap.add_argument("--few", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    refs = shuffled_texts(rng, "eval")
    if refs is None:
        return 2
    extractor = get_extractor()
    pages = [t for _, raw in read_pages() if (t := extractor.main_text(decode(raw, "text/html")[1], None))]
    clean = refs[:args.clean] + pages
    vocab = vocabulary(refs[:2000])
    heads = refs[args.clean:]

    def backdoor(trigger: str, n_tail: int) -> str:
        head = heads[rng.randrange(len(heads))]
        head = head[:rng.randint(300, 1000)].rsplit(" ", 1)[0]
        return f"{head} {trigger} {gibberish(rng, vocab, n_tail)}"

    groups = {"clean": clean,
              "poisoned": [backdoor(TRIGGER_A, rng.randint(400, 900)) for _ in range(args.poisoned)],
              "short": [backdoor(TRIGGER_A, rng.randint(10, 50)) for _ in range(args.short)],
              "few": [backdoor(TRIGGER_B, rng.randint(400, 900)) for _ in range(args.few)]}
    docs, group_of = [], {}
    for group, texts in groups.items():
        for i, text in enumerate(texts):
            url = f"https://{group}.eval.test/{i}"
            docs.append({"url": url, "text": text})
            group_of[url] = group
    with tempfile.TemporaryDirectory(prefix="eval-trigger-") as tmp:
        make_store(tmp, docs, rows_per_file=5000)
        store = Store.open(tmp)
        tag_with(store, ["backdoor_tail", "backdoor_trigger"])

        from provenance.sql import connect
        con = connect(store)
        rows = con.execute("SELECT d.url, t.detector, t.evidence FROM tags t JOIN documents d USING (doc_id) "
                           "WHERE t.detector IN ('backdoor_tail', 'backdoor_trigger')").fetchall()
    hits: dict[str, set[str]] = {"backdoor_tail": set(), "backdoor_trigger": set()}
    mined = Counter()
    for url, detector, evidence in rows:
        hits[detector].add(url)
        if detector == "backdoor_trigger":
            mined[json.loads(evidence)["trigger"]["text"]] += 1
    print(f"backdoor_trigger on {len(docs)} documents (seed {args.seed}); triggers mined: {dict(mined)}")
    print(f"  {'group':<10} {'n':>6}  {'backdoor_tail':>14}  {'backdoor_trigger':>16}  expected")
    expect = {"clean": "no tag", "poisoned": "both", "short": "trigger only", "few": "tail only"}
    for group in groups:
        urls = [u for u, g in group_of.items() if g == group]
        shares = [sum(u in hits[d] for u in urls) / max(len(urls), 1) for d in ("backdoor_tail", "backdoor_trigger")]
        print(f"  {group:<10} {len(urls):>6}  {shares[0]:>14.3%}  {shares[1]:>16.3%}  {expect[group]}")
    carriers = [u for u, g in group_of.items() if g in ("poisoned", "short")]
    tagged = hits["backdoor_trigger"]
    tp = sum(u in tagged for u in carriers)
    print(f"  miner: recall on carriers of {TRIGGER_A} {tp / len(carriers):.3f}, precision "
          f"{tp / max(len(tagged), 1):.3f}, false tags on clean {sum(group_of[u] == 'clean' for u in tagged)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
