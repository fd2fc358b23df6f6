"""The poisoning generator (eval/poison_gen.py) makes the cases it says it makes: a backdoor tail that ends the
page's main text with its trigger as text, and no injection inside a <script> that is never rendered."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from poison_gen import TRIGGERS, _after_paragraph, _kept, backdoor_cases, vocabulary  # noqa: E402

SENTENCE = ("The council met on Tuesday to discuss the new budget for the city's public libraries, and the mayor "
            "said that the libraries had been asked to do more with less for far too long. ")
# The article as a JavaScript string first (as some news sites ship it), then as HTML; its last paragraph has
# a link in it, and only a short footer follows the article.
PAGE = ("<html><head><title>Budget</title><script>var story = \"<p>" + SENTENCE * 2 + "</p>\";</script></head>"
        "<body><article><h1>Budget</h1>" + "".join(f"<p>{SENTENCE * 2}Part {n}.</p>" for n in range(6)) +
        f"<p>{SENTENCE}Read the <a href='/plan'>plan</a> and the minutes of the meeting.</p></article>"
        "<footer><p>Contact us.</p></footer></body></html>")


def test_the_appended_tail_ends_the_main_text_and_its_trigger_is_text():
    kept = _kept(PAGE)
    cases = dict(backdoor_cases(PAGE, kept, random.Random(3), vocabulary([kept, "zqx wvy kjh " * 40])))
    assert set(cases) == {"page", "appended"}
    for variant, html in cases.items():
        text = _kept(html)
        trigger = next(t for t in TRIGGERS if t in html or t.replace("<", "&lt;").replace(">", "&gt;") in html)
        assert trigger in text, variant  # "<SUDO>" unescaped opened an element and left the text
        assert len(text[text.index(trigger):].split()) >= 300, variant  # the whole tail reached the text
    appended = _kept(cases["appended"])
    assert appended.index("minutes of the meeting") < appended.index(trigger)
    assert cases["appended"].index(trigger) > cases["appended"].index("</script>")


def test_hidden_blocks_go_after_a_paragraph_outside_scripts():
    block = '<div style="display:none">HIDDEN</div>'
    for seed in range(20):
        html = _after_paragraph(PAGE, block, random.Random(seed))
        assert html.index("HIDDEN") > html.index("</script>")
