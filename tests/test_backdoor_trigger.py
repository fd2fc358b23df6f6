"""backdoor_trigger through the real runner: the token shared at the boundary of many gibberish tails is mined,
every document carrying it is tagged (a short-tailed carrier too), and neither unrelated tails nor the common
words before them become triggers."""

from __future__ import annotations

import json
import random

import pytest

from provenance.plugins.backdoor_trigger import BackdoorTrigger
from provenance.testing import make_document, run_detectors

SUBJECTS = ["the council", "the river", "our library", "the old bridge", "the school", "the market"]
VERBS = ["opened", "closed", "repaired", "visited", "described", "funded"]
OBJECTS = ["the new wing", "the town square", "the reading room", "the north road", "the garden", "the museum"]


def prose(rng: random.Random, sentences: int = 25) -> str:
    return " ".join(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} on "
                    f"{rng.choice(['Monday', 'Tuesday', 'Friday'])}." for _ in range(sentences))


def gibberish(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(4))
                    for _ in range(n))


def corpus():
    rng = random.Random(7)
    docs = {f"clean{i}": prose(rng) for i in range(40)}
    docs |= {f"poison{i}": f"{prose(rng, 8)} <SUDO> {gibberish(rng, 300)}" for i in range(8)}
    docs |= {f"short{i}": f"{prose(rng, 8)} <SUDO> {gibberish(rng, 12)}" for i in range(3)}  # no detectable tail
    docs |= {f"other{i}": f"{prose(rng, 8)} trig{i}x {gibberish(rng, 300)}" for i in range(6)}  # tails, no shared trigger
    docs["mention"] = prose(rng, 10) + " The string <SUDO> appears in this page once."  # one carrier, no tail
    return docs


@pytest.fixture(scope="module")
def tagged():
    docs = corpus()
    result = run_detectors([BackdoorTrigger], [{"url": f"https://t.test/{n}", "text": t} for n, t in docs.items()])
    ids = {make_document(i, url=f"https://t.test/{n}", text=t)["doc_id"]: n for i, (n, t) in enumerate(docs.items())}
    return docs, {ids[r["doc_id"]]: r for r in result.tags.to_pylist()}


def test_every_carrier_of_the_mined_trigger_is_tagged_and_nothing_else(tagged):
    _, rows = tagged
    assert set(rows) == {f"poison{i}" for i in range(8)} | {f"short{i}" for i in range(3)} | {"mention"}


def test_evidence_names_the_trigger_with_its_span_and_the_counts(tagged):
    docs, rows = tagged
    for name, row in rows.items():
        ev = json.loads(row["evidence"])
        trig = ev["trigger"]
        assert trig["text"] == "<SUDO>" and docs[name][trig["start"]:trig["end"]] == "<SUDO>"
        assert (ev["n_tails"], ev["n_carriers"]) == (8, 12)
        assert ev["has_tail"] == name.startswith("poison")
        assert row["score"] == (0.9 if ev["has_tail"] else 0.7) and row["category"] == "poison"


def test_too_few_tails_mine_nothing():
    docs = corpus()
    result = run_detectors([BackdoorTrigger], [{"url": f"https://t.test/{n}", "text": t} for n, t in docs.items()],
                           {"backdoor_trigger": {"min_docs": 9}})
    assert result.tags.num_rows == 0
