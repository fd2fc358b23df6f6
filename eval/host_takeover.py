"""host_takeover on simulated hosts of real text: re-captures of whole sites, some taken over.

Hosts are built at run time from ../shared/data/text/human_reference.jsonl.gz (5-20 real texts each), captured
twice six months apart. Each host gets one scenario: ``unchanged``; ``dated`` (every page's dates and counters
changed, same server: a template update); ``moved`` (new server and IP, same text: a hosting move);
``redesign`` (every page rewritten with other real text, same server and IP); ``takeover`` (every page
replaced with other real text on a new server and IP); ``parked`` (every page a parking page, same server);
``moved_redesign`` (rewritten *and* moved the same day: looks like a takeover from outside; reported apart).
All of it goes through the real runner into a temporary store.

Prints, per scenario, the share of hosts with any page tagged, and precision / recall over hosts for the two
kinds that are takeovers.

    .venv/bin/python eval/host_takeover.py [--hosts 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import shuffled_texts, tag_with  # noqa: E402

from provenance.sql import connect  # noqa: E402
from provenance.store import Store  # noqa: E402
from provenance.testing import make_store  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SCENARIOS = {"unchanged": 0.45, "dated": 0.15, "moved": 0.1, "redesign": 0.08, "takeover": 0.1, "parked": 0.07,
             "moved_redesign": 0.05}
TAKEOVERS = {"takeover", "parked"}
PARKING = "The domain {host} may be for sale. Make an offer on this domain. Related searches: {words}."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    texts = shuffled_texts(rng, "eval")
    if texts is None:
        return 2
    pool = iter(texts)
    names, weights = zip(*SCENARIOS.items())
    docs, scenario_of = [], {}
    for h in range(args.hosts):
        host, scenario = f"site{h}.example", rng.choices(names, weights)[0]
        scenario_of[host] = scenario
        ip, new_ip = f"192.0.2.{h % 250}", f"198.51.100.{h % 250}"
        for p in range(rng.randint(5, 20)):
            url, text = f"https://{host}/p{p}", next(pool)
            docs.append({"url": url, "text": text, "fetched_at": "2024-03-01T10:00:00Z",
                         "headers": {"Server": "nginx/1.24"}, "resolved_ip": ip})
            later, server, later_ip = text, "nginx/1.24", ip
            if scenario == "dated":
                later = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), text)
            elif scenario in ("redesign", "takeover", "moved_redesign"):
                later = next(pool)
            elif scenario == "parked":
                later = PARKING.format(host=host, words=", ".join(rng.sample(text.split(), 3)))
            if scenario in ("moved", "takeover", "moved_redesign"):
                server, later_ip = "LiteSpeed", new_ip
            docs.append({"url": url, "text": later, "fetched_at": "2024-09-01T10:00:00Z",
                         "headers": {"Server": server}, "resolved_ip": later_ip})
    with tempfile.TemporaryDirectory(prefix="eval-takeover-") as tmp:
        make_store(tmp, docs, rows_per_file=5000)
        store = Store.open(tmp)
        tag_with(store, ["host_takeover"])
        tagged = {r[0] for r in connect(store).execute(
            "SELECT DISTINCT d.registered_domain FROM tags t JOIN documents d USING (doc_id) "
            "WHERE t.detector = 'host_takeover'").fetchall()}
    by_scenario = defaultdict(list)
    for host, scenario in scenario_of.items():
        by_scenario[scenario].append(host in tagged)
    print(f"host_takeover on {args.hosts} hosts, {len(docs)} captures (seed {args.seed})")
    for scenario in SCENARIOS:
        hits = by_scenario.get(scenario, [])
        kind = "takeover" if scenario in TAKEOVERS else ("looks like one" if scenario == "moved_redesign" else "benign")
        print(f"  {scenario:<15} hosts {len(hits):>4}  tagged {sum(hits) / max(len(hits), 1):7.1%}  ({kind})")
    truth = {h for h, s in scenario_of.items() if s in TAKEOVERS}
    judged = {h for h in tagged if scenario_of[h] != "moved_redesign"}
    tp = len(judged & truth)
    print(f"  takeovers (takeover + parked): recall {tp / max(len(truth), 1):.3f}, precision "
          f"{tp / max(len(judged), 1):.3f} (moved_redesign hosts left out of both)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
