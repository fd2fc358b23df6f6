"""``make demo``: the main job end to end on embedded defaults, with the commands it runs shown.

Serves a site on 127.0.0.1 (Git's HTML docs from ../shared when present, else
a generated fixture site), then runs the real CLI: crawl -> tag -> query ->
export, and checks that the export's manifest counts match the exported data.
Everything lands in ./demo-output; running it again re-crawls incrementally.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb

from provenance.processes import python_command
from provenance.sites import generate_site, serve

# A fixed port keeps the site's URLs the same between demo runs, so a second `make demo`
# shows an incremental re-crawl (pages unchanged, nothing stored twice) instead of a new site.
DEMO_PORT = 8737
SHARED_SITE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sites" / "gitster__git-htmldocs"


class DemoFailed(Exception):
    pass


def sh(*args: str, ok=(0,)) -> subprocess.CompletedProcess:
    """Run `provenance ARGS`, echoing the command as a user would type it."""
    print(f"$ provenance {' '.join(shlex.quote(a) for a in args)}", flush=True)
    proc = subprocess.run([*python_command("from provenance.cli import main; main()"), *args],
                          text=True, stdout=subprocess.PIPE)
    if proc.stdout:
        print(proc.stdout.rstrip())
    if proc.returncode not in ok:
        raise DemoFailed(f"`provenance {args[0]}` exited {proc.returncode}")
    return proc


@contextlib.contextmanager
def _serve(site: Path):
    stack = contextlib.ExitStack()
    try:
        base = stack.enter_context(serve(site, port=DEMO_PORT))
    except OSError:  # the port is taken: any free one will do
        base = stack.enter_context(serve(site))
    with stack:
        yield base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provenance.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="working directory for the demo [demo-output]")
    parser.add_argument("--site", choices=["auto", "generated", "shared"], default="auto",
                        help="which site to crawl [auto: ../shared's git docs when present]")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    store, export = out / "store", out / "export"
    if args.site == "shared" or (args.site == "auto" and SHARED_SITE.is_dir()):
        # Its index.html is a git symlink checked out as a file that just says "git.html".
        site, what, start = SHARED_SITE, "Git's HTML documentation (../shared)", "git.html"
    else:
        site, what, start = out / "site", "a generated fixture site", "index.html"
        if not site.exists():
            generate_site(site)
    try:
        with _serve(site) as base:
            print(f"Serving {what} at {base} (loopback only)\n")
            sh("crawl", base + start, "--store", str(store), "--allow-private", "--crawl-id", "demo",
               ok=(0, 3))
        print()
        sh("tag", "--store", str(store))
        print()
        sh("query", "--store", str(store), "SELECT count(*) AS documents, count(DISTINCT domain) AS domains, "
           "sum(CASE WHEN flagged THEN 1 ELSE 0 END) AS flagged FROM documents JOIN doc_flags USING (doc_id)")
        sh("query", "--store", str(store), "SELECT url, flags FROM documents JOIN doc_flags USING (doc_id) "
           "WHERE flagged ORDER BY url LIMIT 5")
        print()
        sh("export", "--store", str(store), "--where", "NOT flagged", "--out", str(export), "--overwrite")
        manifest = json.loads((export / "manifest.json").read_text())
        exported = duckdb.connect().execute(
            "SELECT count(*) FROM read_parquet(?)", [str(export / "documents.parquet")]).fetchone()[0]
        if exported != manifest["counts"]["kept"]:
            raise DemoFailed(f"manifest says {manifest['counts']['kept']} kept but the export holds {exported}")
    except DemoFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nDemo finished. Kept {exported} of {manifest['counts']['documents_in_store']} documents.\n"
          f"  store:    {store}\n  export:   {export / 'documents.parquet'}\n"
          f"  manifest: {export / 'manifest.json'}\n  card:     {export / 'README.md'}\n"
          f"Try: .venv/bin/provenance query --store {store} \"SELECT * FROM doc_flags WHERE flagged\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
