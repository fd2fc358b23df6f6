"""Hidden content: text in the raw HTML that a reader never sees, scored by what it says.

Extractors let most hidden text through (docs/../shared threat model, section 4), so this reads the raw HTML
with lxml. Hidden are: elements hidden by an inline style (display:none, visibility:hidden, font-size 0,
opacity 0, off-screen positioning, clip, zero height, colour equal to the background) or by a class that a
``<style>`` block hides, the ``hidden`` and ``aria-hidden`` attributes, ``<template>`` and ``<noscript>``;
and text that is never rendered at all: comments, ``alt``/``title``/``aria-label`` attributes, ``<meta>``.

Hiding alone is normal (menus, modals, cookie banners, screen-reader labels), so a document is tagged for
what the hidden text says (category ``poison``):

- ``hidden_instructions``: hidden text addressed to an AI reader (the prompt-injection phrases of
  plugins/_poison_text.py, after normalisation); from any channel, attributes and comments included.
- ``hidden_links``: a hidden block linking to 3+ other sites, with prose or keyword anchors (link spam).
- ``hidden_prose``: long running prose hidden by a stealth technique (font-size 0, opacity 0, off-screen,
  clip, zero height, same colour): claims or text meant for machines, not a collapsed menu.

Evidence: the technique, the element, and the hidden text as a span of the raw HTML (offsets into the body
decoded with its charset; the span starts at the hidden text's first words).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
import pyarrow as pa

import provenance
from provenance.plugins._poison_text import decode_raw, injection_hits, span

MAX_SPANS = 5
_STEALTH = {"font-size:0", "opacity:0", "off-screen", "clip", "zero height", "same colour"}
_HIDING = [
    ("display:none", re.compile(r"display\s*:\s*none", re.I)),
    ("visibility:hidden", re.compile(r"visibility\s*:\s*(?:hidden|collapse)", re.I)),
    ("font-size:0", re.compile(r"font-size\s*:\s*(?:0+(?:\.0+)?|0?\.0\d*|1)\s*(?:px|pt|em|rem|%)?\s*(?:;|$|!)", re.I)),
    ("opacity:0", re.compile(r"(?<![-\w])opacity\s*:\s*0*(?:\.0+)?\s*(?:;|$|!)", re.I)),
    ("off-screen", re.compile(r"(?<![-\w])(?:left|top|right|text-indent|margin-left|margin-top)\s*:\s*-\d{3,}", re.I)),
    ("clip", re.compile(r"clip\s*:\s*rect\(\s*0(?:px)?[\s,]+0|clip-path\s*:\s*inset\(\s*(?:50|100)%", re.I)),
    ("zero height", re.compile(r"(?<![-\w])(?:max-)?height\s*:\s*0(?:px)?\s*(?:;|$|!)", re.I)),
]
_COLOUR = re.compile(r"(?<![-\w])(color|background(?:-color)?)\s*:\s*([#\w]+)", re.I)
_STYLE_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
_CLASS_SELECTOR = re.compile(r"^\s*\.([\w-]+)\s*$")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
# Hidden UI: what menus, dialogs, banners and screen-reader labels say.
_UI = re.compile(r"\b(?:cookies?|consent|menu|navigation|newsletter|subscribe|sign ?in|log ?in|password|search|"
                 r"close|skip to|loading|javascript|browser|share|datenschutz|anmelden|suche)\b", re.I)
_SKIP_TEXT = {"script", "style"}


def _technique(style: str) -> str | None:
    for name, rx in _HIDING:
        if rx.search(style):
            return name
    colours = {k.lower().split("-")[0]: v.lower() for k, v in _COLOUR.findall(style)}
    if "color" in colours and colours.get("background") == colours["color"]:
        return "same colour"
    return None


def hidden_classes(root) -> dict[str, str]:
    """Class names that a <style> block hides with a simple ``.name {...}`` rule, with the technique."""
    out = {}
    for style in root.iter("style"):
        for selectors, body in _STYLE_RULE.findall(style.text or ""):
            technique = _technique(body)
            if technique:
                for selector in selectors.split(","):
                    m = _CLASS_SELECTOR.match(selector)
                    if m:
                        out[m.group(1)] = technique
    return out


def _text_of(el) -> str:
    parts = []
    for node in el.iter():
        if isinstance(node.tag, str) and node.tag not in _SKIP_TEXT and node.text:
            parts.append(node.text)
        if node is not el and node.tail:
            parts.append(node.tail)
    return " ".join(" ".join(parts).split())


def hidden_elements(root):
    """(element, technique) for each hidden element not inside another hidden one."""
    classes = hidden_classes(root)
    found = {}
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        technique = None
        if el.tag in ("template", "noscript"):
            technique = f"<{el.tag}>"
        elif el.get("hidden") is not None:
            technique = "hidden attribute"
        elif el.get("aria-hidden") == "true":
            technique = "aria-hidden"
        elif el.get("style"):
            technique = _technique(el.get("style"))
        if technique is None and classes and el.get("class"):
            for name in el.get("class").split():
                if name in classes:
                    technique = f"class {name} ({classes[name]})"
                    break
        if technique and not any(a in found for a in el.iterancestors()):
            found[el] = technique
    return found.items()


def _site(url: str | None) -> str:
    host = (urlsplit(url).hostname or "") if url else ""
    return ".".join(host.split(".")[-2:])


def _prose_words(text: str) -> int:
    """Words in sentences: hidden prose, as opposed to lists of labels."""
    words = len(_WORD.findall(text))
    sentences = len(_SENTENCE_END.findall(text))
    return words if sentences and words / sentences >= 6 else 0


def analyse(html: str, url: str | None) -> dict[str, list[dict]]:
    """Evidence per tag for one raw HTML page."""
    found = {"hidden_instructions": [], "hidden_links": [], "hidden_prose": []}
    if not html.strip():
        return found
    try:
        root = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return found
    page_site = _site(url)

    def where(text: str, technique: str, element: str, **extra) -> dict:
        head = text.split(" ", 6)
        start = html.find(" ".join(head[:5])) if head else -1
        start = start if start >= 0 else html.find(head[0]) if head else -1
        entry = span("raw", start, start + len(text), text) if start >= 0 else {"field": "raw", "text": text[:300]}
        return {**entry, "technique": technique, "element": element, **extra}

    def instructions(text: str, technique: str, element: str) -> bool:
        score, hits, discussion = injection_hits(text)
        if hits and score >= 0.5:
            found["hidden_instructions"].append(
                {**where(text, technique, element), "score": round(score, 4), "patterns": sorted({h[0] for h in hits})})
            return True
        return False

    for el, technique in hidden_elements(root):
        text = _text_of(el)
        if not text:
            continue
        if instructions(text, technique, el.tag):
            continue
        links = [a.get("href") for a in el.iter("a") if (a.get("href") or "").startswith(("http://", "https://"))]
        other_sites = {_site(h) for h in links} - {page_site, ""}
        prose = _prose_words(text)
        if len(other_sites) >= 3 and (prose >= 20 or len(_WORD.findall(text)) >= 4 * len(links)) and not _UI.search(text):
            found["hidden_links"].append(where(text, technique, el.tag, sites=sorted(other_sites)[:10]))
        elif technique in _STEALTH and prose >= 25 and not _UI.search(text):
            found["hidden_prose"].append(where(text, technique, el.tag, words=prose))
    # Never rendered at all: only instructions count there (comments and meta descriptions hold prose).
    for node in root.iter(lxml.etree.Comment):
        if node.text and len(node.text) > 20:
            instructions(" ".join(node.text.split()), "comment", "comment")
    for el in root.xpath("//meta[@content]|//*[@alt or @title or @aria-label]"):
        for attr in ("content", "alt", "title", "aria-label"):
            value = el.get(attr)
            if value and len(value) > 20:
                instructions(value, f"{attr} attribute", el.tag)
    return found


_SCORES = {"hidden_instructions": lambda spans: max(s.get("score", 0.0) for s in spans),
           "hidden_links": lambda spans: min(1.0, 0.5 + 0.1 * len(spans)),
           "hidden_prose": lambda spans: min(1.0, 0.4 + 0.2 * len(spans))}


class HiddenContent(provenance.Detector):
    """Hidden HTML whose text addresses AI readers, links to other sites, or is long hidden prose."""

    name = "hidden_content"
    version = "1"
    category = "poison"
    needs = ("raw", "charset", "content_type", "url")

    def tag_batch(self, batch: pa.RecordBatch):
        doc_ids = batch.column("doc_id").to_pylist()
        raws, charsets = batch.column("raw").to_pylist(), batch.column("charset").to_pylist()
        types, urls = batch.column("content_type").to_pylist(), batch.column("url").to_pylist()
        out_ids, out_tags, scores, evidence = [], [], [], []
        for doc_id, raw, charset, content_type, url in zip(doc_ids, raws, charsets, types, urls):
            if not raw or (content_type and "html" not in content_type.lower()):
                continue
            for tag, spans in analyse(decode_raw(raw, charset), url).items():
                if spans:
                    out_ids.append(doc_id)
                    out_tags.append(tag)
                    scores.append(round(_SCORES[tag](spans), 4))
                    evidence.append({"count": len(spans), "spans": spans[:MAX_SPANS]})
        return self.tags(out_ids, out_tags, score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(HiddenContent)
