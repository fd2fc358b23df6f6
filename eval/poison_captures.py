"""Three-capture evaluation of the poison detectors: baseline, scheduled re-crawl and confirmation fetch, as WARC.

Data: every HTML page under ../shared/data/pages and every distinct HTML 200 response in the WARC files under
../shared/data/warc (clean, as published). Each page becomes a URL captured three
times: a baseline, a scheduled re-crawl 30 days later and a confirmation fetch 2 hours after that, written as
three real WARC files (warcio, response records with HTTP headers and WARC-Date) and imported with
``provenance ingest`` in the order re-crawl, baseline, confirmation (not the order of capture; ``--order``
another: the confirmation first stores the baseline's bytes at the confirmation's time, and the baseline is then
a re-capture of them, which the versions place at its own time). Then
``provenance tag`` with the poison detectors, through the real runner.

Cases (eval/poison_gen.py injects; a seeded sample of ``--inject-pages`` pages for the poisoned ones):

  clean         every page, the same bytes at all three captures
  split_view    replaced: the re-crawl and the confirmation serve another real page (content_drift replaced);
                rewritten: the text of half the page's paragraphs replaced by another page's (content_drift
                major_edit or replaced)
  takeover      five hosts of six pages each, every page replaced by another page on a new Server and IP
                (WARC-IP-Address) at the re-crawl (host_takeover)
  transient     the re-crawl carries an edit the confirmation has undone (transient_edit): an inserted claim or
                instruction with the baseline's very bytes back (insert), the same with a "last updated" line
                that shows each capture's time (insert_redated), another page for one capture (replaced)
  unicode, injection, hidden, backdoor
                eval/poison_gen.py's kinds, injected at the re-crawl and still there at the confirmation
  negatives     eval/poison_gen.py's hard negatives (in every capture), and version negatives: a page whose date
                line and counters change at every capture (dated), one permanent benign edit (benign_edit: one
                sentence removed at the re-crawl, kept), two benign edits in a row (two_edits), three hosts of six dated
                pages that move to a new Server and IP (moved_dated)

Prints recall per kind and variant, precision per detector (tags on clean pages and hard negatives are wrong;
the expected tag on a poisoned URL is right), the false-flag rate on clean pages and on hard negatives per
detector (flagging tags only: content_drift's minor_edit describes), and the worst false flags with evidence.

    .venv/bin/python eval/poison_captures.py [--inject-pages 60] [--seed 0] [--order confirm,recrawl,baseline]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from html import escape
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poison_gen import (_PARA, CLAIMS, INSTRUCTIONS, PAGES, WARCS, _after_paragraph, _in_paragraph,  # noqa: E402
                        _insert_sentence, _kept, hard_negatives, poisoned, read_pages, read_warc_pages)

from provenance.extract import decode  # noqa: E402

DETECTORS = ["invisible_unicode", "hidden_content", "prompt_injection", "backdoor_tail", "content_drift",
             "transient_edit", "host_takeover"]
EXPECTED = {  # kind -> (detector, tags that count as a hit)
    "split_view": ("content_drift", {"replaced", "major_edit"}),
    "transient": ("transient_edit", {"transient_edit"}),
    "unicode": ("invisible_unicode", None), "injection": ("prompt_injection", None),
    "hidden": ("hidden_content", None), "backdoor": ("backdoor_tail", None),
    "takeover": ("host_takeover", {"host_takeover"}),
}
OLD_HOST, NEW_HOST = ("nginx", "192.0.2.1"), ("LiteSpeed", "198.51.100.9")
BASELINE = datetime(2025, 3, 4, 8, 0, tzinfo=timezone.utc)
TIMES = [BASELINE, BASELINE + timedelta(days=30), BASELINE + timedelta(days=30, hours=2)]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def dated(html: str, when: datetime, rng: random.Random) -> str:
    """``html`` with a line that every honest re-render changes (the date, the time and a counter) at the end
    of the same paragraph of the main text each time (so extraction keeps it), else after a paragraph."""
    line = f" Last updated: {when:%A %d %B %Y, %H:%M}. {rng.randint(100, 99999):,} views."
    return _in_paragraph(html, random.Random(0), lambda t: t + line, _kept(html)) or \
        _after_paragraph(html, f"<p>{line}</p>", random.Random(0))


def drop_sentence(rng: random.Random):
    def edit(text: str) -> str:
        parts = _SENTENCE_END.split(text)
        if len(parts) < 3:
            return text + " (Updated.)"
        del parts[rng.randrange(1, len(parts))]
        return " ".join(parts)
    return edit


def paragraphs(text: str) -> str:
    return "".join(f"<p>{escape(p, quote=False)}</p>" for p in re.split(r"(?<=[.!?]) (?=[A-Z])", text) if p)


def rewrite_half(html: str, kept: str, donor_text: str) -> str | None:
    """``html`` with the text of half its paragraphs that extraction keeps replaced by ``donor_text``."""
    paras = [m for m in _PARA.finditer(html) if " ".join(m.group(2).split())[:80] in kept]
    if len(paras) < 2:
        return None
    out, at, used = [], 0, 0  # (the donor's words as they come: a paragraph it runs out for is emptied)
    for m in paras[:(len(paras) + 1) // 2]:
        size = len(m.group(2))
        out += [html[at:m.start(2)], donor_text[used:used + size]]
        used, at = used + size, m.end(2)
    return "".join(out) + html[at:]


def build_cases(pages: list[tuple[str, str]], sample: list[tuple[str, str]], seed: int,
                skipped: dict) -> list[dict]:
    """Cases: name, kind, variant, three captures' HTML and the expected (detector, tags) or None. A case whose
    injection would not reach the extracted text (no paragraph that extraction keeps) is counted in ``skipped``."""
    rng = random.Random(seed + 10)
    kepts = {name: _kept(html) for name, html in sample}
    donors = [(n, h) for n, h in pages if len(_kept(h)) >= 500] if sample else []
    cases = [dict(name=f"{name}#clean", kind="clean", variant="clean", captures=[html] * 3) for name, html in pages]
    for n, (name, html) in enumerate(sample):
        kept = kepts[name]
        donor_name, donor = next(d for d in donors[n % len(donors):] + donors if d[0] != name)
        donor_text = _kept(donor)
        # split view: the re-crawl and the confirmation agree (no revert), on other content
        cases.append(dict(name=f"{name}#split-replaced", kind="split_view", variant="replaced",
                          captures=[html, donor, donor]))
        rewritten = rewrite_half(html, kept, escape(donor_text, quote=False)) or \
            _after_paragraph(html, paragraphs(donor_text[:max(300, len(kept))]), rng)
        if " ".join(donor_text.split()[:6]) in _kept(rewritten):
            cases.append(dict(name=f"{name}#split-rewritten", kind="split_view", variant="rewritten",
                              captures=[html, rewritten, rewritten]))
        else:
            skipped["split_view/rewritten"] += 1
        # transient: the re-crawl's edit is undone by the confirmation fetch
        claim = rng.choice(INSTRUCTIONS + [CLAIMS])
        edited = _in_paragraph(html, rng, lambda t: _insert_sentence(t, claim, rng), kept)
        if edited is None or " ".join(claim.split()[-4:-1]) not in _kept(edited):
            edited = donor  # no paragraph whose edit reaches the extracted text: the other page, as replaced
        cases.append(dict(name=f"{name}#transient-insert", kind="transient", variant="insert",
                          captures=[html, edited, html]))
        cases.append(dict(name=f"{name}#transient-insert_redated", kind="transient", variant="insert_redated",
                          captures=[dated(html, TIMES[0], rng), dated(edited, TIMES[1], rng),
                                    dated(html, TIMES[2], rng)]))
        cases.append(dict(name=f"{name}#transient-replaced", kind="transient", variant="replaced",
                          captures=[html, donor, html]))
        # version hard negatives
        cases.append(dict(name=f"{name}#negative-dated", kind="negative", variant="dated",
                          captures=[dated(html, t, rng) for t in TIMES]))
        benign = _in_paragraph(html, rng, drop_sentence(rng), kept) or html
        cases.append(dict(name=f"{name}#negative-benign_edit", kind="negative", variant="benign_edit",
                          captures=[html, benign, benign]))
        again = _in_paragraph(benign, rng, drop_sentence(rng), kept) or benign
        cases.append(dict(name=f"{name}#negative-two_edits", kind="negative", variant="two_edits",
                          captures=[html, benign, again]))
    # host takeover: six pages of a host replaced by other pages on a new server and IP; and hosting moves
    # (new server and IP) of pages whose date line changes at every capture, which are no takeover
    hosts = random.Random(seed + 11).sample(pages, min(len(pages), 48))
    for h in range(8):
        moved = h >= 5
        for k, (name, html) in enumerate(hosts[6 * h:6 * h + 6]):
            donor = hosts[(6 * h + k + 7) % len(hosts)][1]
            case = dict(name=f"{name}#host{h}", host=f"host{h}.example", server=[OLD_HOST, NEW_HOST, NEW_HOST])
            if moved:
                cases.append(dict(case, kind="negative", variant="moved_dated",
                                  captures=[dated(html, t, rng) for t in TIMES]))
            else:
                cases.append(dict(case, kind="takeover", variant="replaced_new_server",
                                  captures=[html, donor, donor]))
    # the per-document kinds: injected at the re-crawl, still there at the confirmation
    for name, kind, variant, out, tag in poisoned(sample, seed):
        original = dict(sample)[name.split("#")[0]]
        cases.append(dict(name=name, kind=kind, variant=variant, captures=[original, out, out], tag=tag))
    for name, kind, variant, out, _ in hard_negatives(pages, seed):
        cases.append(dict(name=name, kind="negative", variant=variant, captures=[out] * 3))
    for i, case in enumerate(cases):
        case["url"] = f"https://{case.get('host') or f'site{i % 97}.example'}/{i}"
    return cases


def write_warcs(cases: list[dict], folder: Path) -> list[Path]:
    """One WARC per capture (response records: HTTP status line, headers, body; WARC-Date the capture time)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    paths = []
    for n, (label, when) in enumerate(zip(("baseline", "recrawl", "confirm"), TIMES)):
        path = folder / f"{label}.warc.gz"
        with open(path, "wb") as fh:
            writer = WARCWriter(fh, gzip=True)
            for case in cases:
                body = case["captures"][n].encode("utf-8")
                server, ip = case.get("server", [OLD_HOST] * 3)[n]
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                   ("Server", server)], protocol="HTTP/1.1")
                record = writer.create_warc_record(case["url"], "response", payload=BytesIO(body),
                                                   http_headers=http, warc_headers_dict={
                                                       "WARC-Date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                       "WARC-IP-Address": ip})
                writer.write_record(record)
        paths.append(path)
    return paths


def provenance_cli(*args: str) -> None:
    cli = Path(sys.executable).with_name("provenance")
    done = subprocess.run([str(cli), *args], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        sys.exit(f"eval: provenance {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=PAGES)
    parser.add_argument("--inject-pages", type=int, default=60, help="clean pages (seeded sample) to poison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warcs", type=Path, default=WARCS, help="WARC HTML responses to add as clean pages")
    parser.add_argument("--no-warcs", action="store_true", help="only the pages")
    parser.add_argument("--worst", type=int, default=8, help="false flags to print")
    parser.add_argument("--order", default="recrawl,baseline,confirm",
                        help="order of import of the three captures (any order gives the same result)")
    args = parser.parse_args()
    if not args.pages.exists():
        print(f"eval: {args.pages} not found (needs ../shared)", file=sys.stderr)
        return 1
    bodies = read_pages(args.pages) + ([] if args.no_warcs or not args.warcs.exists() else
                                        [(f"warc:{n}", b) for n, b in read_warc_pages(args.warcs)])
    pages = [(name, decode(body, None)[1]) for name, body in bodies]
    sample = random.Random(args.seed).sample(pages, min(args.inject_pages, len(pages)))
    skipped = defaultdict(int)
    cases = build_cases(pages, sample, args.seed, skipped)

    import provenance

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        baseline, recrawl, confirm = write_warcs(cases, Path(tmp))
        store = str(Path(tmp) / "store")
        files = {"baseline": baseline, "recrawl": recrawl, "confirm": confirm}
        order = args.order.split(",")
        if sorted(order) != sorted(files):
            print(f"eval: --order must name baseline, recrawl and confirm once each, got {args.order!r}",
                  file=sys.stderr)
            return 2
        for path in (files[name] for name in order):  # by default not the order of capture
            provenance_cli("ingest", "--store", store, "--crawl-id", path.name.split(".")[0], str(path))
        t1 = time.perf_counter()
        provenance_cli("tag", "--store", store, "--plugins", ",".join(DETECTORS))
        t2 = time.perf_counter()
        con = provenance.connect(store)
        rows = con.execute("""
            SELECT d.url, t.detector, t.tag, t.score, t.evidence FROM tags t
            JOIN (SELECT DISTINCT ON (doc_id) doc_id, url FROM documents) d USING (doc_id)
            WHERE list_contains(?, t.detector) AND NOT (t.detector = 'content_drift' AND t.tag = 'minor_edit')
            """, [DETECTORS]).fetchall()
        recaptured = con.execute("SELECT count(*) FROM fetches WHERE outcome = 'recaptured'").fetchone()[0]
        n_docs = con.execute("SELECT count(*) FROM documents").fetchone()[0]
        con.close()

    tags = defaultdict(list)  # url -> [(detector, tag, score, evidence)]
    for url, detector, tag, score, evidence in rows:
        tags[url].append((detector, tag, score, evidence))
    n_clean = sum(c["kind"] == "clean" for c in cases)
    n_negative = sum(c["kind"] == "negative" for c in cases)
    print(f"poison detectors on {len(cases)} URLs x 3 captures (WARC, imported {', '.join(order)}): "
          f"{n_clean} clean pages of {args.pages.name}/, {len(cases) - n_clean - n_negative} poisoned from "
          f"{len(sample)} of them, {n_negative} hard negatives; {n_docs} documents, {recaptured} recaptured fetch "
          f"rows; ingest {t1 - t0:.0f} s, tag {t2 - t1:.0f} s")
    n_warc = sum(1 for name, _ in pages if name.startswith("warc:"))
    print(f"  clean pages: {len(pages) - n_warc} from {args.pages}, {n_warc} distinct HTML responses of the WARCs "
          f"under {args.warcs}; not injectable (no paragraph extraction keeps): {dict(skipped) or 'none'}")

    print("\nrecall (the expected tag on the poisoned URL)")
    by_kind, by_variant = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    for case in cases:
        if case["kind"] not in EXPECTED:
            continue
        detector, wanted = EXPECTED[case["kind"]]
        wanted = wanted or {case["tag"]}
        hit = any(t[0] == detector and t[1] in wanted for t in tags.get(case["url"], []))
        for key, table in ((case["kind"], by_kind), ((case["kind"], case["variant"]), by_variant)):
            table[key][0] += hit
            table[key][1] += 1
    for kind, (hit, n) in sorted(by_kind.items()):
        print(f"  {kind:<11} {hit / n:6.3f}  ({hit}/{n})")
        for (k, variant), (h, m) in sorted(by_variant.items()):
            if k == kind and (h < m or kind in ("split_view", "transient", "takeover")):
                print(f"      {variant:<32} {h / m:6.3f}  ({h}/{m})")

    print("\nper detector: precision, false flags on clean pages, on hard negatives")
    false_flags = []
    for detector in DETECTORS:
        right = wrong = clean_flagged = negative_flagged = 0
        for case in cases:
            mine = [t for t in tags.get(case["url"], []) if t[0] == detector]
            if not mine:
                continue
            if case["kind"] in ("clean", "negative"):
                wrong += len(mine)
                clean_flagged += case["kind"] == "clean"
                negative_flagged += case["kind"] == "negative"
                false_flags += [(t[2] or 1.0, case["name"], t) for t in mine]
            elif case["kind"] in EXPECTED and EXPECTED[case["kind"]][0] == detector:
                right += len(mine)  # on a poisoned URL, the detector meant for its kind
        precision = right / (right + wrong) if right + wrong else float("nan")
        print(f"  {detector:<18} precision {precision:6.3f} ({right}/{right + wrong})   clean "
              f"{clean_flagged / n_clean:6.2%} ({clean_flagged}/{n_clean})   hard negatives "
              f"{negative_flagged / n_negative:6.2%} ({negative_flagged}/{n_negative})")

    print(f"\nworst false flags (of {len(false_flags)})")
    for score, name, (detector, tag, _, evidence) in sorted(false_flags, key=lambda f: -f[0])[:args.worst]:
        print(f"  {score:.2f} {detector}/{tag} {name}\n      {evidence[:400]}")
    example = next((t for c in cases if c["kind"] == "transient" for t in tags.get(c["url"], [])
                    if t[0] == "transient_edit"), None)
    if example:
        print(f"\na transient_edit tag's evidence:\n  {json.dumps(json.loads(example[3]))[:700]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
