"""Evaluate near_duplicate's amplification tag on labelled synthetic campaigns built from real text.

Data: texts of ../shared/data/text/human_reference.jsonl.gz (seeded sample,
at least 150 words each). Every scenario takes one text and places copies of
it, each with 0-2% of its words replaced, on a set of sites, at chosen times;
every site also has history pages (other texts) that fix when the store first
saw it. Scenarios and their labels (by design, not by the detector's rule):

  campaign      positive   5-12 sites, copies within 0-6.5 days, >= 60% of the sites first seen 0-25 days before
  campaign_edge positive   exactly 5 sites, or copies over 6-7 days, or first seen 25-29 days before
  syndication   negative   5-12 long-known sites (first seen 1-3 years before), copies within days
  mixed         negative   5-12 sites, only 20-40% of them new
  slow          negative   5-12 new sites, copies spread over 10-60 days
  small         negative   2-4 new sites within a day
  single        negative   one page on a new or an old site (no cluster)

The documents go through the real ingest into a store, and the detector
through the real tag runner (stored signatures, then finish). Per document: positive when its scenario is a
campaign, predicted when it carries an ``amplification`` tag, scored by the
tag's new_domain_share. Prints precision, recall, AUROC, TPR at 1% FPR and the
share of documents tagged per scenario. Nothing is written outside a
temporary directory; without ../shared it prints one line and exits 0.

    .venv/bin/python eval/amplification.py [--per-kind 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics import print_detection_metrics  # noqa: E402
from reference import DATA, edited, ingest_records, read_reference, tag_with  # noqa: E402

import provenance  # noqa: E402

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
KINDS = {"campaign": True, "campaign_edge": True, "syndication": False, "mixed": False, "slow": False,
         "small": False, "single": False}


class Builder:
    """Scenario documents: each gets a fresh text, sites get history pages fixing their first-seen date."""

    def __init__(self, texts: list[str], rng: random.Random):
        self.texts, self.rng, self.docs, self.sites = texts, rng, [], 0
        self.vocabulary = [w for t in texts[:200] for w in t.split()]

    def _text(self) -> str:
        return self.texts.pop()

    def site(self, first_seen: datetime) -> str:
        self.sites += 1
        host = f"site{self.sites}.example"
        self.docs.append({"id": f"history-{self.sites}", "url": f"https://{host}/about", "text": self._text(),
                          "fetched_at": first_seen, "kind": None})
        return host

    def scenario(self, kind: str, start: datetime, n_sites: int, span_days: float, new_share: float,
                 new_days: tuple[float, float]) -> None:
        rng, text = self.rng, self._text()
        n_new = round(new_share * n_sites)
        firsts = [start - timedelta(days=rng.uniform(*new_days)) for _ in range(n_new)]
        firsts += [start - timedelta(days=rng.uniform(365, 3 * 365)) for _ in range(n_sites - n_new)]
        for k, first in enumerate(firsts):
            host = self.site(first)
            when = start + timedelta(days=span_days * k / max(n_sites - 1, 1))
            copy = text if k == 0 else edited(rng, text, rng.uniform(0.0, 0.02), self.vocabulary)
            self.docs.append({"id": f"{kind}-{len(self.docs)}", "url": f"https://{host}/story", "text": copy,
                              "fetched_at": when, "kind": kind})


def build(texts: list[str], per_kind: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    b = Builder(texts, rng)
    for i in range(per_kind):
        start = T0 + timedelta(days=rng.uniform(0, 300))
        b.scenario("campaign", start, rng.randint(5, 12), rng.uniform(0, 6.5), rng.uniform(0.6, 1.0), (0, 25))
        edge = rng.choice(["sites", "span", "age"])
        b.scenario("campaign_edge", start, 5 if edge == "sites" else rng.randint(5, 8),
                   rng.uniform(6.0, 6.9) if edge == "span" else rng.uniform(0, 3), 1.0,
                   (25, 29) if edge == "age" else (0, 20))
        b.scenario("syndication", start, rng.randint(5, 12), rng.uniform(0, 3), 0.0, (0, 0))
        b.scenario("mixed", start, rng.randint(5, 12), rng.uniform(0, 3), rng.uniform(0.2, 0.4), (0, 20))
        b.scenario("slow", start, rng.randint(5, 12), rng.uniform(10, 60), 1.0, (0, 20))
        b.scenario("small", start, rng.randint(2, 4), rng.uniform(0, 1), 1.0, (0, 20))
        b.scenario("single", start, 1, 0, rng.choice([0.0, 1.0]), (0, 20))
    return b.docs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-kind", type=int, default=40, help="scenarios of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"eval: {args.data} not found (needs ../shared); skipped", file=sys.stderr)
        return 0
    rows = read_reference(args.data, "eval")
    # One text per scenario: Reuters' own twins would join two scenarios into one cluster.
    distinct = {" ".join(r["text"].lower().split()): r["text"] for r in rows if len(r["text"].split()) >= 150}
    texts = sorted(distinct.values())
    random.Random(args.seed).shuffle(texts)
    docs = build(texts, args.per_kind, args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        store = ingest_records(({"url": d["url"], "text": d["text"], "fetched_at": d["fetched_at"].isoformat(),
                                 "ref_id": d["id"]} for d in docs), Path(tmp))
        t0 = time.perf_counter()
        tag_with(store, ["near_duplicate"])
        seconds = time.perf_counter() - t0
        con = provenance.connect(store)
        share = dict(con.execute("""
            SELECT json_extract_string(d.metadata, '$.ref_id'), t.score
            FROM tags t JOIN documents d USING (doc_id) WHERE t.tag = 'amplification'
        """).fetchall())
        con.close()

    scenario_docs = [d for d in docs if d["kind"] is not None]
    y = [KINDS[d["kind"]] for d in scenario_docs]
    print(f"amplification on {len(docs)} documents: {len(scenario_docs)} in {len(KINDS) * args.per_kind} "
          f"scenarios ({args.per_kind} of each kind), {len(docs) - len(scenario_docs)} site history pages; "
          f"{sum(y)} positives (campaign documents)")
    print("  options        defaults (>= 5 registered domains within 7 days, >= 50% first seen <= 30 days before)")
    print_detection_metrics(y, [share.get(d["id"], 0.0) for d in scenario_docs],
                            [d["id"] in share for d in scenario_docs])
    by_kind = defaultdict(lambda: [0, 0])
    for d in scenario_docs:
        by_kind[d["kind"]][0] += d["id"] in share
        by_kind[d["kind"]][1] += 1
    for kind, label in KINDS.items():
        tagged, total = by_kind[kind]
        print(f"  {kind:<14} {'positive' if label else 'negative'}: {tagged}/{total} documents tagged")
    print(f"  history pages tagged: {sum(d['id'] in share for d in docs if d['kind'] is None)}; "
          f"provenance tag {seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
