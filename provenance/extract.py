"""HTML bytes to text: charset decoding and main-text extraction, one home for every ingest path.

Extractor: trafilatura. It is the maintained main-content extractor that scores
best on public article-extraction benchmarks, is pure Python on top of lxml
(installs everywhere), and returns title and text in one pass. resiliparse is
faster but its HTML-to-text default keeps boilerplate; speed can come later from
batching across processes (or Ray) rather than a weaker extractor.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from html import unescape
from importlib.metadata import version

from w3lib.encoding import html_body_declared_encoding, html_to_unicode, http_content_type_encoding, read_bom

EXTRACTOR = "trafilatura"
EXTRACTOR_VERSION = version("trafilatura")
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


def extract(body: bytes, content_type: str | None, url: str | None = None) -> Extracted:
    """Extract text from a response body. Never raises on bad input: the reason lands in ``note``."""
    if not looks_like_html(content_type, body):
        return Extracted(None, None, None, "none", None, note=f"not HTML ({media_type(content_type) or 'unknown type'})")
    charset, html = decode(body, content_type)
    if len(body) > MAX_EXTRACT_BYTES:
        return Extracted(charset, None, None, EXTRACTOR, EXTRACTOR_VERSION,
                         note=f"body of {len(body)} bytes exceeds the extraction limit of {MAX_EXTRACT_BYTES}")
    return extract_html(html, url, charset)


def extract_html(html: str, url: str | None = None, charset: str | None = None) -> Extracted:
    import trafilatura

    title = title_of(html)
    try:
        # with_metadata=False: trafilatura's metadata pass (dates, authors, ...) doubles the cost
        # per page, and the title we need comes from <title> above.
        doc = trafilatura.bare_extraction(html, url=url, with_metadata=False, include_comments=False,
                                          favor_recall=True)
    except Exception as exc:  # trafilatura/lxml on pathological markup
        _log.debug("extraction failed for %s: %s", url, exc)
        return Extracted(charset, None, title, EXTRACTOR, EXTRACTOR_VERSION,
                         note=f"extraction failed: {type(exc).__name__}: {exc}")
    if doc is None:
        return Extracted(charset, None, title, EXTRACTOR, EXTRACTOR_VERSION, note="no main text found")
    return Extracted(charset, getattr(doc, "text", None) or None, title, EXTRACTOR, EXTRACTOR_VERSION)
