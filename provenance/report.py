"""``provenance report``: one self-contained HTML page about a store, to read on a laptop or attach to a release.

Five sections, each aggregated in DuckDB over the views of one read-only
snapshot (the sandboxed connection of provenance/sql.py), so Python only
formats small results:

  corpus      documents by crawl and registered domain, fetch dates, text
              lengths, languages (``language`` tags), crawl outcomes over time
  flagged     counts by category and tag, score distributions per detector,
              detector coverage and versions, the errors of the last tag runs
  examples    up to 3 flagged documents per tag with their evidence
  tail        what the selection (``--where``, by default what ``export``
              keeps) removes, by registered domain, length decile, language and
              near-duplicate cluster size; the human tier's composition
  provenance  store, snapshot, runs with config hashes and detector versions,
              tool version and time

Plots are matplotlib figures saved as SVG with ``svg.fonttype = 'none'`` and
put inline: a static page with no script, style sheet or font fetched from
anywhere, that opens offline and prints as it shows (and text in plots stays
text). Every value from the data (page text comes from untrusted web pages)
is HTML-escaped, invisible characters are shown as escapes, and only http(s)
URLs become links. The page is written in ASCII (other characters as
character references) to a temp file and renamed into place.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import duckdb

import provenance
from provenance import exitcodes
from provenance.export import DEFAULT_WHERE, OPT_OUT_TAGS_SQL, SELECTED_FROM
from provenance.sql import (NOT_FLAG_CATEGORIES, NOT_FLAG_TAGS, UserSQLError, boolean_predicate, connect,
                            first_line, flagging_tag_sql, sql_string)
from provenance.store import Snapshot, Store, atomic_write_text, coverage_kind, utcnow

TOP_N = 15  # rows of a "top" table or bar plot
EXAMPLES_PER_TAG = 3
EXCERPT_CHARS = 600
TIER_DETECTOR = "provenance_tier"
DEFAULT_CUTOFF = "2022-11-30"  # the provenance_tier detector's default, shown when no tag names its cut-off
# Tokens are approximated as characters / 4 (no tokenizer pass over the corpus): said on the page.
CHARS_PER_TOKEN = 4
# A group "loses the most" when its removed share of tokens is this many times the overall share (and >= 10%).
HIGHLIGHT_FACTOR = 2.0
OUTCOMES = ("new", "changed", "unchanged", "not_modified", "non_html", "not_found", "refused", "robots_denied",
            "integrity_mismatch", "error")
TIME_UNITS = (("minute", "%H:%M", 3 * 3600), ("hour", "%m-%d %H:00", 3 * 86400), ("day", "%Y-%m-%d", 120 * 86400),
              ("week", "%Y-%m-%d", 2 * 365 * 86400), ("month", "%Y-%m", float("inf")))
SECTIONS = ("corpus", "flagged", "examples", "tail", "provenance")


class ReportError(Exception):
    """A report that cannot be made (the output path is unusable, ...)."""

    exit_code = exitcodes.FAILURE


class ReportUsageError(ReportError):
    """A report asked for wrongly (bad predicate, --out a directory): exit 2, nothing written."""

    exit_code = exitcodes.USAGE


# ----- escaping ---------------------------------------------------------------------------------------
# Characters that do not show (or reorder what follows: bidi controls) are printed as escapes, so a reviewer
# sees the zero-width space that hides a payload. Categories: controls, format (ZWSP, bidi, tags), private use,
# unassigned, surrogates, line/paragraph separators; plus blank-looking letters and variation selectors.
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"}
_BLANK_LOOKING = {0x034F, 0x115F, 0x1160, 0x2800, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}


def _invisible(ch: str) -> bool:
    if ch in "\n\t ":
        return False
    cp = ord(ch)
    cat = unicodedata.category(ch)
    return cat in _INVISIBLE_CATEGORIES or cp in _BLANK_LOOKING or (cat == "Zs" and cp != 0xA0)


def _escape_code(ch: str) -> str:
    cp = ord(ch)
    return f"\\x{cp:02x}" if cp < 0x100 else (f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")


def visible(text: str) -> str:
    """``text`` with invisible characters replaced by their escapes (plain text: for plot labels)."""
    return "".join(_escape_code(c) if _invisible(c) else c for c in text)


def esc(value) -> str:
    """Any value as HTML text: escaped, invisible characters shown as highlighted escapes."""
    text = "" if value is None else str(value)
    out, plain = [], []
    for ch in text:
        if _invisible(ch):
            if plain:
                out.append(html.escape("".join(plain)))
                plain = []
            out.append(f'<span class="esc">{_escape_code(ch)}</span>')
        else:
            plain.append(ch)
    out.append(html.escape("".join(plain)))
    return "".join(out)


class Html(str):
    """Markup this module built (already escaped): table cells pass it through as is."""


def link(url: str | None, text: str | None = None) -> Html:
    """An http(s) URL as a link (href escaped, rel=noopener); any other scheme stays plain text."""
    label = esc(text if text is not None else url)
    try:
        ok = url is not None and urlsplit(url).scheme.lower() in ("http", "https")
    except ValueError:
        ok = False
    if not ok:
        return Html(label)
    return Html(f'<a href="{html.escape(url, quote=True)}" rel="noopener noreferrer">{label}</a>')


def _fmt(value) -> Html:
    if isinstance(value, Html):
        return value
    if value is None:
        return Html('<span class="muted">&ndash;</span>')
    if isinstance(value, bool):
        return Html("yes" if value else "no")
    if isinstance(value, int):
        return Html(f"{value:,}")
    if isinstance(value, float):
        return Html(f"{value:,.4g}")
    return Html(esc(value))


def pct(part: float, whole: float) -> Html:
    return Html(f"{100.0 * part / whole:.1f}%" if whole else "&ndash;")


def table(headers: list[str], rows: list[list], highlight: list[bool] | None = None, caption: str = "") -> Html:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="hot"' if highlight and highlight[i] else ""
        cells = "".join(f'<td{" class=num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""}>'
                        f"{_fmt(v)}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Html(f'<div class="tablewrap"><table>{cap}<thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>')


def no_data(why: str) -> Html:
    return Html(f'<p class="nodata">no data: {esc(why)}</p>')


# ----- plots ------------------------------------------------------------------------------------------
class Plots:
    """matplotlib figures as inline SVG; each figure gets its own id salt so ids never clash in one page."""

    def __init__(self):
        import matplotlib

        matplotlib.use("Agg", force=False)  # no display, no GUI toolkit
        self.count = 0

    def figure(self, width: float = 7.0, height: float = 3.0):
        from matplotlib.figure import Figure

        return Figure(figsize=(width, height), layout="tight")  # a third of "constrained"'s cost

    def svg(self, fig, title: str) -> Html:
        import matplotlib

        self.count += 1
        buf = io.StringIO()
        rc = {"svg.fonttype": "none", "svg.hashsalt": f"provenance-report-{self.count}"}
        with matplotlib.rc_context(rc):
            # No metadata: no date (reproducible pages), and none of its RDF resource URLs.
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
        svg = buf.getvalue()
        svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE: it is inline
        # Scale with the page (viewBox kept), no wider than drawn.
        svg = re.sub(r'^<svg ([^>]*?)width="([\d.]+)pt" height="([\d.]+)pt"',
                     lambda m: f'<svg {m.group(1)}class="plot" role="img" aria-label="{html.escape(title)}" '
                               f'style="max-width: {float(m.group(2)) * 4 / 3:.0f}px"', svg, count=1)
        return Html(f'<figure>{svg}<figcaption>{esc(title)}</figcaption></figure>')


def label(text, limit: int = 40) -> str:
    """Data as a plot label: invisible characters shown, '$' not read as mathtext, long labels cut."""
    text = visible("(none)" if text is None else str(text))
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def barh(plots: Plots, labels: list, values: list[float], title: str, xlabel: str) -> Html:
    fig = plots.figure(7.0, 0.9 + 0.28 * len(labels))
    ax = fig.add_subplot()
    ax.barh(range(len(labels)), values, color="#3b6ea5")
    ax.set_yticks(range(len(labels)), [label(x) for x in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return plots.svg(fig, title)


# ----- the data ---------------------------------------------------------------------------------------
@dataclass
class Context:
    con: duckdb.DuckDBPyConnection
    store: Store
    snapshot: Snapshot
    where: str
    respect_opt_out: bool
    plots: Plots
    n_docs: int = 0
    descriptions: dict = field(default_factory=dict)  # (detector, config_hash) -> description of a tag run

    def rows(self, sql: str, params=None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def one(self, sql: str, params=None):
        return self.con.execute(sql, params or []).fetchone()


# doc_flags computes lists, maps and scores per document: most of the cost of a selection at 1M documents. A
# predicate that binds over the documents columns and ``flagged`` alone (the default, NOT flagged, does) runs
# over this relation instead: the same columns with the same values (flagged by the same rule, from _tags).
FLAGGED_ONLY_FROM = """(
    SELECT *, doc_id IN (SELECT doc_id FROM _tags WHERE {flagging}) AS flagged FROM documents
) AS documents"""

# One row per document, with everything the sections group by: the only pass over the text column.
BASE_SQL = """
CREATE TEMP TABLE _base AS
SELECT doc_id, crawl_id, coalesce(registered_domain, domain) AS _reg, fetched_at AS _fetched_at,
       coalesce(length(text), 0) AS _chars, flagged AS _flagged, coalesce(({where}), false) AS _kept
FROM {selected_from}
"""

# The tag columns the sections aggregate (no evidence; versions come from the runs): read from the tag files once.
TAGS_SQL = """
CREATE TEMP TABLE _tags AS SELECT doc_id, detector, config_hash, category, tag, score FROM tags
"""

# Per document: its language (the language detector's likeliest) and its human-tier tag, in one pass.
DOCS_SQL = """
CREATE TEMP TABLE _docs AS
WITH per_doc AS (
    SELECT doc_id,
           arg_max(substr(tag, 6), coalesce(score, 1.0)) FILTER (WHERE category = 'language') AS lang,
           min(tag) FILTER (WHERE detector = {tier}) AS tier
    FROM _tags WHERE (category = 'language' AND starts_with(tag, 'lang_')) OR detector = {tier} GROUP BY doc_id
),
cl AS (SELECT doc_id, max(cluster_size) AS cluster_size FROM clusters GROUP BY doc_id)
SELECT b.*, {kept} AS kept, p.lang, p.tier, coalesce(c.cluster_size, 1) AS cluster_size
FROM _base b LEFT JOIN per_doc p USING (doc_id) LEFT JOIN cl c USING (doc_id)
"""


def _prepare(ctx: Context) -> None:
    ctx.con.execute(TAGS_SQL)
    selected_from = FLAGGED_ONLY_FROM.format(flagging=flagging_tag_sql())
    try:
        ctx.con.execute(f"DESCRIBE SELECT ({ctx.where}) FROM {selected_from} WHERE ({ctx.where})")
    except duckdb.Error:  # it reads other doc_flags columns
        selected_from = SELECTED_FROM
    try:
        ctx.con.execute(BASE_SQL.format(where=ctx.where, selected_from=selected_from))
    except duckdb.Error as exc:  # it parsed and bound, but failed on the data (a bad cast)
        raise ReportUsageError(f"--where {ctx.where!r} failed: {first_line(exc)}") from None
    kept = "b._kept"
    if ctx.respect_opt_out:  # what export --respect-opt-out leaves out too
        ctx.con.execute(f"CREATE TEMP TABLE _opted_out AS SELECT DISTINCT doc_id FROM ({OPT_OUT_TAGS_SQL})")
        kept = "b._kept AND b.doc_id NOT IN (SELECT doc_id FROM _opted_out)"
    ctx.con.execute(DOCS_SQL.format(kept=kept, tier=sql_string(TIER_DETECTOR)))
    ctx.n_docs = ctx.one("SELECT count(*) FROM _docs")[0]
    for (config,) in ctx.rows("SELECT config FROM runs WHERE command = 'tag' ORDER BY started_at"):
        for d in _json(config).get("detectors", []):
            ctx.descriptions[(d.get("detector"), d.get("config_hash"))] = d


def _json(text) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _utc(epoch_s) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, timezone.utc)


def _time_bins(lo: float, hi: float, n: int = 40) -> float:
    return max((hi - lo) / n, 1.0)


# ----- 1. corpus --------------------------------------------------------------------------------------
def section_corpus(ctx: Context) -> Html:
    if not ctx.n_docs:
        return no_data("the store holds no documents")
    parts = []
    total_chars, n_crawls, n_regs = ctx.one("SELECT sum(_chars), count(DISTINCT crawl_id), count(DISTINCT _reg) "
                                            "FROM _docs")
    parts.append(f"<p>{ctx.n_docs:,} documents, {int(total_chars or 0):,} characters of text, from {n_crawls:,} "
                 f"crawl(s) or import(s) and {n_regs:,} registered domain(s).</p>")
    crawls = ctx.rows("SELECT crawl_id, count(*), sum(_chars) FROM _docs GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
                      [TOP_N])
    parts.append("<h3>By crawl or import</h3>" + table(
        ["crawl_id", "documents", "share", "characters"],
        [[c, n, pct(n, ctx.n_docs), int(ch or 0)] for c, n, ch in crawls],
        caption=f"top {TOP_N} of {n_crawls:,}" if n_crawls > TOP_N else ""))
    regs = ctx.rows("SELECT _reg, count(*), sum(_chars) FROM _docs GROUP BY 1 ORDER BY 2 DESC, 1 NULLS LAST "
                    "LIMIT ?", [TOP_N])
    parts.append("<h3>By registered domain</h3>")
    parts.append(barh(ctx.plots, [r[0] for r in regs], [r[1] for r in regs],
                      f"Documents per registered domain (top {min(TOP_N, n_regs)} of {n_regs:,})", "documents"))
    parts.append(table(["registered domain", "documents", "share", "characters"],
                       [[r, n, pct(n, ctx.n_docs), int(ch or 0)] for r, n, ch in regs]))
    parts.append("<h3>Fetch dates</h3>" + _fetch_dates(ctx))
    parts.append("<h3>Text lengths</h3>" + _lengths(ctx))
    parts.append("<h3>Languages</h3>" + _languages(ctx))
    parts.append("<h3>Crawl outcomes over time</h3>" + _outcomes(ctx))
    parts.append("<h3>Consent: text-and-data-mining opt-outs</h3>" + _consent(ctx))
    return Html("".join(parts))


# Per registered domain: documents under each kind of reservation (the consent view; documents without any
# consent tag or policy-file record are not in it and count as no signal).
CONSENT_BY_DOMAIN_SQL = """
SELECT d._reg, count(*) AS n,
       count(*) FILTER (WHERE c.tdm_reserved = 'true') AS tdm,
       count(*) FILTER (WHERE len(c.ai_agents_disallowed) > 0) AS robots_ai,
       count(*) FILTER (WHERE list_has_any(c.directives, ['noai', 'noimageai'])) AS noai,
       count(*) FILTER (WHERE c.license IS NOT NULL) AS licensed
FROM _docs d LEFT JOIN consent c USING (doc_id)
GROUP BY 1 ORDER BY tdm + robots_ai + noai DESC, n DESC, 1 NULLS LAST
"""


def _consent(ctx: Context) -> Html:
    signals = ctx.one("SELECT count(*) FROM _tags WHERE detector = 'consent'")[0] or ctx.one(
        "SELECT count(*) FROM fetches WHERE robots_sha256 IS NOT NULL OR tdmrep_status IS NOT NULL")[0]
    if not signals:  # the consent view would scan the tags again to find nothing
        return no_data("no document carries an opt-out or licence signal (or the consent detector has not run: "
                       "provenance tag --plugins consent)")
    rows = ctx.rows(CONSENT_BY_DOMAIN_SQL)
    totals = [sum(r[i] for r in rows) for i in range(1, 6)]
    if not any(totals[1:]):
        return no_data("no document carries an opt-out or licence signal (or the consent detector has not run: "
                       "provenance tag --plugins consent)")
    n, tdm, robots_ai, noai, licensed = totals
    intro = (f"<p>Of {n:,} documents: {pct(tdm, n)} reserved by TDMRep (header, meta or the host's tdmrep.json), "
             f"{pct(robots_ai, n)} on hosts whose robots.txt refuses at least one AI agent, {pct(noai, n)} with a "
             f"noai/noimageai directive, {pct(licensed, n)} naming a licence. <code>export --respect-opt-out</code> "
             "leaves out the TDMRep reservations and noai directives.</p>")
    shown = [r for r in rows if r[2] or r[3] or r[4]][:TOP_N]
    return Html(intro + table(
        ["registered domain", "documents", "TDM reserved", "robots.txt refuses AI agents", "noai", "licence"],
        [[r[0], r[1], pct(r[2], r[1]), pct(r[3], r[1]), pct(r[4], r[1]), pct(r[5], r[1])] for r in shown],
        caption=f"domains with an opt-out, most first (top {TOP_N})"))


def _fetch_dates(ctx: Context) -> Html:
    lo, hi, undated = ctx.one("SELECT min(epoch(_fetched_at)), max(epoch(_fetched_at)), "
                              "count(*) FILTER (WHERE _fetched_at IS NULL) FROM _docs")
    if lo is None:
        return no_data("no document has a fetch date")
    width = _time_bins(lo, hi)
    bins = ctx.rows("SELECT least(floor((epoch(_fetched_at) - ?) / ?), 39)::INT AS b, count(*) FROM _docs "
                    "WHERE _fetched_at IS NOT NULL GROUP BY 1 ORDER BY 1", [lo, width])
    import matplotlib.dates as mdates

    fig = ctx.plots.figure(7.0, 2.6)
    ax = fig.add_subplot()
    starts = [mdates.date2num(_utc(lo + b * width)) for b, _ in bins]
    ax.bar(starts, [n for _, n in bins], width=width / 86400, align="edge", color="#3b6ea5")
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_ylabel("documents")
    ax.grid(axis="y", alpha=0.3)
    note = f" {undated:,} document(s) have no fetch date." if undated else ""
    return Html(ctx.plots.svg(fig, "Documents by fetch date (UTC)")
                + f"<p>From {_utc(lo):%Y-%m-%d %H:%M} to {_utc(hi):%Y-%m-%d %H:%M} UTC.{note}</p>")


def _lengths(ctx: Context) -> Html:
    # Eight bins per decade of characters; empty texts apart.
    bins = ctx.rows("SELECT floor(log10(_chars) * 8)::INT AS b, count(*) FROM _docs WHERE _chars > 0 "
                    "GROUP BY 1 ORDER BY 1")
    empty = ctx.one("SELECT count(*) FROM _docs WHERE _chars = 0")[0]
    if not bins:
        return no_data("every document's text is empty")
    q = ctx.one("SELECT quantile_disc(_chars, [0.1, 0.5, 0.9]) FROM _docs WHERE _chars > 0")[0]
    fig = ctx.plots.figure(7.0, 2.6)
    ax = fig.add_subplot()
    edges = [10 ** (b / 8) for b, _ in bins]
    ax.bar(edges, [n for _, n in bins], width=[e * (10 ** (1 / 8) - 1) for e in edges], align="edge",
           color="#3b6ea5")
    ax.set_xscale("log")
    ax.set_xlabel("characters of extracted text (log scale)")
    ax.set_ylabel("documents")
    ax.grid(axis="y", alpha=0.3)
    note = f" {empty:,} document(s) have no text." if empty else ""
    return Html(ctx.plots.svg(fig, "Text lengths")
                + f"<p>Median {q[1]:,} characters; 10% are shorter than {q[0]:,}, 10% longer than {q[2]:,}.{note}</p>")


def _languages(ctx: Context) -> Html:
    langs = ctx.rows("SELECT coalesce(lang, '(untagged)'), count(*) FROM _docs GROUP BY 1 ORDER BY 2 DESC, 1")
    if all(lang == "(untagged)" for lang, _ in langs):
        return no_data("no language tags (run: provenance tag --plugins language)")
    shown = langs[:TOP_N]
    return Html(table(["language", "documents", "share"], [[lang, n, pct(n, ctx.n_docs)] for lang, n in shown],
                      caption=f"top {TOP_N} of {len(langs)}" if len(langs) > TOP_N else ""))


def _outcomes(ctx: Context) -> Html:
    lo, hi, total = ctx.one("SELECT min(epoch(fetched_at)), max(epoch(fetched_at)), count(*) FROM fetches")
    if not total:
        return no_data("no crawl fetches recorded (imports record none)")
    span = hi - lo
    # A bar per minute, hour, day, week or month: whichever gives at most ~180 bars.
    unit, fmt = next((u, f) for u, f, limit in TIME_UNITS if span <= limit)
    rows = ctx.rows(f"SELECT epoch(date_trunc('{unit}', fetched_at)) AS t, outcome, count(*) FROM fetches "
                    f"GROUP BY ALL ORDER BY 1")
    totals = ctx.rows("SELECT outcome, count(*), count(*) FILTER (WHERE error IS NOT NULL) FROM fetches "
                      "GROUP BY 1 ORDER BY 2 DESC")
    periods = sorted({t for t, _, _ in rows})
    outcomes = sorted({o for _, o, _ in rows}, key=lambda o: (OUTCOMES.index(o) if o in OUTCOMES else 99, o))
    counts = {(t, o): n for t, o, n in rows}
    fig = ctx.plots.figure(7.0, 2.8)
    ax = fig.add_subplot()
    bottom = [0] * len(periods)
    for o in outcomes:
        values = [counts.get((t, o), 0) for t in periods]
        ax.bar(range(len(periods)), values, bottom=bottom, label=label(o))
        bottom = [b + v for b, v in zip(bottom, values)]
    step = max(1, len(periods) // 12)
    ax.set_xticks(range(0, len(periods), step), [_utc(t).strftime(fmt) for t in periods[::step]], fontsize=7,
                  rotation=30, ha="right")
    ax.set_ylabel(f"fetches per {unit}")
    ax.legend(fontsize=7, ncols=min(5, len(outcomes)), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return Html(ctx.plots.svg(fig, f"Crawl fetch outcomes per {unit} (UTC)")
                + table(["outcome", "fetches", "share", "with an error message"],
                        [[o, n, pct(n, total), e] for o, n, e in totals]))


# ----- 2. flagged -------------------------------------------------------------------------------------
def section_flagged(ctx: Context) -> Html:
    n_tags = ctx.one("SELECT count(*) FROM _tags")[0]
    if not ctx.n_docs or not n_tags:
        return no_data("no tags (run: provenance tag)" if ctx.n_docs else "the store holds no documents")
    parts = []
    n_flagged = ctx.one("SELECT count(*) FROM _docs WHERE _flagged")[0]
    parts.append(f"<p>{n_flagged:,} of {ctx.n_docs:,} documents ({pct(n_flagged, ctx.n_docs)}) carry at least one "
                 f"flagging tag; {n_tags:,} live tags in all. Tags of the categories "
                 f"{esc(', '.join(NOT_FLAG_CATEGORIES))} and {esc(', '.join(NOT_FLAG_TAGS))} describe documents "
                 f"and never flag them.</p>")
    by_tag = ctx.rows(f"SELECT category, tag, {flagging_tag_sql()} AS flags, count(DISTINCT doc_id), count(*) "
                      f"FROM _tags GROUP BY ALL ORDER BY flags DESC, 4 DESC, 1, 2")
    by_cat = ctx.rows(f"SELECT category, bool_or({flagging_tag_sql()}), count(DISTINCT doc_id) FROM _tags "
                      f"GROUP BY 1 ORDER BY 3 DESC, 1")
    parts.append("<h3>By category</h3>" + table(
        ["category", "flags", "documents", "share of documents"],
        [[c, f, n, pct(n, ctx.n_docs)] for c, f, n in by_cat]))
    flagging = [r for r in by_tag if r[2]][:TOP_N]
    parts.append("<h3>By tag</h3>")
    if flagging:
        parts.append(barh(ctx.plots, [f"{c}:{t}" for c, t, *_ in flagging], [r[3] for r in flagging],
                          "Documents per flagging tag", "documents"))
    parts.append(table(["category", "tag", "flags", "documents", "share of documents", "tag rows"],
                       [[c, t, f, n, pct(n, ctx.n_docs), rows] for c, t, f, n, rows in by_tag]))
    parts.append("<h3>Score distributions per detector</h3>" + _scores(ctx))
    parts.append("<h3>Detector coverage and versions</h3>" + _coverage(ctx))
    parts.append("<h3>Errors of the last tag runs</h3>" + _errors(ctx))
    return Html("".join(parts))


def _threshold(ctx: Context, detector: str, config_hashes: list[str]) -> float | None:
    """The ``min_score`` option the detector ran with (tags below it are never written), if it has one."""
    for h in config_hashes:
        value = ctx.descriptions.get((detector, h), {}).get("options", {}).get("min_score")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _scores(ctx: Context) -> Html:
    rows = ctx.rows("SELECT detector, least(floor(score * 20), 19)::INT AS b, count(*) FROM _tags "
                    "WHERE score IS NOT NULL GROUP BY ALL ORDER BY 1, 2")
    facts = dict(ctx.rows("SELECT detector, count(*) FROM _tags WHERE score IS NULL GROUP BY 1"))
    hashes: dict[str, list[str]] = {}
    for d, h in ctx.rows("SELECT DISTINCT detector, config_hash FROM _tags ORDER BY 1, 2"):
        hashes.setdefault(d, []).append(h)
    detectors = sorted({d for d, _, _ in rows})
    note = ""
    if facts:
        note = ("<p>Tags without a score state a fact (they count as 1.0 in the score columns): "
                + esc(", ".join(f"{d} {n:,}" for d, n in sorted(facts.items()))) + ".</p>")
    if not detectors:
        return Html(no_data("no tag has a score") + note)
    cols = min(3, len(detectors))
    nrows = -(-len(detectors) // cols)
    fig = ctx.plots.figure(7.5, 1.9 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    counts = {(d, b): n for d, b, n in rows}
    marked = []
    for i, ax in enumerate(axes.flat):
        if i >= len(detectors):
            ax.set_axis_off()
            continue
        d = detectors[i]
        ax.bar([b / 20 for b in range(20)], [counts.get((d, b), 0) for b in range(20)], width=0.05, align="edge",
               color="#3b6ea5")
        threshold = _threshold(ctx, d, hashes.get(d, []))
        if threshold is not None:
            ax.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1)
            marked.append(f"{d} {threshold:g}")
        ax.set_xlim(0, 1)
        ax.set_title(label(d), fontsize=8)
        ax.tick_params(labelsize=7)
    if marked:
        note += ("<p>Dashed line: the detector's <code>min_score</code> option, below which it writes no tag: "
                 + esc(", ".join(marked)) + ".</p>")
    return Html(ctx.plots.svg(fig, "Tag scores per detector (20 bins over 0..1)") + note)


def _coverage(ctx: Context) -> Html:
    """Per detector and tag key: how many live documents its coverage records say it has processed.

    Computed from the snapshot's coverage records and the row counts of the live document files (a document
    is stored in exactly one file), so no pass over the documents."""
    file_rows = {e.path: e.rows for e in ctx.snapshot.entries("documents")}
    live = sum(file_rows.values())
    covered: dict[tuple[str, str], int] = {}
    for c in ctx.snapshot.coverage:
        if coverage_kind(c) not in ("doc", "corpus"):  # state rows: vetted only once finish covers them; chain
            continue  # records name capture files, no rows
        key = (c["detector"], c.get("tag_key", ""))
        if c.get("corpus"):
            n = sum(file_rows.get(f, 0) for f in c.get("doc_files", []))
        else:
            rows = file_rows.get(c.get("doc_file"), 0)
            n = sum(max(0, min(end, rows) - start) for start, end in c.get("ranges", []))
        covered[key] = covered.get(key, 0) + n
    tagged = {(d, h): n for d, h, n in ctx.rows("SELECT detector, config_hash, count(*) FROM _tags GROUP BY 1, 2")}
    by_key = {}
    for (d, key), n in covered.items():
        desc = next((x for x in ctx.descriptions.values() if x.get("detector") == d and x.get("tag_key") == key),
                    {})
        by_key[(d, key)] = (desc, n)
    rows = []
    seen = set()
    for (d, key), (desc, n) in sorted(by_key.items()):
        h = desc.get("config_hash")
        seen.add((d, h))
        rows.append([d, desc.get("detector_version"), desc.get("plugin_version"), h, key,
                     Html(f"{n:,} of {live:,}"), pct(min(n, live), live), tagged.get((d, h), 0)])
    for (d, h), n_tags in sorted(tagged.items()):
        if (d, h) not in seen:  # tags without coverage records (written by a tool that keeps none)
            desc = ctx.descriptions.get((d, h), {})
            rows.append([d, desc.get("detector_version"), desc.get("plugin_version"), h, None, None, None, n_tags])
    if not rows:
        return no_data("no detector has run")
    return table(["detector", "version", "plugin version", "config hash", "tag key", "documents covered",
                  "coverage", "tags"], rows)


def _errors(ctx: Context) -> Html:
    total = ctx.one("SELECT count(*) FROM errors")[0]
    if not total:
        return Html("<p>No detector errors recorded.</p>")
    last_runs = "SELECT run_id FROM runs WHERE command = 'tag' ORDER BY started_at DESC LIMIT 5"
    summary = ctx.rows(f"SELECT run_id, detector, kind, count(*), max(created_at)::VARCHAR FROM errors "
                       f"WHERE run_id IN ({last_runs}) GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1, 2, 3")
    latest = ctx.rows(f"SELECT created_at::VARCHAR, run_id, detector, kind, doc_file, batch_start, batch_end, "
                      f"left(message, 300) FROM errors WHERE run_id IN ({last_runs}) "
                      f"ORDER BY created_at DESC LIMIT 20")
    return Html(f"<p>{total:,} error row(s) in the store; those of the last 5 tag runs:</p>"
                + table(["run", "detector", "kind", "errors", "last"], [list(r) for r in summary])
                + table(["when", "run", "detector", "kind", "document file", "batch start", "batch end", "message"],
                        [list(r) for r in latest], caption="the 20 latest"))


# ----- 3. examples ------------------------------------------------------------------------------------
# Up to n tag rows per flagging tag, highest score first (from _tags: no evidence read) ...
CHOSEN_SQL = """
CREATE TEMP TABLE _chosen AS
SELECT category, tag, detector, doc_id, score, rn FROM (
    SELECT *, row_number() OVER (PARTITION BY category, tag ORDER BY coalesce(score, 1.0) DESC, doc_id) AS rn
    FROM _tags WHERE {flagging}
) WHERE rn <= {n}
"""
# ... then their evidence, detectors and doc_ids as literal lists: constant IN filters reach the Parquet scan
# (tag files are per detector, so the others are skipped by their statistics).
EXAMPLES_SQL = """
SELECT c.category, c.tag, c.detector, c.doc_id, c.score, any_value(t.evidence)
FROM _chosen c JOIN (SELECT doc_id, detector, category, tag, evidence FROM tags
                     WHERE detector IN ({detectors}) AND doc_id IN ({doc_ids})) t
    USING (doc_id, detector, category, tag)
GROUP BY ALL ORDER BY c.category, c.tag, any_value(c.rn)
"""


def section_examples(ctx: Context) -> Html:
    ctx.con.execute(CHOSEN_SQL.format(flagging=flagging_tag_sql(), n=EXAMPLES_PER_TAG))
    chosen = [r[0] for r in ctx.rows("SELECT DISTINCT doc_id FROM _chosen ORDER BY 1")]
    if not chosen:
        return no_data("no flagged documents")
    detectors = [r[0] for r in ctx.rows("SELECT DISTINCT detector FROM _chosen ORDER BY 1")]
    picks = ctx.rows(EXAMPLES_SQL.format(detectors=_in_list(detectors), doc_ids=_in_list(chosen)))
    evidence = {i: _json(p[5]) for i, p in enumerate(picks)}
    # The kept copy of a duplicate: near_duplicate's cluster_id, exact_duplicate's kept_doc_id.
    reps = {i: e.get("cluster_id") or e.get("kept_doc_id") for i, e in evidence.items()}
    wanted = sorted({p[3] for p in picks} | {r for r in reps.values() if isinstance(r, str)})
    docs = {r[0]: r[1:] for r in ctx.rows(
        f"SELECT doc_id, url, title, left(text, {EXCERPT_CHARS}), length(text), fetched_at::VARCHAR "
        f"FROM documents WHERE doc_id IN ({_in_list(wanted)})")}
    parts = ["<p>Up to 3 documents per flagging tag, highest score first. Invisible characters are shown as "
             '<span class="esc">\\u200b</span>-style escapes; text is cut at '
             f"{EXCERPT_CHARS} characters.</p>"]
    current = None
    for i, (category, tag, detector, doc_id, score, raw_evidence) in enumerate(picks):
        if (category, tag) != current:
            current = (category, tag)
            parts.append(f"<h3>{esc(category)}:{esc(tag)}</h3>")
        parts.append(_example(docs, detector, doc_id, score, raw_evidence, evidence[i], reps[i]))
    return Html("".join(parts))


def _in_list(values: list[str]) -> str:
    """A few values as a literal SQL list: a constant IN filter reaches the Parquet scan, a subquery does not."""
    return ", ".join(sql_string(v) for v in values)


def _doc_card(docs: dict, doc_id: str, heading: str) -> str:
    url, title, excerpt, n_chars, fetched = docs.get(doc_id, (None, None, None, None, None))
    if url is None:
        return f'<div class="doc"><p class="muted">{esc(heading)}: {esc(doc_id)} is not in the store</p></div>'
    more = f" &hellip; ({n_chars:,} characters)" if n_chars and n_chars > EXCERPT_CHARS else ""
    return (f'<div class="doc"><p class="meta">{esc(heading)}: {link(url)}<br>'
            f'<span class="muted">doc_id {esc(doc_id)} &middot; fetched {esc(fetched)}'
            f'{" &middot; " + esc(title) if title else ""}</span></p>'
            f'<pre class="text">{esc(excerpt or "")}{more}</pre></div>')


def _example(docs, detector, doc_id, score, raw_evidence, evidence: dict, rep) -> str:
    score_text = "fact (no score)" if score is None else f"score {score:.3g}"
    out = [f'<article class="example"><p class="meta">{esc(detector)} &middot; {score_text}</p>']
    if isinstance(rep, str) and rep != doc_id:
        out.append('<div class="pair">' + _doc_card(docs, doc_id, "document")
                   + _doc_card(docs, rep, "kept copy (cluster representative)") + "</div>")
    else:
        out.append(_doc_card(docs, doc_id, "document"))
    spans = evidence.get("spans")
    if isinstance(spans, list) and spans:
        items = []
        for s in spans[:5]:
            if isinstance(s, dict):
                where = f"{s.get('field', '?')} [{s.get('start', '?')}:{s.get('end', '?')}]"
                payload = f' &rarr; <code>{esc(s["payload"])}</code>' if s.get("payload") else ""
                items.append(f"<li>{esc(where)}: <code>{esc(s.get('text', ''))}</code>{payload}</li>")
        out.append(f"<p>Spans:</p><ul>{''.join(items)}</ul>")
    pretty = json.dumps(evidence, indent=2, ensure_ascii=False) if evidence else (raw_evidence or "")
    out.append(f'<details><summary>evidence (JSON)</summary><pre class="json">{esc(pretty)}</pre></details>')
    out.append("</article>")
    return "".join(out)


# ----- 4. tail ----------------------------------------------------------------------------------------
def _group_rows(ctx: Context, group_sql: str, order: str, limit: int | None = None) -> list[tuple]:
    lim = f" LIMIT {int(limit)}" if limit else ""
    return ctx.rows(f"SELECT {group_sql} AS g, count(*) AS n, count(*) FILTER (WHERE NOT kept) AS removed, "
                    f"sum(_chars) AS chars, coalesce(sum(_chars) FILTER (WHERE NOT kept), 0) AS removed_chars "
                    f"FROM _docs GROUP BY 1 ORDER BY {order}{lim}")


def _tail_table(name: str, rows: list[tuple], overall: float) -> Html:
    cells, hot = [], []
    for g, n, removed, chars, removed_chars in rows:
        share = removed_chars / chars if chars else 0.0
        hot.append(share >= 0.1 and share >= HIGHLIGHT_FACTOR * overall)
        cells.append([g, n, removed, pct(removed, n), int(chars // CHARS_PER_TOKEN),
                      int(removed_chars // CHARS_PER_TOKEN), pct(removed_chars, chars)])
    return table([name, "documents", "removed", "removed share", "tokens (approx.)", "tokens removed",
                  "tokens removed share"], cells, hot)


def section_tail(ctx: Context) -> Html:
    if not ctx.n_docs:
        return no_data("the store holds no documents")
    n, removed, chars, removed_chars = ctx.one(
        "SELECT count(*), count(*) FILTER (WHERE NOT kept), coalesce(sum(_chars), 0), "
        "coalesce(sum(_chars) FILTER (WHERE NOT kept), 0) FROM _docs")
    overall = removed_chars / chars if chars else 0.0
    opt = " and leaving out documents whose publisher opted out (respect_opt_out)" if ctx.respect_opt_out else ""
    parts = [f"<p>Selection <code>{esc(ctx.where)}</code>{esc(opt)} keeps {n - removed:,} of {n:,} documents: "
             f"it removes <strong>{pct(removed, n)}</strong> of the documents and "
             f"<strong>{pct(removed_chars, chars)}</strong> of the tokens. Tokens are approximated as characters "
             f"of extracted text / {CHARS_PER_TOKEN} (no tokenizer is run). Highlighted rows lose at least "
             f"{HIGHLIGHT_FACTOR:g} times the overall share of tokens (and at least 10%): the tail a filter "
             f"can erase.</p>"]
    if not removed:
        parts.append("<p>The selection removes nothing.</p>")
    # Registered domains: the ones losing the most tokens first.
    n_regs = ctx.one("SELECT count(DISTINCT _reg) FROM _docs")[0]
    parts.append(f"<h3>By registered domain</h3><p>The {min(TOP_N, n_regs)} of {n_regs:,} domains losing the "
                 f"most tokens.</p>")
    parts.append(_tail_table("registered domain", _group_rows(
        ctx, "_reg", "removed_chars DESC, removed DESC, g NULLS LAST", TOP_N), overall))
    # Deciles by the length quantiles (a sort-free ntile: documents of one length share a decile).
    cuts = ctx.one("SELECT quantile_disc(_chars, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) FROM _docs")[0]
    decile = "CASE " + " ".join(f"WHEN _chars <= {int(c)} THEN {i + 1}" for i, c in enumerate(cuts)) + " ELSE 10 END"
    deciles = _group_rows(ctx, decile, "g")
    bounds = {d: (lo, hi) for d, lo, hi in ctx.rows(f"SELECT {decile}, min(_chars), max(_chars) FROM _docs GROUP BY 1")}
    parts.append("<h3>By text length decile</h3>")
    fig = ctx.plots.figure(7.0, 2.4)
    ax = fig.add_subplot()
    ax.bar([f"{d}" for d, *_ in deciles], [100 * rc / c if c else 0 for d, _, _, c, rc in deciles],
           color="#3b6ea5")
    ax.axhline(100 * overall, color="#c0392b", linestyle="--", linewidth=1, label="overall")
    ax.set_xlabel("length decile (1: shortest texts)")
    ax.set_ylabel("% of tokens removed")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    parts.append(ctx.plots.svg(fig, "Share of tokens the selection removes, by length decile"))
    parts.append(_tail_table("decile (characters)", [
        (Html(f"{d} ({bounds[d][0]:,}&ndash;{bounds[d][1]:,})"), *rest) for d, *rest in deciles], overall))
    parts.append("<h3>By language</h3>")
    if ctx.one("SELECT count(*) FROM _docs WHERE lang IS NOT NULL")[0]:
        parts.append(_tail_table("language", _group_rows(ctx, "coalesce(lang, '(untagged)')",
                                                         "chars DESC, g", TOP_N), overall))
    else:
        parts.append(no_data("no language tags"))
    parts.append("<h3>By near-duplicate cluster size</h3>")
    buckets = ("CASE WHEN cluster_size <= 1 THEN '1 (no cluster)' WHEN cluster_size = 2 THEN '2' "
               "WHEN cluster_size <= 5 THEN '3-5' WHEN cluster_size <= 20 THEN '6-20' ELSE '>20' END")
    parts.append(_tail_table("cluster size", _group_rows(ctx, buckets, "min(cluster_size)"), overall))
    if not ctx.one("SELECT count(*) FROM _docs WHERE cluster_size > 1")[0]:
        parts.append("<p class=\"muted\">No near-duplicate clusters (the near_duplicate detector has not run, or "
                     "found none).</p>")
    parts.append("<h3>The human tier</h3>" + _tier(ctx))
    return Html("".join(parts))


def _tier(ctx: Context) -> Html:
    tier = sql_string(TIER_DETECTOR)
    rows = ctx.rows("SELECT tier, count(*), count(*) FILTER (WHERE kept), coalesce(sum(_chars) FILTER (WHERE kept), 0) "
                    "FROM _docs WHERE tier IS NOT NULL GROUP BY 1 ORDER BY 1")
    if not rows:
        return no_data(f"no {TIER_DETECTOR} tags (run: provenance tag --plugins {TIER_DETECTOR}; it trusts the "
                       f"fetch dates of crawls and archives only)")
    options = [d.get("options", {}) for (name, _), d in ctx.descriptions.items() if name == TIER_DETECTOR]
    cutoff = next((o["cutoff"] for o in reversed(options) if isinstance(o, dict) and o.get("cutoff")), None)
    if cutoff is None:  # tags written by a run that recorded no options: the cut-off is in their evidence
        found = ctx.one(f"SELECT json_extract_string(evidence, '$.cutoff') FROM tags WHERE detector = {tier} "
                        f"AND evidence IS NOT NULL LIMIT 1")
        cutoff = (found and found[0]) or DEFAULT_CUTOFF
    kept_total = ctx.one("SELECT count(*), coalesce(sum(_chars), 0) FROM _docs WHERE kept")
    tiered = sum(r[2] for r in rows)
    cells = [[tag, n, kept, pct(kept, kept_total[0]), int(ch // CHARS_PER_TOKEN)] for tag, n, kept, ch in rows]
    cells.append(["(no tier tag)", None, kept_total[0] - tiered, pct(kept_total[0] - tiered, kept_total[0]), None])
    return Html(f"<p>When the text was first seen (by the {esc(TIER_DETECTOR)} detector), before or after the "
                f"cut-off {esc(cutoff)}: text first seen before it was written before LLM output spread.</p>"
                + table(["tier", "documents", "kept by the selection", "share of kept", "kept tokens (approx.)"],
                        cells))


# ----- 5. provenance ----------------------------------------------------------------------------------
def section_provenance(ctx: Context, generated_at: str) -> Html:
    s = ctx.snapshot
    facts = [
        ["store", str(ctx.store.root)],
        ["snapshot (last commit entry)", s.log_seq],
        ["document files / tag files", Html(f"{len(s.entries('documents')):,} / {len(s.entries('tags')):,}")],
        ["selection (--where)", ctx.where],
        ["respect_opt_out", ctx.respect_opt_out],
        ["generated at (UTC)", generated_at],
        ["tool", f"provenance-guard {provenance.__version__}"],
    ]
    parts = [table(["", ""], facts)]
    runs = ctx.rows("SELECT run_id, command, status, started_at, finished_at, config FROM runs "
                    "ORDER BY started_at DESC NULLS LAST, run_id DESC")
    if not runs:
        parts.append(no_data("no runs recorded"))
        return Html("".join(parts))
    shown = runs[:50]
    rows = []
    for run_id, command, status, started, finished, config in shown:
        detectors = _json(config).get("detectors", [])
        dets = Html("<br>".join(f"{esc(d.get('detector'))} v{esc(d.get('detector_version'))} "
                                f"<code>{esc(d.get('tag_key'))}</code>" for d in detectors)) if detectors else None
        config_hash = hashlib.sha256((config or "").encode()).hexdigest()[:16]
        rows.append([run_id, command, status, started, finished, Html(f"<code>{config_hash}</code>"), dets])
    parts.append("<h3>Runs</h3>" + table(
        ["run", "command", "status", "started", "finished", "config hash", "detectors (version, tag key)"], rows,
        caption=f"the latest {len(shown)} of {len(runs):,}" if len(runs) > len(shown) else ""))
    parts.append("<p>Config hash: sha256 of the run's recorded configuration (JSON), first 16 hex digits.</p>")
    return Html("".join(parts))


# ----- the page ---------------------------------------------------------------------------------------
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430; margin: 0;
       background: #f6f7f9; }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 19px; border-bottom: 2px solid #3b6ea5; padding-bottom: 3px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
nav a { margin-right: 12px; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 4px 18px 14px; margin: 16px 0; }
.tablewrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
caption { caption-side: bottom; text-align: left; color: #667; font-size: 12px; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 3px 9px; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #eef1f5; white-space: nowrap; overflow-wrap: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.hot td { background: #fdecea; font-weight: 600; }
figure { margin: 8px 0; } svg.plot { width: 100%; height: auto; display: block; }
figcaption { color: #556; font-size: 12px; }
.nodata { color: #8a5a00; background: #fff7e0; padding: 6px 10px; border-radius: 4px; }
.muted { color: #778; }
.esc { background: #ffe08a; color: #7a3e00; border-radius: 2px; padding: 0 1px; font-family: monospace; }
article.example { border-left: 3px solid #c0392b; padding: 2px 10px; margin: 10px 0; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f3f4f6; padding: 6px 8px; border-radius: 4px;
      font-size: 12px; max-height: 16em; overflow-y: auto; margin: 4px 0; }
code { font-size: 12px; overflow-wrap: anywhere; }
.meta { margin: 4px 0; }
@media print {
  body { background: #fff; font-size: 11px; } nav { display: none; }
  section { border: none; padding: 0; break-before: page; } section:first-of-type { break-before: auto; }
  figure, tr, article.example { break-inside: avoid; } pre { max-height: none; overflow: visible; }
  details > *:not(summary) { display: block; }
}
"""


def render(store: Store, where: str | None = None, respect_opt_out: bool = False) -> str:
    """The report of ``store`` as one HTML page (ASCII text)."""
    where = DEFAULT_WHERE if where is None else where
    snapshot = store.snapshot()
    con = connect(store, sandbox=True, snapshot=snapshot)
    try:
        where = boolean_predicate(con, where, SELECTED_FROM)
    except UserSQLError as exc:
        raise ReportUsageError(str(exc)) from None
    ctx = Context(con=con, store=store, snapshot=snapshot, where=where, respect_opt_out=respect_opt_out,
                  plots=Plots())
    _prepare(ctx)
    generated_at = utcnow().strftime("%Y-%m-%d %H:%M:%S")
    bodies = {
        "corpus": ("Corpus", section_corpus(ctx)),
        "flagged": ("Flagged", section_flagged(ctx)),
        "examples": ("Examples", section_examples(ctx)),
        "tail": ("Tail preservation", section_tail(ctx)),
        "provenance": ("Provenance", section_provenance(ctx, generated_at)),
    }
    con.close()
    nav = " ".join(f'<a href="#{k}">{esc(title)}</a>' for k, (title, _) in bodies.items())
    sections = "\n".join(f'<section id="{k}"><h2>{esc(title)}</h2>{body}</section>'
                         for k, (title, body) in bodies.items())
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="provenance-guard {esc(provenance.__version__)}">'
            f"<title>Provenance Guard report: {esc(store.root.name)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Provenance Guard report</h1>"
            f'<p class="muted">{esc(store.root)} &middot; {ctx.n_docs:,} documents &middot; '
            f"generated {esc(generated_at)} UTC by provenance-guard {esc(provenance.__version__)}</p>"
            f"<nav>{nav}</nav></header><main>\n{sections}\n</main></body></html>\n")
    # ASCII with character references: the page is the same bytes whatever the locale's encoding.
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(store: Store, out: Path, where: str | None = None, respect_opt_out: bool = False) -> Path:
    """Render the report and write it to ``out`` atomically (temp file beside it, then rename)."""
    out = Path(out).absolute()
    if out.is_dir():
        raise ReportUsageError(f"{out}: is a directory; give --out a file name, e.g. report.html")
    if not out.parent.is_dir():
        raise ReportUsageError(f"{out.parent}: no such directory; create it or choose another --out")
    page = render(store, where, respect_opt_out)
    atomic_write_text(out, page)
    return out
