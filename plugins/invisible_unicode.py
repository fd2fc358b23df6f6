"""Invisible and confusable Unicode: characters a reader never sees that carry or disguise text.

Per document, on the extracted text and on the raw HTML (where attributes, comments and hidden
elements keep what extraction drops). One tag per kind, category ``poison``:

- ``unicode_tag_payload``: tag characters U+E0000-E007F ("ASCII smuggling"), decoded; a subdivision flag
  (U+1F3F4, tag letters, CANCEL TAG: England, Scotland, Wales) is an emoji, not a payload.
- ``variation_selector_payload``: a run of 3+ variation selectors (one after an emoji or a CJK ideograph is
  normal), decoded as bytes the way the "emoji smuggling" encoders write them.
- ``zero_width_in_word``: zero-width characters between letters of Latin, Greek or Cyrillic words (they split
  words to dodge filters); Persian, Arabic and Indic joiners and emoji ZWJ sequences never match. Where
  extraction dropped them, two or more split words in the raw HTML count.
- ``bidi_control``: bidi overrides (LRO/RLO, "Trojan Source"); right-to-left embeddings and isolates only in
  text with no right-to-left letters at all.
- ``mixed_script_word``: one word mixing Latin with Cyrillic letters, or with Greek letters drawn like Latin
  ones (homoglyphs such as "pаypal" with a Cyrillic "а"); the evidence shows the word as it reads.

Rows are screened in bulk (RE2 over the batch, a bytes pattern over raw bodies); Python looks only at the
few rows that hold a candidate character.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance.plugins._poison_text import (BIDI_CONTROLS, BLACK_FLAG, CANCEL_TAG, CONFUSABLES, TAG_FIRST,
                                             ZERO_WIDTH, decode_raw, is_variation_selector, span,
                                             variation_selector_byte, visible)

MAX_SPANS = 5
_TEXT_SCREEN = ("[\\x{200B}-\\x{200D}\\x{2060}\\x{FEFF}\\x{180E}\\x{202A}-\\x{202E}\\x{2066}-\\x{2069}"
                "\\x{FE00}-\\x{FE0F}\\x{E0000}-\\x{E007F}\\x{E0100}-\\x{E01EF}\\x{0370}-\\x{04FF}]")
# Raw bodies are screened in bulk (RE2 over the binary column: bytes, not characters) for the UTF-8 of tag
# characters and supplementary variation selectors, zero-width characters, RLE/LRO/RLO, RLI, three VS1-16 in a
# row, and numeric character references to those.
_RAW_SCREEN = (r"\xf3\xa0|\xe2\x80[\x8b-\x8d\xab\xad\xae]|\xe2\x81[\xa0\xa7]|(?:\xef\xb8[\x80-\x8f]){3}|"
               r"&#(?:[xX]0*(?:[eE]0[01][0-9a-fA-F]{2}|202[bBdDeE]|2067)|0*(?:917[5-9]\d\d|823[578]|8295));")


_LETTER = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u0370-\u03ff\u0400-\u04ff"
_ZW = "".join(ZERO_WIDTH)
# Starts only at a word's first letter, letters taken possessively: the same matches without trying every letter
# of every word of a raw page again and again.
_ZW_ANY = re.compile(f"[{_ZW}]")
_ZW_WORD = re.compile(f"(?<![{_LETTER}])[{_LETTER}]++(?:[{_ZW}]++[{_LETTER}]++)+")
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]|[\U00010800-\U00010fff]|[\U0001e800-\U0001efff]")
_OVERRIDES = "\u202d\u202e"
_RTL_STARTS = "\u202b\u2067"  # RLE, RLI: reorder only where there is right-to-left text to order
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")
_REF = r"&#(?:[xX]([0-9a-fA-F]{1,6})|(\d{1,7}));"
# A run of tag characters or variation selectors, literal or as character references (raw HTML).
_TAG_RUN = re.compile(f"(?:[\U000e0000-\U000e007f]|{_REF})+")
_VS_RUN = re.compile(f"(?:[\ufe00-\ufe0f\U000e0100-\U000e01ef]|{_REF})+")
_BIDI_RAW = re.compile(f"[{BIDI_CONTROLS}]|{_REF}")
# Cheap tests first (a character class, a literal prefix: fast in Python's re), so the run patterns above read
# a whole raw page only when it holds such a character or a reference that may be one (tag characters and
# supplementary variation selectors, VS1-16, bidi controls; decimal or hex, a superset).
_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]")
_VS_CHARS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_REF_HINT = re.compile(r"&#(?:[xX]0*(?:[eE]0[01][0-9a-fA-F]|[fF][eE]0|20[26])|0*(?:917[5-9]\d\d|650[23]\d|82[39]\d))")
_REF_RX = re.compile(_REF)
_CYRILLIC = "\u0400-\u04ff"
# Greek letters that pass for Latin ones; not α, κ, τ, which science writes beside Latin ("TNFα").
_GREEK_LIKE_LATIN = "".join(c for c in CONFUSABLES if "\u0370" <= c <= "\u03ff" and c not in "ακτυ")
_MIXED = re.compile(f"[A-Za-z{_CYRILLIC}{_GREEK_LIKE_LATIN}]*(?:[A-Za-z][A-Za-z{_CYRILLIC}{_GREEK_LIKE_LATIN}]*"
                    f"[{_CYRILLIC}{_GREEK_LIKE_LATIN}]|[{_CYRILLIC}{_GREEK_LIKE_LATIN}]"
                    f"[A-Za-z{_CYRILLIC}{_GREEK_LIKE_LATIN}]*[A-Za-z])[A-Za-z{_CYRILLIC}{_GREEK_LIKE_LATIN}]*")
_WORD_EDGE = re.compile(r"\w")
_FOLD_LETTERS = {ord(k): v for k, v in CONFUSABLES.items()}


def _code_points(run: str) -> list[tuple[int, int, int]]:
    """(start, end, code point) of each literal character or numeric reference in ``run``."""
    out, i = [], 0
    while i < len(run):
        if run[i] == "&":
            m = _REF_RX.match(run, i)
            cp = int(m.group(1), 16) if m.group(1) else int(m.group(2))
            out.append((i, m.end(), cp))
            i = m.end()
        else:
            out.append((i, i + 1, ord(run[i])))
            i += 1
    return out


def _groups(points, keep):
    """Consecutive stretches of ``points`` whose code point passes ``keep``."""
    group = []
    for p in points:
        if keep(p[2]):
            group.append(p)
        elif group:
            yield group
            group = []
    if group:
        yield group


def tag_payloads(s: str, field: str) -> list[dict]:
    spans = []
    if not _TAG_CHARS.search(s) and not _REF_HINT.search(s):
        return spans
    for m in _TAG_RUN.finditer(s):
        for g in _groups(_code_points(m.group()), lambda cp: TAG_FIRST <= cp <= CANCEL_TAG):
            start, end = m.start() + g[0][0], m.start() + g[-1][1]
            cps = [cp for _, _, cp in g]
            # England/Scotland/Wales: the black flag, then lower-case letters or digits, then CANCEL TAG.
            if s[max(0, start - 1):start] == BLACK_FLAG and cps[-1] == CANCEL_TAG and len(cps) <= 8 \
                    and all(0xE0030 <= cp <= 0xE0039 or 0xE0061 <= cp <= 0xE007A for cp in cps[:-1]):
                continue
            payload = "".join(chr(cp - TAG_FIRST) for cp in cps if 0xE0020 <= cp <= 0xE007E)
            spans.append(span(field, start, end, f"{len(cps)} tag characters", payload))
    return spans


def vs_payloads(s: str, field: str) -> list[dict]:
    spans = []
    if not _VS_CHARS.search(s) and not _REF_HINT.search(s):
        return spans
    for m in _VS_RUN.finditer(s):
        for g in _groups(_code_points(m.group()), is_variation_selector):
            if len(g) < 3:
                continue
            start, end = m.start() + g[0][0], m.start() + g[-1][1]
            data = bytes(variation_selector_byte(cp) for _, _, cp in g)
            carrier = visible(s[max(0, start - 1):start])
            spans.append(span(field, start, end, f"{carrier} + {len(g)} variation selectors",
                              data.decode("utf-8", errors="replace")))
    return spans


def zero_width_words(s: str, field: str) -> list[dict]:
    if not _ZW_ANY.search(s):
        return []
    return [span(field, m.start(), m.end(), visible(m.group())) for m in _ZW_WORD.finditer(s)]


def bidi_controls(s: str, field: str) -> list[dict]:
    if not _BIDI.search(s) and (field == "text" or not _REF_HINT.search(s)):
        return []
    rtl = _RTL.search(s) is not None
    spans = []
    for m in (_BIDI if field == "text" else _BIDI_RAW).finditer(s):
        cp = _code_points(m.group())[0][2]
        ch = chr(cp) if cp <= 0x10FFFF else ""
        if ch in _OVERRIDES or (ch in _RTL_STARTS and not rtl):
            context = s[max(0, m.start() - 20):m.end() + 40]
            spans.append(span(field, m.start(), m.end(), visible(context)))
    return spans


def mixed_script_words(s: str) -> list[dict]:
    spans = []
    for m in _MIXED.finditer(s):
        a, b = m.start(), m.end()
        # Only whole words: a letter of another script next to the match makes it part of a longer word.
        if (a and _WORD_EDGE.match(s[a - 1]) and not s[a - 1].isdigit()) or (b < len(s) and s[b].isalpha()):
            continue
        word = m.group()
        spans.append({**span("text", a, b, word), "reads": word.translate(_FOLD_LETTERS)})
    return spans


def _score_tag(spans):
    return 1.0 if any(len(s.get("payload", "")) >= 3 for s in spans) else 0.6


def _score_vs(spans):
    return 1.0 if any(s["end"] - s["start"] >= 8 for s in spans) else 0.6


def _score_count(base, step):
    return lambda spans: min(1.0, base + step * (len(spans) - 1))


_KINDS = {
    "unicode_tag_payload": _score_tag,
    "variation_selector_payload": _score_vs,
    "zero_width_in_word": _score_count(0.5, 0.1),
    "bidi_control": _score_count(0.7, 0.1),
    "mixed_script_word": _score_count(0.6, 0.1),
}


def scan(text: str, raw: str | None) -> dict[str, list[dict]]:
    """Evidence spans per kind found in one document's text and (already screened) raw HTML."""
    found = {kind: [] for kind in _KINDS}
    if text:
        found["unicode_tag_payload"] += tag_payloads(text, "text")
        found["variation_selector_payload"] += vs_payloads(text, "text")
        found["zero_width_in_word"] += zero_width_words(text, "text")
        found["bidi_control"] += bidi_controls(text, "text")
        found["mixed_script_word"] += mixed_script_words(text)
    if raw:
        found["unicode_tag_payload"] += tag_payloads(raw, "raw")
        found["variation_selector_payload"] += vs_payloads(raw, "raw")
        found["bidi_control"] += bidi_controls(raw, "raw")
        # Extractors may drop zero-width characters; the raw HTML still shows the split words.
        # One split word in markup is a stray character (a logo, a script); attacks split several.
        if not found["zero_width_in_word"]:
            split = zero_width_words(raw, "raw")
            found["zero_width_in_word"] += split if len({s["text"] for s in split}) >= 2 else []
    return found


class InvisibleUnicode(provenance.Detector):
    """Tag characters, variation-selector payloads, zero-width splits, bidi overrides, mixed-script words."""

    name = "invisible_unicode"
    version = "1"
    category = "poison"
    needs = ("text", "raw", "charset")

    def tag_batch(self, batch: pa.RecordBatch):
        text_col = pc.fill_null(batch.column("text"), "")
        text_hit = pc.match_substring_regex(text_col, _TEXT_SCREEN).to_pylist()
        raw_col = batch.column("raw")
        raw_hit = pc.fill_null(pc.match_substring_regex(raw_col.cast(pa.large_binary()), _RAW_SCREEN), False).to_pylist()
        charsets = batch.column("charset").to_pylist()
        texts = text_col.to_pylist()
        doc_ids = batch.column("doc_id").to_pylist()
        out_ids, out_tags, scores, evidence = [], [], [], []
        for i, doc_id in enumerate(doc_ids):
            if not (text_hit[i] or raw_hit[i]):
                continue
            raw = decode_raw(raw_col[i].as_py(), charsets[i]) if raw_hit[i] else None
            found = scan(texts[i] if text_hit[i] else "", raw)
            for kind, spans in found.items():
                if spans:
                    out_ids.append(doc_id)
                    out_tags.append(kind)
                    scores.append(_KINDS[kind](spans))
                    evidence.append({"count": len(spans), "spans": spans[:MAX_SPANS]})
        return self.tags(out_ids, out_tags, score=scores, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(InvisibleUnicode)
