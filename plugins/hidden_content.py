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
import pyarrow as pa

import provenance
from provenance.plugins._poison_text import decode_raw, injection_hits, injection_screen, span

MAX_SPANS = 5
_STEALTH = {"font-size:0", "opacity:0", "off-screen", "clip", "zero height", "same colour"}
_HIDING = {
    "display_none": ("display:none", r"display\s*:\s*none"),
    "visibility": ("visibility:hidden", r"visibility\s*:\s*(?:hidden|collapse)"),
    "font_size": ("font-size:0", r"font-size\s*:\s*(?:0+(?:\.0+)?|0?\.0\d*|1)\s*(?:px|pt|em|rem|%)?\s*(?:;|$|!)"),
    "opacity": ("opacity:0", r"(?<![-\w])opacity\s*:\s*0*(?:\.0+)?\s*(?:;|$|!)"),
    "off_screen": ("off-screen", r"(?<![-\w])(?:left|top|right|text-indent|margin-left|margin-top)\s*:\s*-\d{3,}"),
    "clip": ("clip", r"clip\s*:\s*rect\(\s*0(?:px)?[\s,]+0|clip-path\s*:\s*inset\(\s*(?:50|100)%"),
    "zero_height": ("zero height", r"(?<![-\w])(?:max-)?height\s*:\s*0(?:px)?\s*(?:;|$|!)"),
}
# One pass per style: the group that matched names the technique.
_HIDING_RX = re.compile("|".join(f"(?P<{key}>{rx})" for key, (_, rx) in _HIDING.items()), re.I)
_COLOUR = re.compile(r"(?<![-\w])(color|background(?:-color)?)\s*:\s*([#\w]+)", re.I)
_CLASS_SELECTOR = re.compile(r"^\s*\.([\w-]+)\s*$")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
# Hidden UI: what menus, dialogs, banners and screen-reader labels say, and where slides and tabs live.
_UI = re.compile(r"\b(?:cookies?|consent|menu|navigation|newsletter|subscribe|sign ?in|log ?in|password|search|"
                 r"close|skip to|loading|javascript|browser|ad ?blocker|adblock|advertis\w*|paywall|datenschutz|anmelden|"
                 r"suche)\b", re.I)
UI_CLASS_DEPTH = 3
_PAGE_LEVEL = {"html", "body", "main", "article"}
_UI_CONTAINER = re.compile(r"slide|carousel|caption|gallery|swiper|slick|tab|accordion|collapse|modal|popup|"
                           r"dropdown|tooltip|menu|nav|fade|animat|reveal|aos|lightbox|overlay", re.I)
# Links to social networks are profile and share buttons, not spam.
_SOCIAL = {"facebook.com", "twitter.com", "x.com", "instagram.com", "linkedin.com", "youtube.com", "pinterest.com",
           "tiktok.com", "whatsapp.com", "t.me", "reddit.com", "xing.com", "flipboard.com", "tumblr.com"}
_SKIP_TEXT = {"script", "style"}
_STYLE_KEYS = ("none", "hidden", "collapse", "font-size", "opacity", ":-", ": -", "clip", "height", "background")
# Plain lxml elements: lxml.html's element classes cost a Python call for every node the code touches. The
# same tree without an index of id attributes (nothing here looks elements up by id): a third faster, measured.
_PARSER = lxml.etree.HTMLParser(collect_ids=False)
_STRING = lxml.etree.XPath("string()", smart_strings=False)  # lxml.html's text_content()


def _technique(style: str) -> str | None:
    lowered = style.lower()
    if not any(key in lowered for key in _STYLE_KEYS):
        return None
    m = _HIDING_RX.search(style)
    if m:
        return _HIDING[m.lastgroup][0]
    if "color" in style and "background" in style:
        colours = {k.lower().split("-")[0]: v.lower() for k, v in _COLOUR.findall(style)}
        if "color" in colours and colours.get("background") == colours["color"]:
            return "same colour"
    return None


# Where a stylesheet may hide something: found with str.find (fast on large stylesheets), then read as a rule.
_CSS_KEYS = ("display:none", "display: none", "visibility:hidden", "visibility: hidden", "font-size:0",
             "font-size: 0", "opacity:0", "opacity: 0", ":-9", ": -9", "clip:rect", "clip: rect", "height:0",
             "height: 0", "font-size:1px", "font-size: 1px")


def hidden_classes(root) -> dict[str, str]:
    """Class names that a <style> block hides with a simple ``.name {...}`` rule, with the technique."""
    out = {}
    for style in root.iter("style"):
        css = (style.text or "").lower()
        bodies = set()
        for key in _CSS_KEYS:
            at = css.find(key)
            while at >= 0:
                bodies.add((css.rfind("{", 0, at), css.find("}", at)))
                at = css.find(key, at + len(key))
        for open_at, close_at in bodies:
            if open_at < 0:
                continue
            technique = _technique(css[open_at + 1:close_at if close_at >= 0 else None])
            if technique:
                selectors = css[max(css.rfind("}", 0, open_at), css.rfind("{", 0, open_at)) + 1:open_at]
                names = [m.group(1) for m in map(_CLASS_SELECTOR.match, selectors.split(",")) if m]
                out.update(dict.fromkeys(names, technique))
    return out


def _text_of(el) -> str:
    parts = []
    for node in el.iter():
        if isinstance(node.tag, str) and node.tag not in _SKIP_TEXT and node.text:
            parts.append(node.text)
        if node is not el and node.tail:
            parts.append(node.tail)
    return " ".join(" ".join(parts).split())


def _walk(root, classes: dict[str, str]):
    """One pass over the tree (cheaper than libxml2's XPath, which took longer than parsing): the elements a
    style, an attribute or the tag may hide, in document order; those only a hidden class may hide; elements
    with a never-rendered attribute; comments."""
    candidates, by_class, never, comments = [], [], [], []
    for node in root.iter():
        tag = node.tag
        if not isinstance(tag, str):
            if tag is lxml.etree.Comment:
                comments.append(node)
            continue
        keys = node.keys()
        if "style" in keys or "hidden" in keys or ("aria-hidden" in keys and node.get("aria-hidden") == "true") \
                or tag == "template" or tag == "noscript":
            candidates.append(node)
        elif classes and "class" in keys and not classes.keys().isdisjoint(node.get("class").split()):
            by_class.append(node)
        if (tag == "meta" and "content" in keys) or "alt" in keys or "title" in keys or "aria-label" in keys:
            never.append(node)
    return candidates + by_class, never, comments


def hidden_elements(candidates, classes: dict[str, str]):
    """(element, technique, stealth) for each hidden element not inside another hidden one."""
    found = {}
    for el in candidates:
        technique = None
        if el.tag in ("template", "noscript"):
            technique = f"<{el.tag}>"
        elif el.get("hidden") is not None:
            technique = "hidden attribute"
        elif el.get("aria-hidden") == "true":
            technique = "aria-hidden"
        elif el.get("style"):
            technique = _technique(el.get("style"))
        stealth = technique in _STEALTH
        if technique is None and el.get("class"):
            for name in el.get("class").split():
                if name in classes:
                    technique, stealth = f"class {name} ({classes[name]})", classes[name] in _STEALTH
                    break
        if technique:
            found[el] = (technique, stealth)
    for el, (technique, stealth) in found.items():
        if not any(a in found for a in el.iterancestors()):
            yield el, technique, stealth


def _ui_context(el) -> bool:
    """A figure, a slide, a tab, a menu: hidden by design until the reader asks for it. A class or id says so
    only on the element or its ``UI_CLASS_DEPTH`` nearest ancestors, never on <body>, <main> or <article>:
    page- and post-level classes ("with-navbar", WordPress's "category-slider") named a menu or a slider
    somewhere on the page and hid real claims."""
    for depth, node in enumerate((el, *el.iterancestors())):
        if node.tag in ("figure", "figcaption", "nav", "dialog", "header", "footer"):
            return True
        if depth <= UI_CLASS_DEPTH and node.tag not in _PAGE_LEVEL and \
                _UI_CONTAINER.search((node.get("class") or "") + " " + (node.get("id") or "")):
            return True
    return False


def _site(url: str | None) -> str:
    host = (urlsplit(url).hostname or "") if url else ""
    return ".".join(host.split(".")[-2:])


def _prose_words(text: str) -> int:
    """Words in sentences: hidden prose, as opposed to lists of labels."""
    words = len(_WORD.findall(text))
    sentences = len(_SENTENCE_END.findall(text))
    return words if sentences and words / sentences >= 6 else 0


def scan(html: str, url: str | None):
    """What of one raw HTML page may become evidence: (hidden, never), or None when it does not parse.

    hidden: (text, technique, element, fallback) per hidden element with text, where fallback is the
    (tag, extra) it gets unless its text holds instructions; never: (text, channel, element) per comment or
    attribute long enough to hold instructions. Which texts may hold instructions is decided for a whole batch
    at once (``injection_screen``), so no text needs Python's injection patterns before that."""
    if not html or html.isspace():  # (strip() would copy the page)
        return None
    try:
        root = lxml.etree.fromstring(html, _PARSER)
    except (lxml.etree.ParserError, ValueError):
        return None
    if root is None:  # what lxml.html.document_fromstring reports as "Document is empty"
        return None
    page_site = _site(url)
    classes = hidden_classes(root)
    candidates, never_elements, comments = _walk(root, classes)
    hidden = []
    for el, technique, stealth in hidden_elements(candidates, classes):
        text = _text_of(el)
        if not text:
            continue
        fallback = None
        if not _UI.search(text):
            anchors = [a for a in el.iter("a") if (a.get("href") or "").startswith(("http://", "https://"))]
            other_sites = {_site(a.get("href")) for a in anchors} - {page_site, ""} - _SOCIAL
            if len(other_sites) >= 3:
                # Link spam sits in sentences; a hidden list of headlines or sister sites has no text around links.
                around = text
                for a in anchors:
                    around = around.replace(" ".join(_STRING(a).split()), " ", 1)
                if len(_WORD.findall(around)) >= 5 and _SENTENCE_END.search(around):
                    fallback = ("hidden_links", {"sites": sorted(other_sites)[:10]})
            if fallback is None:
                prose = _prose_words(text) if stealth else 0
                if prose >= 25 and not _ui_context(el):
                    fallback = ("hidden_prose", {"words": prose})
        hidden.append((text, technique, el.tag, fallback))
    # Never rendered at all: only instructions count there (comments and meta descriptions hold prose).
    never = [(" ".join(node.text.split()), "comment", "comment") for node in comments
             if node.text and len(node.text) > 20]
    for el in never_elements:
        for attr in ("content", "alt", "title", "aria-label"):
            value = el.get(attr)
            if value and len(value) > 20:
                never.append((value, f"{attr} attribute", el.tag))
    return hidden, never


def evidence(html: str, hidden, never, may_instruct) -> dict[str, list[dict]]:
    """Evidence per tag from ``scan``; ``may_instruct``: per text of hidden, then never, False where
    ``injection_screen`` rules out instructions."""
    found = {"hidden_instructions": [], "hidden_links": [], "hidden_prose": []}

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

    for (text, technique, element, fallback), maybe in zip(hidden, may_instruct):
        if maybe and instructions(text, technique, element):
            continue
        if fallback:
            found[fallback[0]].append(where(text, technique, element, **fallback[1]))
    for (text, technique, element), maybe in zip(never, may_instruct[len(hidden):]):
        if maybe:
            instructions(text, technique, element)
    return found


def analyse(html: str, url: str | None) -> dict[str, list[dict]]:
    """Evidence per tag for one raw HTML page."""
    scanned = scan(html, url)
    if scanned is None:
        return {"hidden_instructions": [], "hidden_links": [], "hidden_prose": []}
    hidden, never = scanned
    texts = [h[0] for h in hidden] + [n[0] for n in never]
    return evidence(html, hidden, never, injection_screen(texts) if texts else [])


_SCORES = {"hidden_instructions": lambda spans: max(s.get("score", 0.0) for s in spans),
           "hidden_links": lambda spans: min(1.0, 0.5 + 0.1 * len(spans)),
           "hidden_prose": lambda spans: min(1.0, 0.4 + 0.2 * len(spans))}


class HiddenContent(provenance.Detector):
    """Hidden HTML whose text addresses AI readers, links to other sites, or is long hidden prose."""

    name = "hidden_content"
    version = "2"  # 2: a class names UI only near the hidden element, never on <body>, <main>, <article>
    category = "poison"
    needs = ("raw", "charset", "content_type", "url")

    def tag_batch(self, batch: pa.RecordBatch):
        doc_ids = batch.column("doc_id").to_pylist()
        raws, charsets = batch.column("raw").to_pylist(), batch.column("charset").to_pylist()
        types, urls = batch.column("content_type").to_pylist(), batch.column("url").to_pylist()
        pages, texts = [], []
        for doc_id, raw, charset, content_type, url in zip(doc_ids, raws, charsets, types, urls):
            if not raw or (content_type and "html" not in content_type.lower()):
                continue
            scanned = scan(decode_raw(raw, charset), url)
            if scanned is not None:
                pages.append((doc_id, raw, charset, *scanned, len(texts)))
                texts += [h[0] for h in scanned[0]] + [n[0] for n in scanned[1]]
        # One RE2 pass over every hidden text of the batch: Python's injection patterns see only what it keeps.
        may_instruct = injection_screen(texts) if texts else []
        out_ids, out_tags, scores, out_evidence = [], [], [], []
        for doc_id, raw, charset, hidden, never, at in pages:
            maybe = may_instruct[at:at + len(hidden) + len(never)]
            if not any(maybe) and not any(h[3] for h in hidden):
                continue  # nothing to show: the page is not decoded again
            found = evidence(decode_raw(raw, charset), hidden, never, maybe)
            for tag, spans in found.items():
                if spans:
                    out_ids.append(doc_id)
                    out_tags.append(tag)
                    scores.append(round(_SCORES[tag](spans), 4))
                    out_evidence.append({"count": len(spans), "spans": spans[:MAX_SPANS]})
        return self.tags(out_ids, out_tags, score=scores, evidence=out_evidence)


@provenance.hookimpl
def register_detectors(register):
    register(HiddenContent)
