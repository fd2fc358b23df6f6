"""``make demo``: what the guard is for, end to end on embedded defaults, with the commands it runs shown.

Serves real sites on 127.0.0.1 (from ../shared when present: Git's HTML docs and
a set of real news and blog pages; else a generated fixture site) beside a
*planted* section the demo writes at run time (provenance/planted.py: invisible
Unicode, hidden text, prompt injection, a backdoor tail, a duplicated campaign,
chat-model answers). Then it runs the real CLI: crawl -> tag -> change one
vetted page (split view) -> re-crawl -> tag -> what was flagged and why ->
export, and checks that the export's manifest counts match the exported data.
Everything lands in ./demo-output; each run starts its store afresh there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from provenance.planted import MIRRORS, PLANTED, generate_planted, split_view
from provenance.processes import python_command
from provenance.sites import copy_site, generate_site, serve
from provenance.sql import NOT_FLAG_CATEGORIES, NOT_FLAG_TAGS, sql_string

# Fixed ports keep the sites' URLs the same between demo runs (any free one if taken).
DEMO_PORT = 8737
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_SITE = SHARED_DATA / "sites" / "gitster__git-htmldocs"
# ../shared holds one whole site; its second set of real pages is served as a site and crawled from a URL list.
SHARED_PAGES = SHARED_DATA / "pages" / "adbar__trafilatura" / "tests" / "cache"
PLANTED_CRAWL = "planted"
# What the demo owns inside --out: removed at the start of each run, so every run shows the same story.
OWNED = ("store", "export", "sites", "report.html")

_in_list = lambda items: ", ".join(sql_string(i) for i in items)  # noqa: E731
FLAGGED_SQL = f"""
SELECT CASE WHEN d.previous_doc_id IS NOT NULL THEN 'planted: split-view change'
            WHEN d.crawl_id = '{PLANTED_CRAWL}' THEN 'planted (generated)'
            ELSE 'real: ' || d.crawl_id END AS section,
       t.category, t.tag, count(DISTINCT t.doc_id) AS documents,
       regexp_replace(min(d.url), '^https?://[^/]+', '') AS example_path
FROM tags t JOIN documents d USING (doc_id)
WHERE t.category NOT IN ({_in_list(NOT_FLAG_CATEGORIES)})
  AND t.category || ':' || t.tag NOT IN ({_in_list(NOT_FLAG_TAGS)})
GROUP BY ALL ORDER BY section, category, tag
"""
FLAGGED_SQL = " ".join(FLAGGED_SQL.split())  # one line, as a user would type it
VERSIONS_SQL = ("SELECT url, previous_doc_id AS vetted_version, doc_id AS new_version FROM documents "
                "WHERE previous_doc_id IS NOT NULL")
# (what it shows, SQL): printed as "Try:" lines; tests/test_demo.py checks that each returns rows.
HINTS = (
    ("every flagged document and its flags",
     "SELECT url, flags FROM documents JOIN doc_flags USING (doc_id) WHERE flagged ORDER BY url"),
    ("the planted section, page by page",
     f"SELECT url, flagged, flags FROM documents JOIN doc_flags USING (doc_id) WHERE crawl_id = '{PLANTED_CRAWL}' "
     "ORDER BY url"),
    ("why a poison tag was given (its evidence)",
     "SELECT url, tag, evidence FROM tags JOIN documents USING (doc_id) WHERE category = 'poison' ORDER BY url"),
    ("near-duplicate clusters", "SELECT cluster_id, cluster_size, is_representative, url "
                                "FROM clusters JOIN documents USING (doc_id) ORDER BY cluster_id, url"),
    ("pages whose content changed after they were vetted", VERSIONS_SQL),
    ("what each crawl fetched", "SELECT crawl_id, outcome, count(*) AS fetches FROM fetches GROUP BY ALL ORDER BY ALL"),
)


class DemoFailed(Exception):
    pass


@dataclass
class Site:
    crawl_id: str
    what: str
    root: Path
    start: str = "index.html"      # the page a site crawl starts from
    url_list: list[str] | None = None  # or: these pages, crawled as a URL list
    change: str | None = None      # the page the split-view step replaces
    # folder (ending in '/') -> the base URL it is served at instead of under the site's own base
    elsewhere: dict[str, str] = field(default_factory=dict)

    def url(self, base: str, path: str) -> str:
        for folder, other in self.elsewhere.items():
            if path.startswith(folder):
                return other + path[len(folder):]
        return base + path


def quote(arg: str) -> str:
    """``arg`` for a POSIX shell, in double quotes when that is safe: SQL reads better than with '"'"'."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def sh(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    """Run `provenance ARGS`, echoing the command as a user would type it."""
    print(f"$ provenance {' '.join(quote(a) for a in args)}", flush=True)
    proc = subprocess.run([*python_command("from provenance.cli import main; main()"), *args],
                          text=True, stdout=subprocess.PIPE)
    if proc.stdout:
        print(proc.stdout.rstrip(), flush=True)
    if proc.returncode not in ok:
        raise DemoFailed(f"`provenance {args[0]}` exited {proc.returncode}")
    return proc


def _serve(stack: contextlib.ExitStack, root: Path, port: int, host: str = "127.0.0.1") -> str:
    try:
        return stack.enter_context(serve(root, port=port, host=host))
    except OSError:  # the port is taken: any free one will do
        return stack.enter_context(serve(root, host=host))


def _serve_mirrors(stack: contextlib.ExitStack, site: Site, port: int) -> None:
    """Each campaign mirror from its own loopback address: five domains to the guard. Where only 127.0.0.1
    can be bound (macOS), the mirrors stay folders of the planted site and no amplification is planted."""
    for i, mirror in enumerate(MIRRORS):
        try:
            site.elsewhere[f"{mirror}/"] = _serve(stack, site.root / mirror, port, host=f"127.0.0.{2 + i}")
        except OSError:
            site.elsewhere.clear()
            return


def _sites(out: Path, which: str) -> list[Site]:
    sites_dir = out / "sites"
    if which == "shared" or (which == "auto" and SHARED_SITE.is_dir()):
        # A writable copy, so the split-view step can change a page; copy_site restores index.html's git symlink.
        git = copy_site(SHARED_SITE, sites_dir / "git-docs")
        pages = sorted(p.name for p in SHARED_PAGES.glob("*.html")) if SHARED_PAGES.is_dir() else []
        real = [Site("git-docs", "Git's HTML documentation, 2019 (../shared)", git, start="git.html",
                     change="git-mv.html")]
        if pages:
            real.append(Site("web-pages", f"{len(pages)} real news and blog pages (../shared)", SHARED_PAGES,
                             url_list=pages))
    else:
        generate_site(sites_dir / "fixture")
        real = [Site("fixture", "a generated fixture site", sites_dir / "fixture", change="articles/page-003.html")]
    planted = generate_planted(sites_dir / PLANTED_CRAWL)
    return [*real, Site(PLANTED_CRAWL, "PLANTED section, generated by the demo at run time",
                        sites_dir / PLANTED_CRAWL, url_list=planted)]


def _crawl(site: Site, base: str, store: Path, out: Path) -> None:
    target = [base + site.start]
    if site.url_list:
        url_file = out / "sites" / f"{site.crawl_id}.urls"
        url_file.write_text("".join(f"{site.url(base, p)}\n" for p in site.url_list))
        target = ["--urls", str(url_file)]
    sh("crawl", *target, "--store", str(store), "--allow-private", "--crawl-id", site.crawl_id, ok=(0, 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provenance.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output",
                        help=f"working directory for the demo; its {', '.join(OWNED)} are replaced [demo-output]")
    parser.add_argument("--site", choices=["auto", "generated", "shared"], default="auto",
                        help="which real sites to crawl [auto: ../shared's when present]")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    store, export, report = out / "store", out / "export", out / "report.html"
    for name in OWNED:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    sites = _sites(out, args.site)
    try:
        with contextlib.ExitStack() as stack:
            bases = {s.crawl_id: _serve(stack, s.root, DEMO_PORT + i) for i, s in enumerate(sites)}
            planted = sites[-1]
            _serve_mirrors(stack, planted, DEMO_PORT + len(sites))
            for s in sites:
                print(f"Serving {s.what} at {bases[s.crawl_id]} (loopback only)")
            if planted.elsewhere:
                print(f"Serving the planted campaign's {len(MIRRORS)} mirror sites at "
                      f"{', '.join(planted.elsewhere.values())}")
            print(f"\nThe planted section ({bases[PLANTED_CRAWL]}) holds, on purpose:")
            for p in PLANTED:
                print(f"  {p.path:<36} {p.expect:<28} {p.why}")
            print("\n# 1. Crawl and tag")
            for s in sites:
                _crawl(s, bases[s.crawl_id], store, out)
            sh("tag", "--store", str(store))
            changed = next(s for s in sites if s.change)
            print(f"\n# 2. Split view: {changed.change} on {changed.crawl_id} is replaced after it was vetted "
                  f"(PLANTED), then re-crawled")
            split_view(changed.root / changed.change)
            _crawl(changed, bases[changed.crawl_id], store, out)
        sh("tag", "--store", str(store))
        sh("query", "--store", str(store), VERSIONS_SQL)
        print("\n# 3. What was flagged and why (planted sections are labelled; 'real' is what the sites hold)")
        sh("query", "--store", str(store), "SELECT count(*) AS documents, sum(CASE WHEN flagged THEN 1 ELSE 0 END) "
           "AS flagged FROM doc_flags")
        sh("query", "--store", str(store), FLAGGED_SQL)
        print("Note: llm_ngram is a weak signal (eval/llm_detect.py: macro AUROC about 0.7): an llm tag on a 'real' page "
              "written before chat models existed is a false positive.")
        print("\n# 4. Export what is not flagged, with a manifest and a dataset card")
        sh("export", "--store", str(store), "--where", "NOT flagged", "--out", str(export), "--overwrite",
           "--with-tags")
        manifest = json.loads((export / "manifest.json").read_text())
        exported = duckdb.connect().execute(
            "SELECT count(*) FROM read_parquet(?)", [str(export / "documents.parquet")]).fetchone()[0]
        if exported != manifest["counts"]["kept"]:
            raise DemoFailed(f"manifest says {manifest['counts']['kept']} kept but the export holds {exported}")
        print("\n# 5. The picture: one self-contained HTML page (open it in a browser)")
        sh("report", "--store", str(store), "--out", str(report))
    except DemoFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nDemo finished. Kept {exported} of {manifest['counts']['documents_in_store']} documents.\n"
          f"  store:    {store}\n  export:   {export / 'documents.parquet'}\n"
          f"  manifest: {export / 'manifest.json'}\n  card:     {export / 'README.md'}\n  report:   {report}\n"
          "Try (provenance is .venv/bin/provenance; `source .venv/bin/activate` puts it on PATH):")
    for what, sql in HINTS:
        print(f"  # {what}\n  provenance query --store {quote(str(store))} {quote(sql)}")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
