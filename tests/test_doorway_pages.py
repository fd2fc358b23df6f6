"""doorway_pages through the real runner: one template filled with a city and a service on many pages of a host
is tagged, and only those pages; a host of distinct pages under a shared header and footer, the same pages spread
over hosts, pages differing only in numbers, a shop's product pages differing in their fields, and copies of one
page are not."""

from __future__ import annotations

import json

import pytest

from provenance.detectors import DetectorError
from provenance.plugins.doorway_pages import HOSTS_SQL, DoorwayPages, domain_pages
from provenance.testing import run_detectors

CITIES = ["Austin", "Dallas", "El Paso", "Fort Worth", "San Antonio", "Houston", "Plano"]
SERVICES = ["plumbing", "roof repair", "plumbing", "drain cleaning", "water heater repair", "plumbing", "plumbing"]
TEMPLATE = ("Looking for reliable {service} in {city}? Our licensed team has served {city} homeowners for over "
            "twenty years, with upfront prices and no hidden fees. We answer every call within the hour, arrive "
            "in marked vans and clean up before we leave. Customers across {city} trust us for {service} because "
            "we guarantee the work for a full year. Call today for a free estimate.")
HEADER = "Home | Products | Support | About us. Acme Hardware, family owned since 1962."
FOOTER = "Free shipping over 50 dollars. Returns within 30 days. Copyright Acme Hardware. All rights reserved."
BODIES = [
    "This cordless drill has a brushless motor, two batteries and a charger that fills a battery in an hour.",
    "A claw hammer with a fibreglass handle that absorbs shock; the head is forged steel and will not chip.",
    "Our garden hose stays flexible in frost, resists kinks and comes with brass fittings at both ends.",
    "The step ladder folds flat for storage, holds 150 kilograms and has a tray for paint and small tools.",
    "These work gloves are lined for winter, grip wet surfaces well and are sold in four sizes.",
    "A set of twelve screwdrivers, flat and cross head, with magnetic tips and a wall rack.",
    "The wheelbarrow has a pneumatic tyre, a steel tray and handles with soft grips for long days in the yard.",
]


def docs():
    out = [{"url": f"https://best-plumbers.test/{c.lower().replace(' ', '-')}",
            "text": TEMPLATE.format(city=c, service=s)} for c, s in zip(CITIES, SERVICES)]
    out += [{"url": f"https://acme-hardware.test/p{i}", "text": f"{HEADER} {body} {FOOTER}"}
            for i, body in enumerate(BODIES)]
    # a shop's product pages: one layout whose fields (colour, size, material) differ at short places, but
    # no value fills two of them (a doorway names its city again and again)
    specs = [("red", "small", "cotton"), ("blue", "medium", "linen"), ("green", "large", "wool"),
             ("black", "small", "silk"), ("white", "large", "hemp"), ("grey", "medium", "polyester")]
    out += [{"url": f"https://shirts.test/item{i}",
             "text": f"{HEADER} Classic shirt. Colour: {c}. Size: {size}. Material: {m}. Machine washable, cut for "
                     f"a relaxed fit and sewn in Portugal. {FOOTER}"} for i, (c, size, m) in enumerate(specs)]
    # the same template once per host: no host holds a group (syndication, not a doorway)
    out += [{"url": f"https://host{i}.test/", "text": TEMPLATE.format(city=c, service="plumbing")}
            for i, c in enumerate(CITIES)]
    # the doorway host's other pages are no part of its template
    out += [{"url": f"https://best-plumbers.test/blog/{i}", "text": f"{body} Posted by the Best Plumbers team."}
            for i, body in enumerate(BODIES[:3])]
    # pages differing only in numbers (an archive's pages, a calendar): a listing, not a doorway
    out += [{"url": f"https://archive.test/page/{i}", "text": TEMPLATE.format(city=f"district {i}", service="plumbing")}
            for i in range(2, 9)]
    # one page copied to many URLs of a host: duplicates, not a template with slots
    out += [{"url": f"https://mirror.test/{i}", "text": TEMPLATE.format(city="Austin", service="plumbing")}
            for i in range(6)]
    return out


@pytest.fixture(scope="module")
def tagged():
    return {r["doc_id"]: r for r in run_detectors([DoorwayPages], docs()).tags.to_pylist()}, docs()


def test_only_the_doorway_host_is_tagged(tagged):
    rows, _ = tagged
    evidence = [json.loads(r["evidence"]) for r in rows.values()]
    assert {e["registered_domain"] for e in evidence} == {"best-plumbers.test"}
    assert len(rows) == len(CITIES)
    assert all(r["tag"] == "doorway_page" and r["category"] == "poison" for r in rows.values())


def test_evidence_shows_template_and_slot_values(tagged):
    rows, _ = tagged
    e = json.loads(next(iter(rows.values()))["evidence"])
    assert e["n_pages"] == len(CITIES)
    assert "{}" in e["template"] and "licensed team" in e["template"] and "Austin" not in e["template"]
    seen = {v for values in e["other_slot_values"] for v in values}
    assert {"el paso", "fort worth", "roof repair"} <= seen


def test_fewer_pages_than_min_pages_are_not_a_group():
    result = run_detectors([DoorwayPages], docs()[:len(CITIES)], options={"doorway_pages": {"min_pages": 8}})
    assert result.tags.num_rows == 0


def test_bad_options_are_refused():
    with pytest.raises(DetectorError, match="divide num_perm"):
        DoorwayPages.validate_options({"bands": 5})


def test_domain_pages_streams_each_domain_whole_across_batches(tmp_path):
    # finish reads the signatures as sorted rows in batches, not one list per domain (DuckDB does not spill
    # list(): 1.4 GB at 1M pages): a domain whose pages span batches comes out whole, in doc_id order, and
    # domains with fewer than min_pages pages not at all
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    sizes = {"a.example": 7, "b.example": 2, "c.example": 5, "d.example": 11}
    rows = [(domain, f"{domain}-{i:02d}", rng.integers(0, 1 << 32, 4, dtype=np.uint64).astype(np.uint32))
            for domain, n in sizes.items() for i in range(n)]
    rng.shuffle(rows)
    path = tmp_path / "state.parquet"
    pq.write_table(pa.table({"doc_id": [r[1] for r in rows], "registered_domain": [r[0] for r in rows],
                             "sig": pa.array([r[2].tolist() for r in rows], pa.list_(pa.uint32()))}), path)
    con = duckdb.connect()
    try:
        reader = con.sql(HOSTS_SQL.format(files=f"['{path}']", min_pages=5)).to_arrow_reader(3)
        got = [(domain, ids, sigs.tolist()) for domain, ids, sigs in domain_pages(reader)]
    finally:
        con.close()
    want = []
    for domain in ("a.example", "c.example", "d.example"):
        mine = sorted((r for r in rows if r[0] == domain), key=lambda r: r[1])
        want.append((domain, [r[1] for r in mine], [r[2].tolist() for r in mine]))
    assert got == want
