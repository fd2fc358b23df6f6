"""HTML bytes to text: charset decoding and main-text extraction, one home for every ingest path.

Extractors (the registry ``EXTRACTORS``; chosen by ``[crawl] extractor`` and
``[ingest] extractor``, recorded per document as ``extractor`` and
``extractor_version``):

  trafilatura  the quality path: the best main-text F1 we measured (eval/extraction.py), pure
               Python on lxml, ~25 ms of CPU a page.
  resiliparse  the fast path: ~10x cheaper (C++ DOM and heuristics), keeps somewhat more
               boilerplate (lower precision, same recall).

Both get the same decoded HTML and the same title (from <title>), so documents differ only
in their text. docs/CRAWLING.md has the measurements and when to pick which.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
from importlib.metadata import PackageNotFoundError, version

from w3lib.encoding import html_body_declared_encoding, html_to_unicode, http_content_type_encoding, read_bom

# Bodies bigger than this are stored but not extracted: lxml on 50 MB of markup takes minutes.
MAX_EXTRACT_BYTES = 8 * 1024 * 1024

HTML_TYPES = ("text/html", "application/xhtml+xml")
_log = logging.getLogger(__name__)
# trafilatura logs every page it finds too short at WARNING; that is noise in a crawl log.
logging.getLogger("trafilatura").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Extracted:
    charset: str | None
    text: str | None
    title: str | None
    extractor: str
    extractor_version: str | None
    note: str | None = None  # why there is no text, when there is none


def media_type(content_type: str | None) -> str | None:
    """'text/html; charset=utf-8' -> 'text/html'."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def looks_like_html(content_type: str | None, body: bytes) -> bool:
    mt = media_type(content_type)
    if mt is not None:
        return mt in HTML_TYPES
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head


def decode(body: bytes, content_type: str | None) -> tuple[str, str]:
    """Decode like a browser: BOM, then Content-Type charset, then <meta>, then UTF-8 with replacement."""
    if read_bom(body)[0] is None and http_content_type_encoding(content_type) is None:
        declared = html_body_declared_encoding(body)
        if declared and declared.startswith(("utf-16", "utf-32")):
            # A <meta> that could be read as ASCII cannot be UTF-16 (or UTF-32): browsers decode such a
            # page as UTF-8 (WHATWG encoding sniffing); taking it at its word turns the text into noise.
            return html_to_unicode("text/html; charset=utf-8", body)
    charset, text = html_to_unicode(content_type, body)
    return charset, text


# <title> is an RCDATA element: its content cannot hold tags and ends at the first "</title",
# so a pattern finds it exactly, for a fraction of the cost of trafilatura's metadata pass.
_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def title_of(html: str) -> str | None:
    match = _TITLE.search(html, 0, 256 * 1024)
    if not match:
        return None
    return " ".join(unescape(match.group(1)).split()) or None


# ----- the extractors: HTML text in, main text (or None) out ------------------------------------
def _trafilatura(html: str, url: str | None) -> str | None:
    import trafilatura

    # with_metadata=False: trafilatura's metadata pass (dates, authors, ...) doubles the cost per page,
    # and the title comes from <title>. fast=True skips the fallback extractors (readability, jusText):
    # same F1 on the benchmark, ~15% less CPU (eval/extraction.py).
    doc = trafilatura.bare_extraction(html, url=url, fast=True, with_metadata=False, include_comments=False,
                                      favor_recall=True)
    return (getattr(doc, "text", None) or None) if doc is not None else None


def _resiliparse(html: str, url: str | None) -> str | None:
    from resiliparse.extract.html2text import extract_plain_text

    # comments=False: reader comments are not the page's text (trafilatura is called the same way).
    # alt_texts=False, post_meta=False: image alt texts and bylines/dates are not the article either;
    # dropping them raises precision 0.848 -> 0.891 on the benchmark at the same cost (eval/extraction.py).
    return extract_plain_text(html, main_content=True, comments=False, alt_texts=False, post_meta=False) or None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Extractor:
    name: str
    version: str | None  # None: the library is not installed
    main_text: Callable[[str, str | None], str | None]  # (html, url) -> main text, None when none found


EXTRACTORS: dict[str, Extractor] = {
    "trafilatura": Extractor("trafilatura", _version("trafilatura"), _trafilatura),
    "resiliparse": Extractor("resiliparse", _version("resiliparse"), _resiliparse),
}
DEFAULT_EXTRACTOR = "trafilatura"


def get_extractor(name: str | None = None) -> Extractor:
    """The registered extractor ``name`` (default: DEFAULT_EXTRACTOR); ValueError if unknown or not installed."""
    name = name or DEFAULT_EXTRACTOR
    found = EXTRACTORS.get(name)
    if found is None:
        raise ValueError(f"unknown extractor {name!r}; choose one of: {', '.join(EXTRACTORS)}")
    if found.version is None:
        raise ValueError(f"extractor {name!r}: the {name} package is not installed (run `make install`)")
    return found


def preload(name: str | None = None) -> None:
    """Import the extractor's library now (an extraction process does this before its first page)."""
    get_extractor(name).main_text("<html><body><p>warm-up</p></body></html>", None)


def extract(body: bytes, content_type: str | None, url: str | None = None, extractor: str | None = None) -> Extracted:
    """Extract text from a response body. Never raises on bad input: the reason lands in ``note``."""
    chosen = get_extractor(extractor)
    if not looks_like_html(content_type, body):
        return Extracted(None, None, None, "none", None, note=f"not HTML ({media_type(content_type) or 'unknown type'})")
    charset, html = decode(body, content_type)
    if len(body) > MAX_EXTRACT_BYTES:
        return Extracted(charset, None, None, chosen.name, chosen.version,
                         note=f"body of {len(body)} bytes exceeds the extraction limit of {MAX_EXTRACT_BYTES}")
    return extract_html(html, url, charset, extractor=chosen.name)


def extract_html(html: str, url: str | None = None, charset: str | None = None,
                 extractor: str | None = None) -> Extracted:
    chosen = get_extractor(extractor)
    title = title_of(html)
    try:
        text = chosen.main_text(html, url)
    except Exception as exc:  # the library on pathological markup
        _log.debug("extraction failed for %s: %s", url, exc)
        return Extracted(charset, None, title, chosen.name, chosen.version,
                         note=f"extraction failed: {type(exc).__name__}: {exc}")
    if text is None:
        return Extracted(charset, None, title, chosen.name, chosen.version, note="no main text found")
    return Extracted(charset, text, title, chosen.name, chosen.version)
