"""Consent: the machine-readable text-and-data-mining opt-outs each stored document carries.

Per document, from what was stored with it (no crawl changes, so WARC and
file imports get the same treatment as crawls): the response headers and, for
HTML, the page's ``<head>`` markup parsed with lxml. Signals read:

- TDMRep (W3C community group): ``tdm-reservation`` (``1`` reserved, ``0``
  not) and ``tdm-policy`` (a policy URL), as HTTP headers and as
  ``<meta name=...>``;
- robots directives: ``X-Robots-Tag`` headers (optionally ``agent: ...``) and
  ``<meta name="robots">`` or a crawler-specific ``<meta name="gptbot">``:
  ``noai``, ``noimageai``, ``noindex``, ``nofollow``, ...;
- licence hints: ``rel="license"`` links and Creative Commons licence links.

Tags (category ``consent``, score null: each states what the page says):
``tdm_reserved`` / ``tdm_not_reserved`` (any ``1`` wins: a reservation is
never overridden by a weaker signal; disagreement is marked ``conflict``),
``tdm_policy`` (a policy without a reservation value), one tag per known
directive (``noai``, ``noindex``, ...), ``license:<id>`` (score 0.5 when only a
bare Creative Commons link, not ``rel=license``, names it) and
``malformed_signal`` for values that do not parse. Every tag's evidence lists
its signals: where (``header``/``meta``/``link``/``a``), the name as written,
the raw value. Header names match case-insensitively; repeated headers are
all read. A document with no signal gets no tag.

robots.txt and ``/.well-known/tdmrep.json`` are per host, not per document,
and are not read here (see docs/DATA.md).
"""

from __future__ import annotations

import re
from collections import defaultdict
from urllib.parse import urlsplit

import provenance
from provenance.config import AI_AGENTS  # the one list of AI crawlers (re-exported here)

# Search crawlers whose names pages use for crawler-specific robots meta tags.
SEARCH_AGENTS = ("googlebot", "googlebot-news", "googlebot-image", "bingbot", "slurp", "yandex", "baiduspider",
                 "duckduckbot", "applebot")
# Directives that carry a value after a colon (so "max-snippet: 20" is not an agent prefix).
VALUE_DIRECTIVES = {"max-snippet", "max-image-preview", "max-video-preview", "unavailable_after"}
# Directives that become tags (the rest are recorded only when malformed).
TAGGED_DIRECTIVES = ("noai", "noimageai", "noindex", "nofollow", "none", "noarchive", "nosnippet",
                     "noimageindex", "notranslate", "nocache")
# What export --respect-opt-out honours: a TDMRep reservation and a noai directive (noimageai is about images).
RESERVATION_TAGS = ("tdm_reserved", "noai")
HTML_TYPES = {"text/html", "application/xhtml+xml"}
_TOKEN = re.compile(r"^[a-z0-9_-]+$")
_CC_LICENSE = re.compile(r"^/(licenses|publicdomain)/([a-z0-9.+-]+)(?:/([0-9.]+))?", re.I)


def cc_license_id(href: str) -> str | None:
    """``cc-by-sa-4.0``, ``cc0-1.0``, ``cc-pdm-1.0`` for a creativecommons.org licence (or badge) URL; else None."""
    try:
        parts = urlsplit(href.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if not (host == "creativecommons.org" or host.endswith(".creativecommons.org")):
        return None
    path = parts.path
    if host.startswith("i.") or host.startswith("licensebuttons"):  # badge images: /l/by/4.0/88x31.png, /p/zero/1.0/
        path = re.sub(r"^/l/", "/licenses/", re.sub(r"^/p/", "/publicdomain/", path))
    m = _CC_LICENSE.match(path)
    if not m:
        return None
    kind, name, version = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if kind == "publicdomain":
        name = {"zero": "cc0", "mark": "cc-pdm"}.get(name)
        if name is None:
            return None
    else:
        name = f"cc-{name}"
    return f"{name}-{version}" if version else name


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        return raw.decode("utf-8", errors="replace")


class _Signals:
    """What one document says, gathered before it becomes tags."""

    def __init__(self):
        self.tdm: list[dict] = []          # valid tdm-reservation values
        self.policies: list[dict] = []     # tdm-policy values
        self.directives: dict[str, list[dict]] = defaultdict(list)
        self.licenses: dict[str, list[dict]] = defaultdict(list)
        self.malformed: list[dict] = []

    def tdm_signal(self, source: str, name: str, value: str) -> None:
        """A TDMRep signal (tdm-reservation or tdm-policy) by whatever name it is given; others are ignored.
        Headers and <meta> carry the same names."""
        key = name.strip().lower()
        if key == "tdm-reservation":
            self.tdm_reservation(source, name, value)
        elif key == "tdm-policy":
            self.tdm_policy(source, name, value)

    def tdm_reservation(self, source: str, name: str, value: str) -> None:
        v = value.strip()
        signal = {"source": source, "name": name, "value": value}
        if v in ("0", "1"):
            self.tdm.append(signal)
        else:
            self.malformed.append({**signal, "problem": "tdm-reservation must be 0 or 1"})

    def tdm_policy(self, source: str, name: str, value: str) -> None:
        signal = {"source": source, "name": name, "value": value}
        parts = urlsplit(value.strip())
        if parts.scheme in ("http", "https") and parts.netloc:
            self.policies.append(signal)
        else:
            self.malformed.append({**signal, "problem": "tdm-policy must be an absolute http(s) URL"})

    def robots(self, source: str, name: str, value: str, agent: str | None) -> None:
        """One robots directive list (a meta content or an X-Robots-Tag value)."""
        text = value.strip()
        if agent is None and ":" in text:  # X-Robots-Tag: "googlebot: noindex, nofollow"
            head, rest = text.split(":", 1)
            if head.strip().lower() not in VALUE_DIRECTIVES and "," not in head and head.strip():
                agent, text = head.strip(), rest
        signal = {"source": source, "name": name, "value": value, "agent": agent}
        tokens = [t.strip().lower() for t in text.split(",")]
        if not any(tokens):
            self.malformed.append({**signal, "problem": "empty robots directive list"})
            return
        for token in tokens:
            directive = token.split(":", 1)[0].strip()
            if directive in TAGGED_DIRECTIVES:
                if signal not in self.directives[directive]:
                    self.directives[directive].append(signal)
            elif directive not in VALUE_DIRECTIVES and not _TOKEN.match(directive):
                self.malformed.append({**signal, "problem": f"not a robots directive: {token!r}"})

    def license(self, source: str, name: str, href: str, rel_license: bool) -> None:
        cc = cc_license_id(href)
        if cc is None and not rel_license:
            return
        self.licenses[cc or "other"].append({"source": source, "name": name, "value": href,
                                             "rel_license": rel_license})

    def tags(self) -> list[tuple[str, float | None, dict]]:
        out = []
        if self.tdm:
            values = {s["value"].strip() for s in self.tdm}
            tag = "tdm_reserved" if "1" in values else "tdm_not_reserved"
            out.append((tag, None, {"signals": self.tdm, "policies": self.policies, "conflict": len(values) > 1}))
        elif self.policies:
            out.append(("tdm_policy", None, {"signals": self.policies}))
        for directive in TAGGED_DIRECTIVES:
            if directive in self.directives:
                out.append((directive, None, {"signals": self.directives[directive]}))
        for lic, signals in sorted(self.licenses.items()):
            explicit = any(s["rel_license"] for s in signals)
            out.append((f"license:{lic}", None if explicit else 0.5, {"signals": signals}))
        if self.malformed:
            out.append(("malformed_signal", None, {"signals": self.malformed}))
        return out


class Consent(provenance.Detector):
    """TDMRep reservations, robots directives and licence hints, from headers and HTML markup."""

    name = "consent"
    version = "1"
    category = "consent"
    needs = ("url", "content_type", "charset", "headers", "raw")
    # ai_agents: crawler names whose <meta name=...> robots tags are read besides "robots" and search crawlers.
    options = {"ai_agents": list(AI_AGENTS)}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        if not all(isinstance(a, str) and a.strip() for a in merged["ai_agents"]):
            raise provenance.detectors.DetectorError("detector consent: ai_agents must be a list of agent names")
        return merged

    def __init__(self, **options):
        super().__init__(**options)
        self._meta_agents = {a.lower() for a in self.options["ai_agents"]} | set(SEARCH_AGENTS)

    def tag_batch(self, batch):
        doc_ids, tags, scores, evidence = [], [], [], []
        columns = {name: batch.column(name).to_pylist() for name in ("doc_id", "content_type", "charset")}
        headers_col, raw_col = batch.column("headers"), batch.column("raw")
        for i, doc_id in enumerate(columns["doc_id"]):
            signals = _Signals()
            self._read_headers(headers_col[i].as_py() or [], signals)
            if columns["content_type"][i] in HTML_TYPES:
                raw = raw_col[i].as_py()
                if raw:
                    self._read_html(_decode(raw, columns["charset"][i]), signals)
            for tag, score, ev in signals.tags():
                doc_ids.append(doc_id)
                tags.append(tag)
                scores.append(score)
                evidence.append(ev)
        if not doc_ids:
            return None
        return self.tags(doc_ids, tags, score=scores, evidence=evidence)

    @staticmethod
    def _read_headers(headers: list[dict], signals: _Signals) -> None:
        for h in headers:  # every occurrence: repeated headers are all read, in order
            name, value = h.get("name") or "", h.get("value") or ""
            if name.strip().lower() == "x-robots-tag":
                signals.robots("header", name, value, agent=None)
            else:
                signals.tdm_signal("header", name, value)

    def _read_html(self, html: str, signals: _Signals) -> None:
        import lxml.etree
        import lxml.html

        try:
            root = lxml.html.document_fromstring(html)
        except (lxml.etree.ParserError, ValueError):  # empty or unparseable document: no markup signals
            return
        for el in root.iter("meta", "link", "a", "img"):
            tag = el.tag
            if tag == "meta":
                name = el.get("name")
                content = el.get("content")
                if name is None or content is None:
                    continue
                key = name.strip().lower()
                if key == "robots":
                    signals.robots("meta", name, content, agent=None)
                elif key in self._meta_agents:
                    signals.robots("meta", name, content, agent=name.strip())
                else:
                    signals.tdm_signal("meta", name, content)
            elif tag in ("link", "a"):
                href = el.get("href")
                if href:
                    rel = (el.get("rel") or "").lower().split()
                    signals.license(tag, "rel=license" if "license" in rel else "href", href, "license" in rel)
            elif tag == "img":  # the Creative Commons badge
                src = el.get("src")
                if src and "creativecommons.org" in src:
                    signals.license("img", "src", src, False)


@provenance.hookimpl
def register_detectors(register):
    register(Consent)
