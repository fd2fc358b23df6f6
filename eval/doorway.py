"""doorway_pages on simulated hosts of real text: doorway hosts (one template, city/service slots) among real
sites, tagged through the real runner.

Hosts are built at run time from ../shared/data/text/human_reference.jsonl.gz (Reuters, Wikipedia, speeches).
Each simulated host gets one scenario:

- ``doorway_city``: one real text (40-300 words) made a template: a title line and 2-8 places where the page's
  city goes (``in {city}``), 5-50 pages, one city each;
- ``doorway_city_service``: the same with a service slot too, the service drawn per page;
- ``doorway_contact``: the same with a line of a local phone number, street number and ZIP code per page;
- ``doorway_spun``: city and service slots and three places of light spinning (each page draws one of 3-4
  synonymous phrases);
- ``wire``: 5-50 real texts (a wire feed of one host);
- ``earnings``: 5-50 real Reuters earnings reports (``QTR`` in the title: one table template, numbers and
  company names differing);
- ``boilerplate``: 5-50 real texts under one navigation header and footer;
- ``shop``: product pages of one shop: a product line, a real description (first 20-80 words), shipping
  boilerplate;
- ``thin_shop``: thin product pages: 8-15 words of real text under 90 words of the shop's boilerplate;
- ``syndication``: a pool of real stories carried by several hosts each, under each host's own header
  (within a host every story differs);
- ``docs``: real encyclopedia texts under one documentation header and version line.

Real hosts: ../shared/data/sites/gitster__git-htmldocs (a documentation site's HTML, one host) and each folder
of ../shared/data/pages (real pages, one host per folder: the harshest boilerplate test), extracted by the real
extractor. Prints per scenario the share of hosts and pages tagged, page recall and precision, and the
false-flag rate on clean pages.

    .venv/bin/python eval/doorway.py [--hosts 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poison_gen import PAGES, read_pages  # noqa: E402
from reference import DATA, read_reference, tag_with  # noqa: E402

from provenance.sql import connect  # noqa: E402
from provenance.store import Store  # noqa: E402
from provenance.testing import make_store  # noqa: E402

SITES = Path(__file__).resolve().parents[2] / "shared" / "data" / "sites"
SCENARIOS = {"doorway_city": 0.08, "doorway_city_service": 0.08, "doorway_contact": 0.08, "doorway_spun": 0.08,
             "wire": 0.16, "earnings": 0.1,
             "boilerplate": 0.1, "shop": 0.08, "thin_shop": 0.06, "syndication": 0.08, "docs": 0.08}
DOORWAYS = {"doorway_city", "doorway_city_service", "doorway_contact", "doorway_spun"}
CITIES = ("Austin Dallas Houston Phoenix Denver Boston Seattle Portland Atlanta Miami Orlando Tampa Chicago Detroit "
          "Cleveland Columbus Memphis Nashville Louisville Richmond Raleigh Charlotte Baltimore Pittsburgh Buffalo "
          "Omaha Tulsa Wichita Boise Reno Tucson Albuquerque Sacramento Fresno Oakland Spokane Madison Milwaukee "
          "Minneapolis Indianapolis Cincinnati Toledo Akron Dayton Lexington Knoxville Birmingham Jackson Mobile "
          "Savannah Charleston Norfolk Anchorage Honolulu").split() + [
    "San Diego", "San Jose", "Los Angeles", "New York", "El Paso", "Fort Worth", "Las Vegas", "Kansas City",
    "St. Louis", "Salt Lake City", "Oklahoma City", "Virginia Beach", "Colorado Springs", "Long Beach"]
SERVICES = ["plumbing", "roof repair", "locksmith", "drain cleaning", "pest control", "carpet cleaning",
            "water heater repair", "HVAC repair", "tree removal", "garage door repair", "moving services",
            "dentist", "divorce lawyer", "car accident lawyer", "web design", "SEO services", "payday loans",
            "junk removal", "window cleaning", "electrician", "mold removal", "appliance repair"]

SPINS = [["trusted", "top-rated", "reliable", "affordable"], ["fast and friendly", "quick", "professional"],
         ["call now", "contact us today", "get a free quote"]]
NAV = "Home | {a} | {b} | Contact | About us | Search this site | Sign in"
FOOTER = "© {year} {host}. All rights reserved. Privacy policy | Terms of use | Cookie settings | Sitemap"
SHIP = ("Free shipping on orders over $50. Returns accepted within 30 days. Questions? Call our customer service "
        "team Monday to Friday, 9 am to 5 pm. Add to cart | Add to wish list | Compare")


def template_pages(rng: random.Random, text: str, n: int, with_service: bool, contact: bool = False,
                   spun: bool = False) -> list[str]:
    """``n`` doorway pages: ``text`` cut to 40-300 words with 2-8 city (and service) places, one city each;
    ``contact``: a local phone number and ZIP code line per page too; ``spun``: three more places where each
    page draws one of a few synonymous phrases (light spinning)."""
    words = text.split()[:rng.randint(40, 300)]
    places = sorted(rng.sample(range(1, len(words)), min(len(words) - 1, rng.randint(2, 8))), reverse=True)
    for k, i in enumerate(places):
        words.insert(i, "{service} in {city}" if with_service and k % 2 else "in {city}")
    if spun:
        for k in range(len(SPINS)):
            words.insert(rng.randrange(1, len(words)), f"{{spin{k}}}")
    title = "Best {service} in {city}" if with_service else "Welcome to {city}"
    template = title + ". " + " ".join(words)
    if contact:
        template += " Call {phone} today, or visit our office at {street} Main Street, {city} {zip}."
    cities = rng.sample(CITIES, n)
    return [template.format(city=c, service=rng.choice(SERVICES), street=rng.randint(10, 9999),
                            phone=f"({rng.randint(201, 989)}) 555-0{rng.randint(100, 199)}",
                            zip=f"{rng.randint(10000, 99999)}",
                            **{f"spin{k}": rng.choice(options) for k, options in enumerate(SPINS)}) for c in cities]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    records = read_reference(DATA, "eval")
    if records is None:
        return 2
    rng = random.Random(args.seed)
    rng.shuffle(records)
    earnings = iter([r["text"] for r in records if "QTR" in (r.get("title") or "")])
    texts = iter([r["text"] for r in records if "QTR" not in (r.get("title") or "") and len(r["text"].split()) >= 40])
    stories = [next(texts) for _ in range(400)]  # the syndication pool
    names, weights = zip(*SCENARIOS.items())
    docs, truth = [], {}  # truth: url -> scenario
    for h in range(args.hosts):
        host, scenario = f"site{h}.example", rng.choices(names, weights)[0]
        n = rng.randint(5, 50)
        if scenario in DOORWAYS:
            pages = template_pages(rng, next(texts), n, scenario != "doorway_city", scenario == "doorway_contact",
                                   scenario == "doorway_spun")
        elif scenario == "wire":
            pages = [next(texts) for _ in range(n)]
        elif scenario == "earnings":
            pages = [next(earnings) for _ in range(n)]
        elif scenario == "boilerplate":
            nav, foot = NAV.format(a="News", b="Sports"), FOOTER.format(year=2024, host=host)
            pages = [f"{nav}\n{next(texts)}\n{foot}" for _ in range(n)]
        elif scenario == "shop":
            pages = []
            for i in range(n):
                desc = " ".join(next(texts).split()[:rng.randint(20, 80)])
                price = f"Item {1000 + i} | In stock | ${rng.randint(5, 500)}.99"
                footer = FOOTER.format(year=2023, host=host)
                pages.append(f"{NAV.format(a='Shop', b='Cart')}\n{price}\n{desc}\n{SHIP}\n{footer}")
        elif scenario == "thin_shop":
            footer = FOOTER.format(year=2022, host=host)
            pages = [f"{NAV.format(a='Shop', b='Cart')}\n{' '.join(next(texts).split()[:rng.randint(8, 15)])}\n"
                     f"{SHIP}\n{SHIP}\n{footer}" for _ in range(n)]
        elif scenario == "syndication":
            head = f"{host} — Reprinted with permission from the wire. Share | Print | Email"
            pages = [f"{head}\n{story}" for story in rng.sample(stories, n)]
        else:  # docs
            head = "Documentation | Version 2.4 | Getting started | API reference | Guides | Edit this page on GitHub"
            pages = [f"{head}\n{next(texts)}\nLast updated on 2024-05-0{rng.randint(1, 9)}. Was this page helpful?"
                     for _ in range(n)]
        for i, text in enumerate(pages):
            url = f"https://{host}/page{i}"
            truth[url] = scenario
            docs.append({"url": url, "text": text, "fetched_at": "2024-03-01T10:00:00Z"})
    real = []
    if (SITES / "gitster__git-htmldocs").is_dir():
        real.append(("real_docs_site", "git-htmldocs.example", read_pages(SITES / "gitster__git-htmldocs")))
    if PAGES.is_dir():
        real += [("real_pages", f"{d.name.replace('_', '-')}.example", read_pages(d)) for d in sorted(PAGES.iterdir())
                 if d.is_dir()]
    for scenario, host, pages in real:
        for name, body in pages:
            url = f"https://{host}/{re.sub(r'[^A-Za-z0-9._-]', '-', name)}"
            truth[url] = scenario
            docs.append({"url": url, "html": body.decode("utf-8", "replace"), "fetched_at": "2024-03-01T10:00:00Z"})
    with tempfile.TemporaryDirectory(prefix="eval-doorway-") as tmp:
        make_store(tmp, docs, rows_per_file=5000)
        store = Store.open(tmp)
        tag_with(store, ["doorway_pages"])
        con = connect(store)
        tagged = dict(con.execute("SELECT d.url, t.evidence FROM tags t JOIN documents d USING (doc_id) "
                                  "WHERE t.detector = 'doorway_pages'").fetchall())
    pages_of, hosts_of = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for url, scenario in truth.items():
        pages_of[scenario].append(url in tagged)
        hosts_of[scenario][url.split("/")[2]].append(url in tagged)
    print(f"doorway_pages on {len({u.split('/')[2] for u in truth})} hosts, {len(truth)} pages "
          f"(seed {args.seed})")
    for scenario in list(SCENARIOS) + sorted({s for s, _, _ in real}):
        pages, hosts = pages_of.get(scenario, []), hosts_of.get(scenario, {})
        kind = "doorway" if scenario in DOORWAYS else "clean"
        print(f"  {scenario:<22} hosts {len(hosts):>4} (any page tagged {sum(any(v) for v in hosts.values()):>4})  "
              f"pages {len(pages):>5}  tagged {sum(pages) / max(len(pages), 1):7.2%}  ({kind})")
    door = [t for s in DOORWAYS for t in pages_of[s]]
    clean = [t for s, v in pages_of.items() if s not in DOORWAYS for t in v]
    tp, fp = sum(door), sum(clean)
    print(f"  doorway pages: recall {tp / max(len(door), 1):.3f}, precision {tp / max(tp + fp, 1):.3f}; "
          f"false flags on clean pages {fp}/{len(clean)} = {fp / max(len(clean), 1):.3%}")
    worst = [(u, json.loads(e)) for u, e in tagged.items() if truth[u] not in DOORWAYS][:5]
    for url, e in worst:
        print(f"  false flag {url}: n_pages {e['n_pages']}, slots {e['slot_values']}, template {e['template'][:120]!r}")
    missed = sorted({u.split("/")[2] for u in truth if truth[u] in DOORWAYS and u not in tagged})
    if missed:
        print(f"  doorway hosts with a page missed: {len(missed)}, e.g. {missed[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
