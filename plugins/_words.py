"""Words as spaCy's blank English tokenizer cuts them, without spaCy.

datatrove computes the Gopher statistics (word counts, mean word length, the share of
alphabetic words) over spaCy's English tokens, so a threshold means the same here only
if our words are the same. spaCy itself is a large dependency tree and tokenizes about
five times slower than this module, so this is a re-statement of the rules spaCy
documents for its tokenizer ("Tokenization: how the tokenizer works"), written for the
cases that move those statistics:

1. split on whitespace;
2. from each chunk, strip prefixes (opening punctuation, quotes, currency, symbols) and
   suffixes (closing punctuation, quotes, ``'s``, a unit or currency after a number, a
   period after a lower-case letter, a digit or two capitals) until none is left,
   stopping early at a special case;
3. keep a special case (abbreviations such as "Mr.", "Calif.", "e.g." and single
   initials; contractions split as spaCy splits them) or a URL whole;
4. split what remains at infixes only: hyphens and ``:<>=/`` between a letter or digit
   and a letter ("well-known" splits, "B-52", "1/2" and "COVID-19" do not), arithmetic
   between digits, a period between a lower- and an upper-case letter, a comma between
   letters, ellipses and symbols.

spaCy's exception tables are longer (emoticons, a few hundred contractions); eval/quality.py
measures what the difference costs against datatrove on real text.
"""

from __future__ import annotations

import regex

_LETTERS = r"\p{L}"
# Scripts without case (Hangul, CJK, Arabic, ...) count as both lower and upper case, as in spaCy.
_LOWER, _UPPER = r"\p{Ll}\p{Lo}", r"\p{Lu}\p{Lo}"
_QUOTES = "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉"
_PUNCT = "…,:;!?¿؟¡()\\[\\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_CURRENCY = r"US\$|C\$|A\$|[$£€¥฿₽﷼₴₠-₿]"
_UNITS = ("km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|"
          "m/s|km/h|kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%")
_SYMBOL = r"[^\P{So}°]"  # "other symbols" (icons, emoji), the degree sign excepted
_QUOTE_CLASS = regex.escape(_QUOTES)

_PREFIX = regex.compile(
    r"(?:[§%=—–°]|\+(?![0-9])|\.\.+|…|[" + _PUNCT + _QUOTE_CLASS + "]|" + _CURRENCY + "|" + _SYMBOL + ")")
_SUFFIX = regex.compile(
    r"(?:[" + _PUNCT + _QUOTE_CLASS + r"]|\.\.+|…|" + _SYMBOL + r"|['’][sS]|[—–]"
    r"|(?<=[0-9])\+|(?<=°[FfCcKk])\.|(?<=°)[FfCcKk]|(?<=[0-9])°|(?<=[0-9])(?:" + _CURRENCY + ")|(?<=[0-9])(?:" + _UNITS + ")"
    r"|(?<=[0-9" + _LOWER + r"%²\-+" + _PUNCT + _QUOTE_CLASS + r"])\.|(?<=[" + _UPPER + "][" + _UPPER + r"])\.)$")
_INFIX = regex.compile(
    r"\.\.+|…|" + _SYMBOL
    + r"|(?<=[0-9])[+\-*^](?=[0-9-])"
    + r"|(?<=[" + _LOWER + _QUOTE_CLASS + r"])\.(?=[" + _UPPER + _QUOTE_CLASS + "])"
    + r"|(?<=" + _LETTERS + r"),(?=" + _LETTERS + ")"
    + r"|(?<=[" + _LETTERS + r"0-9])(?:---|--|——|-|–|—|~)(?=" + _LETTERS + ")"
    + r"|(?<=[" + _LETTERS + r"0-9])[:<>=/](?=" + _LETTERS + ")")
# URLs, bare domains with a path ("pic.twitter.com/x") and e-mail addresses stay one token.
_URL = regex.compile(r"(?i)(?:(?:https?|ftp)://|www\.)\S+|[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}/\S*|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

_EMOTICONS = ":) :-) :( :-( ;) ;-) (: ): (; ;( :] =) (= 8) :D :P :p <3 xD"
# An emoticon at the end of a chunk is one token ("said:)" -> "said" ":)"), as spaCy's special cases match there.
# Only those that start with punctuation: "1998)" is "1998" ")", not "199" "8)".
_EMOTICON_END = regex.compile("(?:" + "|".join(regex.escape(e) for e in _EMOTICONS.split() if not e[0].isalnum()) + ")$")
# Abbreviations that keep their period: titles, months, US states (AP style), Latin.
_ABBREVIATIONS = frozenset((
    "Adm. Bros. Co. Corp. Dr. Gen. Gov. Inc. Jr. Ltd. Messrs. Mr. Mrs. Ms. Mt. Prof. Rep. Rev. "
    "Sen. St. co. vs. v. v.s. e.g. E.g. E.G. i.e. I.e. I.E. a.m. p.m. Ph.D. Id. "
    "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. "
    "Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ill. Ind. Kan. Kans. Ky. La. Md. Mass. Mich. Minn. Miss. "
    "Mo. Mont. Neb. Nebr. Nev. Okla. Ore. Pa. Tenn. Va. Wash. Wis. Ak. Ia. D.C. N.C. N.D. N.H. N.J. N.M. N.Y. "
    "S.C. S.D. "
    # Kept whole too: a few fixed forms and the commonest emoticons.
    "'em ’em '' ’’ and/or " + _EMOTICONS).split()) | {
    c + "." for c in "abcdefghijklmnopqrstuvwxyzäöüABCDEFGHIJKLMNOPQRSTUVWXYZ"}
# Contractions: "n't" after any word ("do" "n't", "ca" "n't"); the other clitics only after pronouns, as
# spaCy's exceptions list them ("I" "'m", "they" "'ll"; "fill'd" stays one word).
_NT = regex.compile(r"(\p{L}\p{Ll}*)(n['’]t)")  # "don't", "Don't"; spaCy keeps "DON'T" whole
_PRONOUN_CLITIC = regex.compile(
    r"(?i)(i|you|he|she|it|we|they|who|what|where|when|why|how|there|that|this|these|those)"
    r"(['’](?:m|re|ve|ll|d))")
_WHOLE_WORD_SPLITS = {"cannot": ("can", "not"), "Cannot": ("Can", "not"), "Im": ("I", "m"), "im": ("i", "m"),
                      "gonna": ("gon", "na"), "Gonna": ("Gon", "na"), "gotta": ("got", "ta"), "Gotta": ("Got", "ta")}
# Verbs whose "n't" spaCy also splits when the apostrophe is missing ("dont" -> "do" "nt").
_BARE_NT_VERBS = frozenset("do does did ca could wo would should sha is are was were has have had ai must need might".split())


def _special(s: str) -> tuple[str, ...] | None:
    """The tokens of a special case, or None."""
    if s in _ABBREVIATIONS:
        return (s,)
    if s in _WHOLE_WORD_SPLITS:
        return _WHOLE_WORD_SPLITS[s]
    if s.endswith("nt") and s[:-2].lower() in _BARE_NT_VERBS and (s.islower() or s.istitle()):
        return (s[:-2], "nt")
    if "'" in s or "’" in s:
        m = _NT.fullmatch(s) or _PRONOUN_CLITIC.fullmatch(s)
        if m:
            return m.groups()
    return None


def _split_chunk(chunk: str) -> tuple[str, ...]:
    """One whitespace-free chunk's tokens: affixes off, then the core whole or cut at infixes."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    s = chunk
    core: tuple[str, ...] | None = None
    while s:
        core = _special(s)
        if core is not None:
            break
        m = _PREFIX.match(s)
        pre = m.end() if m else 0
        if pre and _special(s[pre:]) is not None:  # "(e.g." -> "(" "e.g."
            prefixes.append(s[:pre])
            s = s[pre:]
            continue
        m = _EMOTICON_END.search(s, 1) or _SUFFIX.search(s)
        suf = len(s) - m.start() if m else 0
        if suf and _special(s[:len(s) - suf]) is not None:  # "Calif.," -> "Calif." ","
            suffixes.append(s[len(s) - suf:])
            s = s[:len(s) - suf]
            continue
        if pre and suf and pre + suf <= len(s):
            prefixes.append(s[:pre])
            suffixes.append(s[len(s) - suf:])
            s = s[pre:len(s) - suf]
        elif pre:
            prefixes.append(s[:pre])
            s = s[pre:]
        elif suf:
            suffixes.append(s[len(s) - suf:])
            s = s[:len(s) - suf]
        else:
            break
    if core is None:
        if not s:
            core = ()
        elif _URL.fullmatch(s):
            core = (s,)
        else:
            core = _split_infixes(s)
    return (*prefixes, *core, *reversed(suffixes))


def _split_infixes(s: str) -> tuple[str, ...]:
    out, start = [], 0
    for m in _INFIX.finditer(s):
        if m.start() == 0:  # an infix at the very start stays attached to what follows
            continue
        if m.start() != start:
            out.append(s[start:m.start()])
        out.append(m.group())
        start = m.end()
    if start < len(s):
        out.append(s[start:])
    return tuple(out)


# Chunks repeat (Zipf): each distinct chunk is cut once. Cleared when it grows, so memory stays bounded.
_CACHE: dict[str, tuple[str, ...]] = {}
_CACHE_LIMIT = 200_000


def words(text: str) -> list[str]:
    """The text's words, as spaCy's blank English tokenizer would give them (module docstring)."""
    out: list[str] = []
    cache = _CACHE
    for chunk in text.split():
        tokens = cache.get(chunk)
        if tokens is None:
            tokens = _split_chunk(chunk)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[chunk] = tokens
        out.extend(tokens)
    return out
