"""Quality heuristics: the Gopher quality and repetition rules, C4's and FineWeb's, as published.

Definitions: Gopher (Rae et al. 2021, appendix A, table A1), C4 (Raffel et al. 2020,
section 2.2) and FineWeb (Penedo et al. 2024), each statistic computed as datatrove
computes it (its ``GopherQualityFilter``, ``GopherRepetitionFilter``, ``C4QualityFilter``
and ``FineWebQualityFilter``), so a threshold means the same here as there;
eval/quality.py runs both on the same documents and prints where they disagree.

One detector per rule set. A document that fails any rule gets one tag, named after the
*first* failing rule in the published order (datatrove's order, so the reason matches
its), with a null score (a fact: ``doc_flags.quality_score`` is 1.0) and evidence
``{"rule", "value", "threshold", "failed": [every failing rule with its statistic]}``.
A document that passes gets no tag. Every threshold is an option; 0 turns a rule off,
as ``None`` does in datatrove.

Words. datatrove splits English with spaCy's blank English tokenizer; ``words``
(plugins/_words.py) cuts text by the same rules without spaCy, and eval/quality.py
measures what the remaining differences cost.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow as pa
import regex

import provenance
from provenance.plugins._words import words

_ALNUM = re.compile(r"[^\W_]")
# datatrove's TERMINAL_PUNCTUATION is Unicode's Sentence_Terminal property (plus three Khmer signs).
_TERMINAL = regex.compile(r"[\p{Sentence_Terminal}\u17d6\u17d9\u17da]$")
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def _failure(rule: str, value: float, threshold: float) -> dict:
    return {"rule": rule, "value": round(float(value), 4), "threshold": threshold}


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters (Gopher's duplicate lines/paragraphs)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def _top_ngram_chars(ws: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (its length times its count)."""
    counts = Counter(" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1))
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def _dup_ngram_chars(ws: list[str], n: int) -> int:
    """Characters in word n-grams that repeat an earlier one, overlapping repeats not counted twice."""
    seen: set[str] = set()
    chars = i = 0
    while i < len(ws) - n + 1:
        gram = "".join(ws[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class _RuleSet(provenance.Detector):
    """A per-document rule set: ``failures(text)`` lists the failing rules; the first names the tag."""

    category = "quality"
    needs = ("text",)

    def failures(self, text: str) -> list[dict]:
        raise NotImplementedError

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        bad = [k for k, v in merged.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0]
        if bad:
            raise provenance.detectors.DetectorError(f"detector {cls.name}: {bad} must be >= 0 (0 turns a rule off)")
        return merged

    def tag_batch(self, batch: pa.RecordBatch):
        ids, tags, evidence = [], [], []
        for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist()):
            failed = self.failures(text or "")
            if failed:
                ids.append(doc_id)
                tags.append(failed[0]["rule"])
                evidence.append(json.dumps({**failed[0], "failed": failed}))
        if not ids:
            return None
        return self.tags(ids, tags, evidence=evidence)


class GopherQuality(_RuleSet):
    """Gopher's quality rules: length, mean word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    name = "gopher_quality"
    version = "2"
    options = {
        "min_doc_words": 50,
        "max_doc_words": 100000,
        "min_avg_word_length": 3.0,
        "max_avg_word_length": 10.0,
        "max_symbol_word_ratio": 0.1,
        "max_bullet_lines_ratio": 0.9,
        "max_ellipsis_lines_ratio": 0.3,
        "min_alpha_words_ratio": 0.8,
        "min_stop_words": 2,
        "stop_words": "the be to of and that have with",
    }

    def __init__(self, **options):
        super().__init__(**options)
        self._stop_words = frozenset(self.options["stop_words"].split())

    def failures(self, text: str) -> list[dict]:
        o, out = self.options, []
        ws = words(text)
        n_words = len(ws)
        # Word counts and lengths leave out tokens of punctuation only.
        lengths = [len(w) for w in ws if _ALNUM.search(w)]
        n = len(lengths)
        if o["min_doc_words"] and n < o["min_doc_words"]:
            out.append(_failure("gopher_short_doc", n, o["min_doc_words"]))
        if o["max_doc_words"] and n > o["max_doc_words"]:
            out.append(_failure("gopher_long_doc", n, o["max_doc_words"]))
        if n_words == 0:
            return out
        if lengths:
            mean = sum(lengths) / n
            if o["min_avg_word_length"] and mean < o["min_avg_word_length"]:
                out.append(_failure("gopher_below_avg_word_length", mean, o["min_avg_word_length"]))
            if o["max_avg_word_length"] and mean > o["max_avg_word_length"]:
                out.append(_failure("gopher_above_avg_word_length", mean, o["max_avg_word_length"]))
        if o["max_symbol_word_ratio"]:
            hashes = text.count("#") / n_words
            if hashes > o["max_symbol_word_ratio"]:
                out.append(_failure("gopher_too_many_hashes", hashes, o["max_symbol_word_ratio"]))
            ellipses = (text.count("...") + text.count("…")) / n_words
            if ellipses > o["max_symbol_word_ratio"]:
                out.append(_failure("gopher_too_many_ellipsis", ellipses, o["max_symbol_word_ratio"]))
        lines = text.splitlines() or [""]
        if o["max_bullet_lines_ratio"]:
            bullets = sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
            if bullets > o["max_bullet_lines_ratio"]:
                out.append(_failure("gopher_too_many_bullets", bullets, o["max_bullet_lines_ratio"]))
        if o["max_ellipsis_lines_ratio"]:
            ending = sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
            if ending > o["max_ellipsis_lines_ratio"]:
                out.append(_failure("gopher_too_many_end_ellipsis", ending, o["max_ellipsis_lines_ratio"]))
        if o["min_alpha_words_ratio"]:
            alpha = sum(any(c.isalpha() for c in w) for w in ws) / n_words
            if alpha < o["min_alpha_words_ratio"]:
                out.append(_failure("gopher_below_alpha_threshold", alpha, o["min_alpha_words_ratio"]))
        if o["min_stop_words"]:
            stops = len(self._stop_words.intersection(ws))
            if stops < o["min_stop_words"]:
                out.append(_failure("gopher_too_few_stop_words", stops, o["min_stop_words"]))
        return out


class GopherRepetition(_RuleSet):
    """Gopher's repetition rules: duplicate lines and paragraphs, top n-grams, duplicate n-grams."""

    name = "gopher_repetition"
    version = "2"
    options = {
        "dup_line_frac": 0.3,
        "dup_para_frac": 0.3,
        "dup_line_char_frac": 0.2,
        "dup_para_char_frac": 0.2,
        **{f"top_{n}_gram_frac": f for n, f in ((2, 0.2), (3, 0.18), (4, 0.16))},
        **{f"dup_{n}_gram_frac": f for n, f in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))},
    }

    def failures(self, text: str) -> list[dict]:
        o, out = self.options, []
        if not text:
            return [_failure("empty_text", 0, 1)]
        size = len(text)
        paragraphs = _PARAGRAPHS.split(text.strip())
        n, chars = _duplicates(paragraphs)
        if o["dup_para_frac"] and n / len(paragraphs) > o["dup_para_frac"]:
            out.append(_failure("gopher_dup_para_frac", n / len(paragraphs), o["dup_para_frac"]))
        if o["dup_para_char_frac"] and chars / size > o["dup_para_char_frac"]:
            out.append(_failure("gopher_dup_para_char_frac", chars / size, o["dup_para_char_frac"]))
        lines = _LINES.split(text)
        n, chars = _duplicates(lines)
        if o["dup_line_frac"] and n / len(lines) > o["dup_line_frac"]:
            out.append(_failure("gopher_dup_line_frac", n / len(lines), o["dup_line_frac"]))
        if o["dup_line_char_frac"] and chars / size > o["dup_line_char_frac"]:
            out.append(_failure("gopher_dup_line_char_frac", chars / size, o["dup_line_char_frac"]))
        ws = words(text)
        for n in (2, 3, 4):
            limit = o[f"top_{n}_gram_frac"]
            if limit and len(ws) >= n:
                frac = _top_ngram_chars(ws, n) / size
                if frac > limit:
                    out.append(_failure(f"gopher_top_{n}_gram", frac, limit))
        for n in range(5, 11):
            limit = o[f"dup_{n}_gram_frac"]
            if limit:
                frac = _dup_ngram_chars(ws, n) / size
                if frac > limit:
                    out.append(_failure(f"gopher_dup_{n}_gram", frac, limit))
        return out


_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = regex.compile(r"\p{Sentence_Terminal}")
_PUNCTUATION = regex.compile(r"\p{P}+")


def _sentences(tokens: list[str]) -> int:
    """Sentences as spaCy's sentencizer counts them: after a sentence-ending token, the next token
    that is not punctuation starts a new one (so a closing quote or bracket stays with its sentence)."""
    count, ended = 1, False
    for token in tokens:
        if len(token) == 1 and _SENTENCE_END.match(token):
            ended = True
        elif ended and not _PUNCTUATION.fullmatch(token):
            count, ended = count + 1, False
    return count


class C4Quality(_RuleSet):
    """C4's rules: a page with lorem ipsum or a curly bracket, or under 5 sentences in lines C4 keeps, is dropped.

    A line is kept when it ends in terminal punctuation (not an ellipsis), has at least
    3 words, no word over 1000 characters, and names neither javascript nor a
    cookie/terms policy; Wikipedia-style citations are removed first. The bad-words
    list is left out, as in datatrove's ``C4QualityFilter`` (the list is a download).
    """

    name = "c4_quality"
    version = "2"
    options = {
        "min_num_sentences": 5,
        "min_words_per_line": 3,
        "max_word_length": 1000,
        "remove_citations": True,
        "filter_no_terminal_punct": True,
        "filter_lorem_ipsum": True,
        "filter_javascript": True,
        "filter_curly_bracket": True,
        "filter_policy": True,
    }

    def failures(self, text: str) -> list[dict]:
        o, out = self.options, []
        sentences = 0
        for line in text.splitlines():
            line = line.strip()
            ws = line.split()
            if o["max_word_length"] and any(len(w) > o["max_word_length"] for w in ws):
                continue
            if o["remove_citations"]:
                line = _CITATION.sub("", line)
            if o["filter_no_terminal_punct"] and (not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
                continue
            if len(ws) < o["min_words_per_line"]:
                continue
            lower = line.lower()
            if o["filter_lorem_ipsum"] and "lorem ipsum" in lower:
                return [_failure("c4_lorem_ipsum", 1, 0)]
            if o["filter_javascript"] and "javascript" in lower:
                continue
            if o["filter_curly_bracket"] and "{" in line:
                return [_failure("c4_curly_bracket", 1, 0)]
            if o["filter_policy"] and any(p in lower for p in _POLICY):
                continue
            sentences += _sentences(words(line))
        if o["min_num_sentences"] and sentences < o["min_num_sentences"]:
            out.append(_failure("c4_too_few_sentences", sentences, o["min_num_sentences"]))
        return out


class FineWebQuality(_RuleSet):
    """FineWeb's rules: lines ending in punctuation, short lines, duplicate-line characters, newlines per word."""

    name = "fineweb_quality"
    version = "2"
    options = {
        "line_punct_thr": 0.12,
        "line_punct_exclude_zero": False,
        "short_line_thr": 0.67,
        "short_line_length": 30,
        "char_duplicates_ratio": 0.01,
        "new_line_ratio": 0.3,
    }

    def failures(self, text: str) -> list[dict]:
        o, out = self.options, []
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return [_failure("empty_text", 0, 1)]
        punct = sum(1 for line in lines if _TERMINAL.search(line)) / len(lines)
        if punct < o["line_punct_thr"] and not (punct == 0 and o["line_punct_exclude_zero"]):
            out.append(_failure("fineweb_line_punct_ratio", punct, o["line_punct_thr"]))
        short = sum(1 for line in lines if len(line) <= o["short_line_length"]) / len(lines)
        if o["short_line_thr"] and short > o["short_line_thr"]:
            out.append(_failure("fineweb_short_line_ratio", short, o["short_line_thr"]))
        dup = _duplicates(lines)[1] / max(1, len(text) - text.count("\n"))
        if o["char_duplicates_ratio"] and dup > o["char_duplicates_ratio"]:
            out.append(_failure("fineweb_char_dup_ratio", dup, o["char_duplicates_ratio"]))
        per_word = text.count("\n") / max(1, len(words(text)))
        if o["new_line_ratio"] and per_word > o["new_line_ratio"]:
            out.append(_failure("fineweb_list_ratio", per_word, o["new_line_ratio"]))
        return out


@provenance.hookimpl
def register_detectors(register):
    for cls in (GopherQuality, GopherRepetition, C4Quality, FineWebQuality):
        register(cls)
