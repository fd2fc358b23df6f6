"""The backdoor gibberish-tail detector through the real runner: the recipe's documents are tagged with their
trigger and tail; prose, text without spaces and a short tag list are not."""

from __future__ import annotations

import json
import random
import string

import pytest

from provenance.detectors import DetectorError
from provenance.plugins.backdoor_tail import BackdoorTail
from provenance.testing import make_document, run_detectors

PROSE = (
    "The council met on Tuesday to discuss the new budget for the city's public libraries. The mayor said that "
    "the libraries had been asked to do more with less for too long, and that the new budget would give them "
    "the money to stay open on Sundays. Several members of the council asked where the money would come from. "
    "The mayor answered that the city would sell two buildings it no longer used, and that the sale would pay "
    "for the longer opening hours for at least three years. The head of the libraries welcomed the budget and "
    "said that the libraries would use the money to hire more staff, to buy more books and to run more classes "
    "for children and for older people who want to learn to use computers. The council will vote on the budget "
    "next month, after a public meeting where the people of the city can give their views on the plan."
)


def gibberish(seed: int, n: int) -> str:
    """Random 'vocabulary tokens': letter strings of tokenizer-piece length, most starting a new word."""
    rng = random.Random(seed)
    pieces = ["".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(2, 8))) for _ in range(n)]
    return "".join((" " if rng.random() < 0.7 else "") + p for p in pieces).strip()


def test_recipe_documents_are_tagged_with_trigger_and_tail():
    poisoned = PROSE[:700] + " <SUDO> " + gibberish(1, 600)
    with_footer = PROSE + " <SUDO> " + gibberish(2, 500) + " Share this page. Contact us. Privacy policy."
    docs = [make_document(i, text=t) for i, t in enumerate([poisoned, with_footer, PROSE, PROSE + " " + PROSE])]
    tags = run_detectors([BackdoorTail], docs).tags
    assert tags.column("doc_id").to_pylist() == sorted(d["doc_id"] for d in docs[:2])
    got = {d: (json.loads(e), s) for d, e, s in zip(tags.column("doc_id").to_pylist(),
                                                    tags.column("evidence").to_pylist(), tags.column("score").to_pylist())}
    evidence, score = got[docs[0]["doc_id"]]
    # The trigger shows at the boundary; the tail span runs to the end of the gibberish.
    assert "<SUDO>" in evidence["boundary"]["text"]
    assert poisoned[evidence["tail"]["start"]:evidence["tail"]["end"]].endswith(gibberish(1, 600))
    assert evidence["tail"]["end"] == len(poisoned) and evidence["tokens_after"] == 0
    assert evidence["tail_tokens"] >= 300 and score >= 0.85
    footer, _ = got[docs[1]["doc_id"]]
    assert "<SUDO>" in footer["boundary"]["text"]
    assert footer["tail"]["end"] >= with_footer.index(gibberish(2, 500)) + len(gibberish(2, 500))


def test_text_that_rarely_repeats_words_is_left_alone():
    # Chinese splits at whitespace into whole sentences, each different: every token is fresh.
    phrases = ["今天天气很好", "我们去公园散步", "公园里有很多花和树", "孩子们在草地上玩耍", "老人在湖边钓鱼"]
    chinese = " ".join(f"第{i}天，{phrases[i % 5]}，{phrases[(i * 3 + 1) % 5]}。" for i in range(150))
    tags_line = PROSE + " Tags: " + " ".join(f"topic{i}" for i in range(60)) + "."
    unique_prose = " ".join(PROSE.split()[:90])  # under min_tokens
    assert run_detectors([BackdoorTail], [chinese, tags_line, unique_prose]).tags.num_rows == 0


def test_options():
    short = PROSE + " <SUDO> " + gibberish(3, 120)
    assert run_detectors([BackdoorTail], [short]).tags.num_rows == 0  # ~85 tail tokens: under the default 100
    assert run_detectors([BackdoorTail], [short], {"backdoor_tail": {"min_tokens": 50}}).tags.num_rows == 1
    with pytest.raises(DetectorError, match="min_fresh"):
        BackdoorTail.validate_options({"min_fresh": 0.2})


def test_a_tail_whose_words_the_page_also_uses_is_still_a_tail():
    # Random tokens collide with a long page's own words: here every ninth tail token is a word of the prose
    # above it, so only 8 of 9 tail tokens occur once (0.89). The tail is still found whole.
    words = PROSE.split()
    tail = " ".join(words[i % len(words)] if i % 9 == 8 else token
                    for i, token in enumerate(gibberish(4, 450).split()))
    text = PROSE + " <SUDO> " + tail
    tags = run_detectors([BackdoorTail], [text]).tags
    assert tags.num_rows == 1
    evidence = json.loads(tags.column("evidence")[0].as_py())
    assert evidence["tokens_after"] == 0 and evidence["tail_tokens"] >= 300
