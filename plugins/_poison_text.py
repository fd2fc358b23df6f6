"""Text analysis shared by the poison detectors: invisible characters, normalisation, injection phrases, spans.

One home for what "invisible", "normalised" and "addressed to an AI reader" mean, so the Unicode,
hidden-content and prompt-injection detectors agree. Evidence spans follow the form documented in
docs/PLUGINS.md: ``{"field", "start", "end", "text", "payload"?}``, offsets in code points of the field.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

# ----- invisible characters ----------------------------------------------------------------------------
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e"
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
TAG_FIRST, TAG_LAST = 0xE0000, 0xE007F
CANCEL_TAG = 0xE007F
BLACK_FLAG = "\U0001f3f4"  # subdivision flags: U+1F3F4, tag letters, CANCEL TAG (England, Scotland, Wales)


def is_variation_selector(cp: int) -> bool:
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def variation_selector_byte(cp: int) -> int:
    """The byte a variation selector carries in the 'emoji smuggling' encoding (VS1-16: 0-15, VS17-256: 16-255)."""
    return cp - 0xFE00 if cp <= 0xFE0F else cp - 0xE0100 + 16


def visible(s: str) -> str:
    """``s`` with invisible and control characters written as <U+XXXX>, so a reviewer sees them."""
    out = []
    for ch in s:
        cp = ord(ch)
        if ch in ZERO_WIDTH or ch in BIDI_CONTROLS or TAG_FIRST <= cp <= TAG_LAST or is_variation_selector(cp) \
                or (cp < 32 and ch not in "\n\t"):
            out.append(f"<U+{cp:04X}>")
        else:
            out.append(ch)
    return "".join(out)


def span(field: str, start: int, end: int, text: str, payload: str | None = None, limit: int = 300) -> dict:
    """One evidence span; long texts are cut to ``limit`` characters (start/end still cover all of it)."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    out = {"field": field, "start": start, "end": end, "text": shown}
    if payload is not None:
        out["payload"] = payload if len(payload) <= limit else payload[:limit] + "…"
    return out


def decode_raw(raw: bytes | None, charset: str | None) -> str:
    """The raw body as text, in the charset ingest recorded (UTF-8 when unknown or unusable)."""
    if not raw:
        return ""
    try:
        codecs.lookup(charset or "utf-8")
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


# ----- normalisation -----------------------------------------------------------------------------------
# Cyrillic and Greek letters drawn like Latin ones (Unicode confusables.txt, the ones homograph attacks use):
# folded so "іgnоrе" reads "ignore". Only the matching text is folded, never the stored one.
CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ո": "n", "ս": "u", "к": "k", "м": "m",
    "н": "h", "т": "t", "г": "r", "п": "n", "ё": "e", "ї": "i", "ӑ": "a", "ӧ": "o",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Һ": "H", "Ӏ": "I",
    "ο": "o", "ν": "v", "ι": "i", "ρ": "p", "υ": "u", "κ": "k", "α": "a", "τ": "t",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}
_FOLD = {ord(k): v for k, v in CONFUSABLES.items()}
_FOLD.update({ord(c): None for c in ZERO_WIDTH + BIDI_CONTROLS + "\u00ad"})
_FOLD.update({cp: None for cp in range(0xFE00, 0xFE10)})
_FOLD.update({cp: None for cp in range(0xE0100, 0xE01F0)})
# Tag characters carry ASCII: decode them, so instructions smuggled that way are read like any others.
_FOLD.update({cp: chr(cp - TAG_FIRST) for cp in range(0xE0020, 0xE007F)})
_FOLD.update({cp: None for cp in (0xE0000, 0xE0001, 0xE007F)})


def normalise_char(ch: str) -> str:
    return unicodedata.normalize("NFKC", ch).translate(_FOLD)


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, tag characters decoded, confusables folded, lower case."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).translate(_FOLD).lower()


def normalise_with_offsets(text: str) -> tuple[str, list[int]]:
    """``normalise`` character by character, with the original offset of each normalised character
    (plus one past the end), so matches found in the normalised text map back to spans of the original."""
    out, where = [], []
    for i, ch in enumerate(text):
        piece = ch.lower() if ch.isascii() else normalise_char(ch).lower()
        out.append(piece)
        where.extend([i] * len(piece))
    where.append(len(text))
    return "".join(out), where


# ----- text addressed to AI readers --------------------------------------------------------------------
_AI = (r"(?:ai|a\.i\.|llms?|large language models?|language models?|chat ?bots?|ai assistants?|ai agents?|"
       r"gpt-?\d*|chatgpt|claude|gemini|copilot|ai models?|ai systems?|ai crawlers?)")
# Addressed to the machine itself, not "if you are an AI researcher": punctuation or a verb-like word follows.
_AI_END = (r"(?=\s*[,.:;!?)\-\u2014]|\s+(?:reading|processing|summari[sz]ing|crawling|scraping|parsing|"
           r"analy[sz]ing|indexing|trained|that|who|or|and|then|please|you|tasked|asked|model)\b)")
# (name, weight, pattern) on normalised lower-case text. Weights combine as independent evidence.
INJECTION_PATTERNS = [
    ("ignore_instructions", 1.0,
     r"\b(?:ignore|disregard|forget|override|bypass)\b(?:\s+\S+){0,3}?\s+(?:previous|prior|above|preceding|earlier|"
     r"former|all|any|your|system|original|initial)\b(?:\s+\S+){0,2}?\s+(?:instructions?|prompts?|rules|"
     r"directions|directives|guidelines|guardrails|constraints|programming|context)\b"),
    ("addressed_to_ai", 0.8,
     r"\b(?:if|when|since|as)\s+(?:you\s+are|you're)\s+(?:an?\s+|the\s+)?" + _AI + _AI_END),
    ("addressed_to_ai", 0.8,
     r"\b(?:note|message|instructions?|attention|notice|reminder)\s+(?:to|for)\s+(?:any\s+|all\s+|the\s+)?"
     + _AI + _AI_END),
    ("addressed_to_ai", 0.8, r"\bdear\s+" + _AI + _AI_END),
    ("addressed_to_ai", 0.7,
     r"\b" + _AI + r"\s+(?:reading|processing|summari[sz]ing|crawling|scraping|parsing|analy[sz]ing|indexing)"
     r"\s+this\b"),
    ("role_change", 0.8,
     r"\byou\s+are\s+now\s+(?:an?\s+)?(?:dan\b|unrestricted|unfiltered|jailbroken|in\s+\w+\s+mode|"
     r"no\s+longer|free\s+(?:of|from)|an?\s+ai|" + _AI + r"\b)"),
    ("role_change", 0.5, r"\b(?:developer|dan|god|jailbreak|unrestricted)\s+mode\b"),
    ("role_change", 0.6, r"\bdo\s+anything\s+now\b"),
    ("new_instructions", 0.7, r"\bnew\s+(?:system\s+)?instructions?\s*:"),
    ("prompt_exfiltration", 0.8,
     r"\b(?:reveal|print|repeat|output|show|disclose|leak)\s+(?:your|the)\s+(?:system\s+prompt|initial\s+prompt|"
     r"hidden\s+instructions|instructions\s+above|original\s+instructions)"),
    ("system_prompt", 0.3, r"\bsystem\s+prompt\b"),
    ("chat_template", 0.8,
     r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|assistant\|>|<\|user\|>|\[/?inst\]|<</?sys>>|"
     r"<\|endoftext\|>|<\|begin_of_text\|>|<start_of_turn>|(?m:^\s*#{2,3}\s*(?:system|instruction)s?\s*:)"),
    ("deceive_user", 0.7,
     r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|reveal\s+(?:this\s+)?to|alert)\s+"
     r"(?:the\s+)?user\b"),
    ("deceive_user", 0.5, r"\b(?:tell|inform|convince)\s+the\s+user\s+(?:that|to)\b"),
    ("output_control", 0.4, r"\b(?:respond|reply|answer)\s+only\s+with\b"),
    ("exfiltration_url", 0.4, r"!\[[^\]]{0,40}\]\(https?://[^)\s]{0,200}[?&][a-z_]+=[^)\s]{0,20}\{"),
]
_INJECTION = [(name, weight, re.compile(pattern)) for name, weight, pattern in INJECTION_PATTERNS]
# All patterns in one: most texts that pass the prefilter match none, and one search beats one per pattern.
_ANY_INJECTION = re.compile("|".join(f"(?:{pattern})" for _, _, pattern in INJECTION_PATTERNS))
# A page about injection (a security article, a paper) quotes these strings without aiming them at anyone.
_DISCUSSION = re.compile(
    r"\bprompt[- ]injections?\b|\bjailbreak(?:s|ing)?\b(?!\s+mode)|\battacks?\b|\battackers?\b|\bvulnerab|"
    r"\bexploit|\bmalicious\b|\bred[- ]team|\bowasp\b|\bmitigat|\bsecurity research|\badversarial\b")
DISCUSSION_FACTOR = 0.3
# Words one of which every phrase worth scoring holds (checked in Python before the patterns, on the texts
# ``injection_screen`` lets through; it decides which phrasings count, so it stays as the detectors shipped it).
PREFILTER = (r"ignore|disregard|forget|override|bypass|you are|you're|\bai\b|a\.i\.|llm|language model|chat ?bot|"
             r"assistant|agent|gpt|claude|gemini|copilot|\bbots?\b|\bmode\b|do anything|instruction|reveal|"
             r"system prompt|im_start|im_end|\|system\||\|user\||inst\]|<</?sys>>|endoftext|begin_of_text|"
             r"start_of_turn|the user|respond only|reply only|answer only|!\[|[\x{0370}-\x{04FF}]")
_PREFILTER_PY = re.compile(PREFILTER.replace("\\x{0370}-\\x{04FF}", "\u0370-\u04ff"))
INVISIBLE_RE2 = "[\\x{200B}-\\x{200D}\\x{2060}\\x{FEFF}\\x{180E}\\x{00AD}\\x{202A}-\\x{202E}\\x{2066}-\\x{2069}" \
                "\\x{FE00}-\\x{FE0F}\\x{E0100}-\\x{E01EF}]"


def _re2_superset(pattern: str) -> str:
    """An RE2 form of one of INJECTION_PATTERNS that matches wherever the Python pattern does (a screen, not a
    matcher): the lookahead and word boundaries dropped, Python's Unicode \\w and \\d widened; whitespace
    that NFKC keeps is mapped to a space before the screen (``injection_screen``), so RE2's ASCII \\s suffices."""
    out = pattern.replace(_AI_END, "").replace(r"\b", "").replace(r"\w", r"[\pL\pN_]").replace(r"\d", r"\p{Nd}")
    if any(look in out for look in ("(?=", "(?!", "(?<")):
        raise ValueError(f"no RE2 form for a pattern with a lookaround: {pattern}")
    return out


# Characters whose normalised form ``normalise`` derives in Python only (confusables, tag characters): rows
# holding any are candidates whatever RE2 finds.
_FOLDED_RE2 = "[" + "".join(f"\\x{{{ord(c):04X}}}" for c in sorted(CONFUSABLES)) + "\\x{E0000}-\\x{E007F}]"
INJECTION_SCREEN = "|".join(f"(?:{_re2_superset(p)})" for _, _, p in INJECTION_PATTERNS) + "|" + _FOLDED_RE2
# Whitespace that Python's \s matches, RE2's does not, and NFKC does not fold into a space.
_SPACE_RE2 = "[\\x{0B}\\x{1C}-\\x{1F}\\x{85}\\x{1680}\\x{2028}\\x{2029}]"


def injection_screen(texts) -> list[bool]:
    """Per text (a list or Arrow array of str): False where ``injection_hits`` cannot find anything. RE2 over
    all texts at once, on NFKC lower-cased text without invisible characters; Python looks only at the rest."""
    if not isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = pa.array(texts, pa.large_string())
    folded = pc.replace_substring_regex(pc.utf8_normalize(pc.fill_null(texts, ""), "NFKC"), INVISIBLE_RE2, "")
    folded = pc.utf8_lower(pc.replace_substring_regex(folded, _SPACE_RE2, " "))
    return pc.match_substring_regex(folded, INJECTION_SCREEN).to_pylist()


def injection_hits(text: str) -> tuple[float, list[tuple[str, float, int, int]], bool]:
    """(score, [(pattern name, weight, start, end) in the original text], the page discusses injection)."""
    norm = normalise(text)
    if not _PREFILTER_PY.search(norm) or not _ANY_INJECTION.search(norm):
        return 0.0, [], False
    found = [(name, weight, m) for name, weight, rx in _INJECTION for m in [rx.search(norm)] if m]
    if not found:
        return 0.0, [], False
    # Map matches back to the original text only for pages that have some (the per-character pass is slower).
    if len(norm) == len(text) and text.isascii():
        where = list(range(len(text) + 1))
    else:
        norm, where = normalise_with_offsets(text)
        found = [(name, weight, m) for name, weight, rx in _INJECTION for m in [rx.search(norm)] if m]
    miss, names, hits = 1.0, set(), []
    for name, weight, m in found:
        hits.append((name, weight, where[m.start()], where[min(m.end(), len(where) - 1)]))
        if name not in names:  # several phrasings of one idea are one piece of evidence
            names.add(name)
            miss *= 1.0 - weight
        else:
            miss *= 1.0 - weight / 4
    score = 1.0 - miss
    discussion = len(set(_DISCUSSION.findall(norm))) >= 2 or "prompt injection" in norm
    if discussion:
        score *= DISCUSSION_FACTOR
    return score, hits, discussion
