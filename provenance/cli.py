"""The ``provenance`` command line: crawl | ingest | reference | tag | query | export | report | plugins | store.

A contract users script against: every command takes ``--store DIR`` (default
from provenance.toml, then ./provenance-store), never prompts, prints progress
live on a terminal (and, off one, a line every 30 s on stderr:
provenance/progress.py), ends with a one-line summary, and exits with a code from
provenance.exitcodes. Errors are one line on stderr: ``provenance: error: ...``,
also for the unexpected (main() is the safety net; ``provenance --debug`` or
PROVENANCE_DEBUG=1 shows the traceback instead).
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import sys
from pathlib import Path

import click

import provenance
from provenance import config as config_mod
from provenance import errors, exitcodes
from provenance.store import REMOVED_FILE_GRACE_S, Store, StoreError, StoreLocked, show_store_warnings


# Control characters in data (ESC starts terminal escape sequences) are shown as \x1b, never sent.
_VISIBLE_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), *range(0x7f, 0xa0)] if chr(c) not in "\n\t"}


def printable(text: str) -> str:
    """``text`` with control characters made visible, for a terminal: crawled data may carry any of them."""
    return text.translate(_VISIBLE_CONTROLS)

# The store the running command opened: named by the safety net in main() when, say, its disk fills up.
_store_in_use: Path | None = None


class Failure(click.ClickException):
    def __init__(self, message: str, code: int = exitcodes.FAILURE):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None):
        click.echo(f"provenance: error: {printable(self.format_message())}", err=True)


def handle_errors(fn):
    """Known failures become one clear line and a meaningful exit code, not a traceback."""
    from provenance.detectors import DetectorError
    from provenance.export import ExportError
    from provenance.ingest import IngestError
    from provenance.objectstore import ObjectStoreError
    from provenance.pluginmanager import PluginLoadError
    from provenance.references import ReferenceSetError
    from provenance.report import ReportError
    from provenance.runner import TagRunError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StoreLocked as exc:
            raise Failure(str(exc), exitcodes.LOCKED) from None
        except (config_mod.ConfigError, TagRunError, DetectorError) as exc:
            raise Failure(str(exc), exitcodes.USAGE) from None
        except (StoreError, IngestError, ExportError, ReportError, PluginLoadError, ReferenceSetError,
                ObjectStoreError) as exc:
            raise Failure(str(exc), getattr(exc, "exit_code", exitcodes.FAILURE)) from None
        # Ctrl-C is main()'s to report, the same way for every command.

    return wrapper


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    """``--shard K/N`` -> (K, N); a usage error (exit 2) unless 1 <= K <= N."""
    if value is None:
        return None
    k, _, n = value.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit() and 1 <= int(k) <= int(n)):
        raise click.BadParameter(f"{value!r}: give K/N with 1 <= K <= N, e.g. --shard 1/4 (shard 1 of 4)")
    return int(k), int(n)


def store_option(fn):
    fn = click.option("--store", "store_dir", metavar="DIR", envvar="PROVENANCE_STORE",
                      help="Store directory [default: from provenance.toml, else ./provenance-store].")(fn)
    fn = click.option("--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False),
                      help="Settings file [default: ./provenance.toml if present].")(fn)
    return fn


def settings_and_store(config_file, store_dir, create: bool = False,
                       overrides: dict[str, dict] | None = None) -> tuple[dict, Store]:
    """Settings (file, then flags: ``{section: {key: value or None}}``, validated alike), then the store."""
    global _store_in_use
    settings = config_mod.load(config_file)
    for section, values in (overrides or {}).items():
        settings = config_mod.override(settings, section, **values)
    root = config_mod.resolve_store(store_dir, settings)
    _store_in_use = root
    if root.exists() and not root.is_dir():
        raise Failure(f"store {root}: is a file, not a store directory; give --store a directory", exitcodes.USAGE)
    try:
        return settings, Store.open(root, create=create)
    except OSError as exc:
        if errors.is_disk_full(exc):
            raise
        raise Failure(f"store {root}: cannot {'create' if create else 'open'} the store: "
                      f"{exc.strerror or exc}; give --store a directory you can write to") from None


def progress(command: str, unit: str):
    """Live progress on a terminal; off one, a line on stderr every PROVENANCE_PROGRESS_INTERVAL seconds."""
    from provenance.progress import Progress

    return Progress(command, unit)


def _debug_option(_ctx, _param, value):
    if value:
        errors.enable_debug()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(provenance.__version__, prog_name="provenance")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_option,
              help=f"Show the traceback of an unexpected error (also: {errors.DEBUG_ENV}=1).")
def cli():
    """Provenance Guard: crawl with provenance, tag with detector plugins, export clean sets with SQL.

    Exit codes: 0 ok, 1 failure, 2 usage, 3 partial (some inputs or batches failed), 75 store locked.
    """


# Bad input lines printed per ingest; the rest are counted (and the first 100 kept in the run's stats).
MAX_PROBLEM_LINES = 20


# ----- ingest ---------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@store_option
@click.option("--crawl-id", help="Name this import [default: ingest-<file name>].")
@handle_errors
def ingest(paths, store_dir, config_file, crawl_id):
    """Import documents from JSONL, Parquet, WARC or WET files (or directories of them).

    A path may be an object in a bucket, s3://BUCKET/KEY, a prefix or a glob
    (s3://BUCKET/crawl/*.warc.gz), read as a stream; endpoint and credentials
    from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... (docs/SCALE.md).

    JSONL/Parquet records need `url` and `text` and/or `html`; `fetched_at`
    (ISO 8601 or unix seconds) and `title` are optional, other fields are kept
    as metadata. Bad records are reported with file and line; good ones are kept.
    """
    from provenance.ingest import run_ingest

    settings, store = settings_and_store(config_file, store_dir, create=True)
    shown = 0

    def report_problem(problem) -> None:  # a file of 20,000 bad lines must not print 20,000 lines
        nonlocal shown
        shown += 1
        if shown <= MAX_PROBLEM_LINES:
            click.echo(f"provenance: bad input: {problem}", err=True)

    with progress("ingest", "records") as bar:
        result = run_ingest(store, list(paths), crawl_id=crawl_id,
                            flush_rows=settings["ingest"]["flush_rows"], extractor=settings["ingest"]["extractor"],
                            on_problem=report_problem, on_record=bar.advance)
    if shown > MAX_PROBLEM_LINES:
        click.echo(f"provenance: bad input: {shown - MAX_PROBLEM_LINES} more not shown; the first 100 are in "
                   f"the run's stats: provenance query \"SELECT stats FROM runs WHERE command = 'ingest' "
                   f"ORDER BY started_at DESC LIMIT 1\"", err=True)
    skipped = ""
    if result.skipped:  # files of unknown format found in a directory: said, not silently dropped
        names = ", ".join(Path(f).name for f in result.skipped[:5]) + (", ..." if len(result.skipped) > 5 else "")
        skipped = f", {len(result.skipped)} file(s) skipped (unknown format: {names})"
    click.echo(f"ingest: {result.records} records in {len(result.files)} file(s): {result.stored} stored, "
               f"{result.already_stored} already stored, {len(result.problems)} bad{skipped} -> {store.root}")
    sys.exit(exitcodes.PARTIAL if result.problems else exitcodes.OK)


# ----- reference ------------------------------------------------------------------------------
@cli.group()
def reference():
    """Reference sets of known LLM texts, which detectors (near_duplicate) compare documents against."""


@reference.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@store_option
@click.option("--text-field", default="text", show_default=True, help="The field (column) holding the text.")
@click.option("--id-field", default="id", show_default=True,
              help="The field holding each text's id [absent: <file name>:<line>].")
@handle_errors
def reference_add(name, paths, store_dir, config_file, text_field, id_field):
    """Add reference set NAME from JSONL or Parquet files (or directories), replacing its earlier version.

    A path may be an object in a bucket, s3://BUCKET/KEY, a prefix or a glob, as for ingest.
    NAME: lower-case letters, digits, '_', '.', '-'. Records without a text
    string are reported with file and line; the others are kept. Adding the
    same texts again stores nothing.
    """
    from provenance.references import add_reference

    _settings, store = settings_and_store(config_file, store_dir, create=True)
    with progress("reference", "records") as bar:
        result = add_reference(store, name, list(paths), text_field=text_field, id_field=id_field,
                               on_record=bar.advance)
    for problem in result["first_problems"][:MAX_PROBLEM_LINES]:
        click.echo(f"provenance: bad input: {problem}", err=True)
    if result["problems"] > MAX_PROBLEM_LINES:
        click.echo(f"provenance: bad input: {result['problems'] - MAX_PROBLEM_LINES} more not shown; the first 100 "
                   f"are in the run's stats: provenance query \"SELECT stats FROM runs WHERE command = 'reference' "
                   f"ORDER BY started_at DESC LIMIT 1\"", err=True)
    if result["unchanged"]:
        what = f"unchanged, already stored (version {result['run_id']})"
    else:
        replaced = f", replacing {result['replaced_files']} file(s)" if result["replaced_files"] else ""
        what = f"{result['files']} file(s){replaced}, version {result['run_id']}"
    click.echo(f"reference add: {name}: {result['texts']} texts from {result['records']} records in "
               f"{len(result['inputs'])} input(s), {result['problems']} bad; {what} -> {store.root}", err=True)
    sys.exit(exitcodes.PARTIAL if result["problems"] else exitcodes.OK)


@reference.command("list")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@handle_errors
def reference_list(store_dir, config_file, fmt):
    """List the live reference sets: texts, files, when added, content hash."""
    from provenance.references import list_references

    _settings, store = settings_and_store(config_file, store_dir)
    sets = list_references(store.snapshot())
    columns = ["name", "texts", "files", "bytes", "added_at", "run_id", "content_sha256"]
    _print_rows(columns, [[s[c] for c in columns] for s in sets], fmt)
    if fmt == "table" and not sets:
        click.echo("no reference sets; add one with: provenance reference add NAME FILE.jsonl", err=True)


@reference.command("remove")
@click.argument("name")
@store_option
@handle_errors
def reference_remove(name, store_dir, config_file):
    """Take reference set NAME out of use (one commit; later tag runs no longer see it)."""
    from provenance.references import remove_reference

    _settings, store = settings_and_store(config_file, store_dir)
    result = remove_reference(store, name)
    click.echo(f"reference remove: {name}: {result['texts']} texts in {result['files']} file(s) removed "
               f"(run {result['run_id']}) -> {store.root}", err=True)


# ----- store maintenance ------------------------------------------------------------------------
@cli.group("store")
def store_group():
    """Maintenance of the store: check its files, compact small ones, vacuum unreferenced ones.

    Each holds the store alone (exit 75 while another run writes).
    """


@store_group.command("check")
@store_option
@handle_errors
def store_check(store_dir, config_file):
    """Verify the log (all of it, and each checkpoint against it) and every live file's size and sha256;
    list orphans. Exit 0: no problem; 1: one line per problem on stdout."""
    from provenance.maintenance import check_store

    _settings, store = settings_and_store(config_file, store_dir)
    problems, counts = check_store(store)
    for problem in problems:
        click.echo(printable(problem))
    click.echo(f"store check: {counts['entries']} commit entries, {counts['checkpoints']} checkpoint(s), "
               f"{counts['verified']} of {counts['live_files']} live files verified, {counts['removed_on_disk']} "
               f"removed file(s) awaiting vacuum; {len(problems)} problem(s) -> {store.root}", err=True)
    sys.exit(exitcodes.FAILURE if problems else exitcodes.OK)


@store_group.command("compact")
@store_option
@click.option("--target-rows", type=click.IntRange(min=2), default=100_000, show_default=True,
              help="Merge small files into files of about this many rows.")
@click.option("--target-mb", type=click.IntRange(min=1), default=128, show_default=True,
              help="... or about this many MB, whichever comes first.")
@handle_errors
def store_compact(store_dir, config_file, target_rows, target_mb):
    """Merge small tag, error, fetch and (untagged) document files, one commit per merged file.

    Merged document files are in doc_id order, and an untagged document file an earlier version wrote
    unsorted is rewritten sorted: an export merges sorted files instead of sorting every document
    through temporary files. Documents that a detector has covered and state files are left as they are: coverage names them by
    path and row. Removed small files stay on disk for readers until vacuumed.
    """
    from provenance.maintenance import compact_store

    _settings, store = settings_and_store(config_file, store_dir)
    result = compact_store(store, target_rows=target_rows, target_bytes=target_mb * 1024 * 1024)
    click.echo(f"store compact: {result['merged_files']} small file(s) merged into {result['into']} "
               f"({result['rows']} rows) -> {store.root}", err=True)


@store_group.command("vacuum")
@store_option
@click.option("--grace", "grace_h", type=click.FloatRange(min=0), default=REMOVED_FILE_GRACE_S / 3600,
              show_default=True, help="Keep files removed less than this many hours ago (readers may still "
                                      "read them).")
@handle_errors
def store_vacuum(store_dir, config_file, grace_h):
    """Delete files no live commit names: orphans of crashed runs, and files removed more than --grace ago."""
    from provenance.maintenance import vacuum_store

    _settings, store = settings_and_store(config_file, store_dir)
    result = vacuum_store(store, grace_s=grace_h * 3600)
    later = (f"; {result['kept_in_grace']} removed file(s) kept for readers, the first due in "
             f"{result['next_due_h']} h" if result["kept_in_grace"] else "")
    click.echo(f"store vacuum: {result['deleted_files']} file(s) deleted, {result['deleted_bytes'] / 1e6:.1f} MB "
               f"freed{later} -> {store.root}", err=True)


# ----- crawl ----------------------------------------------------------------------------------
@cli.command()
@click.argument("urls", nargs=-1)
@store_option
@click.option("--urls", "url_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Fetch the URLs listed in FILE (one per line, optionally 'URL SHA256'); no link following.")
@click.option("--sitemap", "sitemaps", multiple=True, help="Crawl the pages listed by this sitemap (repeatable).")
@click.option("--crawl-id", help="Name this crawl [default: derived from the start URLs].")
@click.option("--shard", metavar="K/N", callback=lambda _ctx, _param, value: _parse_shard(value),
              help="With --urls: crawl only the hosts of shard K of N (split by host). Run the N shards at once, "
                   "as separate processes or on machines sharing the store; each is its own crawl.")
# Bounds are checked by the settings model (provenance.config), the one place that types every key.
@click.option("--max-pages", type=int, help="Stop after this many pages.")
@click.option("--max-depth", type=int, help="Follow links at most this deep.")
@click.option("--allow-private", is_flag=True, default=None,
              help="Allow private, loopback and link-local addresses (refused by default).")
@click.option("--ignore-robots", is_flag=True, default=False, help="Do not obey robots.txt.")
@click.option("--confirm-after", "confirm_after", type=float, metavar="SECONDS",
              help="Fetch each page found changed once more, after a random delay of SECONDS/2 to SECONDS, to catch "
                   "an edit undone soon after the crawl (frontrunning) [default: 0, off].")
@click.option("--stats-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the run's JSON stats here.")
@handle_errors
def crawl(urls, store_dir, config_file, url_file, sitemaps, crawl_id, shard, max_pages, max_depth, allow_private,
          ignore_robots, confirm_after, stats_file):
    """Crawl a site (same-site links), sitemaps or a URL list into the store, with full provenance.

    Re-crawls are incremental: unchanged pages are recorded as such, changed
    pages become new versions linked to the old ones.
    """
    from provenance.crawlers import CrawlError, CrawlRequest, run_crawl

    if not (urls or url_file or sitemaps):
        raise click.UsageError("give start URLs, --urls FILE or --sitemap URL")
    flags = {"max_pages": max_pages, "max_depth": max_depth, "allow_private": allow_private,
             "obey_robots": False if ignore_robots else None, "confirm_after_s": confirm_after}
    settings, store = settings_and_store(config_file, store_dir, create=True, overrides={"crawl": flags})
    request = CrawlRequest(start_urls=list(urls), url_file=url_file, sitemaps=list(sitemaps), crawl_id=crawl_id,
                           shard=shard, settings=settings["crawl"])
    try:
        result = run_crawl(store, request)  # a child process does the crawl; StoreLocked -> exit 75
    except CrawlError as exc:
        if exc.exit_code == exitcodes.OK:  # nothing to do (an empty shard)
            click.echo(f"provenance: {exc}", err=True)
            sys.exit(exitcodes.OK)
        raise Failure(str(exc), exc.exit_code) from None
    if stats_file:
        stats_file.write_text(json.dumps(result.stats, indent=2, default=str) + "\n")
    click.echo(result.summary_line())
    if result.exit_code == exitcodes.FAILURE:
        click.echo(f"provenance: error: nothing was fetched; see why with: provenance query \"SELECT url, outcome, "
                   f"error FROM fetches WHERE run_id = '{result.run_id}'\"", err=True)
    sys.exit(result.exit_code)


# ----- tag ------------------------------------------------------------------------------------
@cli.command()
@store_option
@click.option("--plugins", "enable", help="Comma-separated detector or plugin names to run [default: all].")
@click.option("--disable", help="Comma-separated detector or plugin names not to run.")
@click.option("--batch-size", type=int, help="Documents per batch.")
@click.option("--time-budget", type=float, help="Seconds a detector may spend on one batch before it is stopped.")
@click.option("--isolation", type=click.Choice(["process", "inline"]),
              help="Run detectors in worker processes (default; enforces the time budget) or inline.")
@click.option("--workers", type=int, help="Worker processes per per-document or state-keeping detector [default: 1].")
@click.option("--engine", type=click.Choice(["local", "ray"]),
              help="Where detectors run: this machine (default) or a Ray cluster (see docs/SCALE.md).")
@click.option("--address", "ray_address", metavar="ADDRESS",
              help="With --engine ray: auto or ray://HOST:10001 [default: start a local Ray instance].")
@click.option("--stage", "ray_stage", metavar="S3_URI",
              help="With --engine ray, for a cluster without a shared filesystem: copy the document files the run "
                   "needs to s3://BUCKET/PREFIX and have the workers read them there (see docs/SCALE.md).")
@click.option("--plugin-module", "plugin_modules", multiple=True, metavar="MODULE_OR_FILE",
              help="Also load a plugin from an importable module or a .py file (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@handle_errors
def tag(store_dir, config_file, enable, disable, batch_size, time_budget, isolation, workers, engine, ray_address,
        ray_stage, plugin_modules, as_json):
    """Run detector plugins over documents not yet tagged by the same detector version and options."""
    from provenance.pluginmanager import get_plugin_manager, load_plugin_modules
    from provenance.runner import print_summary, run_tag, summary_json

    flags = {"batch_size": batch_size, "time_budget_s": time_budget, "isolation": isolation, "workers": workers,
             "engine": engine, "ray_address": ray_address, "ray_stage": ray_stage}
    settings, store = settings_and_store(config_file, store_dir, overrides={"tag": flags})
    pm = get_plugin_manager()
    load_plugin_modules(pm, plugin_modules)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    with progress("tag", "docs") as bar:
        summary = run_tag(store, pm, settings, enable=split(enable), disable=split(disable),
                          progress=bar.advance, on_total=bar.total)
    if as_json:
        click.echo(summary_json(summary))
    print_summary(summary)
    click.echo(f"tag: run {summary.run_id}: {len(summary.detectors)} detector(s), {summary.tags} tags, "
               f"{summary.errors} error(s) -> {store.root}", err=as_json)
    sys.exit(exitcodes.PARTIAL if summary.errors else exitcodes.OK)


# ----- query ----------------------------------------------------------------------------------
def _query_help() -> str:
    from provenance.sql import VIEWS

    width = max(map(len, VIEWS))
    views = "\n".join(f"  {name:<{width}}  {what}" for name, what in VIEWS.items())
    # \b keeps click from re-wrapping the list into one paragraph.
    return ("Run one SELECT over the store's views.\n\n\b\nViews:\n" + views + "\n\n"
            "The query reads the store's views only: it cannot read or write other files or change settings. "
            "--format json prints a JSON array with one object per row, --format csv a header and one line per "
            "row (lists, structs and maps as JSON); both stay empty of anything else. An empty result in table "
            "format says '0 rows' on stderr.")


@cli.command(help=_query_help())
@click.argument("sql")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--max-rows", type=int, default=100, show_default=True, help="Rows shown in table format (0: all).")
@handle_errors
def query(sql, store_dir, config_file, fmt, max_rows):
    import duckdb

    from provenance.sql import UserSQLError, connect, first_line, read_only_query

    try:
        sql = read_only_query(sql)
    except UserSQLError as exc:
        raise Failure(str(exc), exitcodes.USAGE) from None
    _settings, store = settings_and_store(config_file, store_dir)
    con = connect(store, sandbox=True)
    try:
        result = con.execute(sql)
    except duckdb.PermissionException as exc:
        raise Failure(f"SQL error: {first_line(exc)} (provenance query reads only the store's views)",
                      exitcodes.USAGE) from None
    except duckdb.Error as exc:
        raise Failure(f"SQL error: {first_line(exc)}", exitcodes.USAGE) from None
    n = _print_rows([_column_name(d[0]) for d in result.description], _streamed(result), fmt, max_rows)
    if fmt == "table" and not n:
        click.echo("0 rows", err=True)


# Rows fetched from DuckDB at a time: a query's result is streamed, never held whole (a table shows
# --max-rows of it and counts the rest).
QUERY_CHUNK_ROWS = 10_000


def _streamed(result):
    while rows := result.fetchmany(QUERY_CHUNK_ROWS):
        yield from rows


# DuckDB names an unaliased count(*) 'count_star()': shown as it was written.
_READABLE_NAMES = {"count_star()": "count(*)"}


def _column_name(name: str) -> str:
    return _READABLE_NAMES.get(name, name)


def _print_rows(columns, rows, fmt: str, max_rows: int = 0) -> int:
    """Rows (any iterable, consumed once) as a table (for people), CSV, or a JSON array of row objects
    (for scripts); returns how many there were."""
    n = 0
    if fmt == "json":
        out = sys.stdout
        out.write("[")
        for n, row in enumerate(rows, 1):
            out.write((", " if n > 1 else "") + json.dumps(dict(zip(columns, _jsonable_row(row))),
                                                          default=_json_default, ensure_ascii=False))
        out.write("]\n")
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for n, row in enumerate(rows, 1):
            writer.writerow([_nested_as_json(v) for v in _jsonable_row(row)])
    else:
        rows = iter(rows)
        shown = list(rows) if not max_rows else list(itertools.islice(rows, max_rows))
        n = len(shown) + sum(1 for _ in rows)
        _print_table(columns, shown, n)
    return n


def _jsonable_row(row) -> list:
    return [v.hex() if isinstance(v, (bytes, bytearray)) else v for v in row]


def _json_default(value):
    """What json.dumps cannot write itself: DuckDB's decimals, times and bytes inside nested values."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _nested_as_json(value):
    """A list, struct (dict) or map (dict) cell as JSON text; Python's repr is no format other tools read."""
    if isinstance(value, (list, tuple, dict)):
        try:
            return json.dumps(value, default=_json_default, ensure_ascii=False)
        except TypeError:  # a map keyed by a struct or list: no JSON object has such keys
            return str(value)
    return value


def _as_text(value):
    """A table cell or header as plain rich Text: never read as markup or :emoji: codes."""
    from rich.text import Text

    return Text("NULL" if value is None else printable(str(_nested_as_json(value))[:200]))


def _print_table(columns, shown, total) -> None:
    """The shown rows as a table, and a line saying how many rows there were when that is more."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for name in columns:
        # a header is never cut to "docu…": a column is at least as wide as its name (up to 30)
        table.add_column(_as_text(name), min_width=min(len(name), 30))
    for row in shown:
        table.add_row(*[_as_text(v) for v in _jsonable_row(row)])
    Console(width=max(120, len(columns) * 20) if not sys.stdout.isatty() else None,
            markup=False, emoji=False, highlight=False).print(table)
    if total > len(shown):
        click.echo(f"({total} rows, first {len(shown)} shown; --max-rows 0 shows all)")


# ----- export ---------------------------------------------------------------------------------
@cli.command()
@store_option
@click.option("--where", default="NOT flagged", show_default=True,
              help="One boolean SQL expression over the columns of documents and doc_flags choosing what to keep.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (documents.parquet or its shards, manifest.json, README.md), or an "
                   "s3://BUCKET/PREFIX "
                   "(see docs/SCALE.md).")
@click.option("--include-raw", is_flag=True, help="Keep the raw body bytes in the export.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in the output directory (nothing else).")
@click.option("--with-tags", is_flag=True,
              help="Add each document's flags and scores (the doc_flags columns: flagged, flags, <category>_score, "
                   "...) as columns of documents.parquet.")
@click.option("--absolute-paths", is_flag=True,
              help="Record absolute paths in the manifest (default: relative to the output directory, so the "
                   "manifest names no local disk).")
@click.option("--respect-opt-out/--no-respect-opt-out", default=None,
              help="Leave out documents whose publisher reserved text-and-data mining (TDMRep or noai, as tagged "
                   "by the consent detector). Default: [export] respect_opt_out (false).")
@click.option("--shard-rows", type=click.IntRange(min=1), default=None, metavar="N",
              help="Write the documents as files of at most N rows (documents-00000-of-00012.parquet ..., in "
                   "doc_id order one after another) instead of one documents.parquet. Default: [export] "
                   "shard_rows (one file).")
@handle_errors
def export(store_dir, config_file, where, out_dir, include_raw, overwrite, respect_opt_out, with_tags,
           absolute_paths, shard_rows):
    """Export the documents a predicate keeps, with a manifest of what was kept, excluded and why."""
    from provenance.export import run_export

    settings, store = settings_and_store(config_file, store_dir,
                                         overrides={"export": {"respect_opt_out": respect_opt_out,
                                                               "shard_rows": shard_rows}})
    manifest = run_export(store, out_dir, where=where, include_raw=include_raw, overwrite=overwrite,
                          respect_opt_out=settings["export"]["respect_opt_out"], with_tags=with_tags,
                          absolute_paths=absolute_paths, shard_rows=settings["export"]["shard_rows"])
    c = manifest["counts"]
    click.echo(f"export: kept {c['kept']} of {c['documents_in_store']} documents "
               f"({c['excluded']} excluded) -> {manifest.get('location', out_dir)}")


# ----- report ---------------------------------------------------------------------------------
@cli.command()
@store_option
@click.option("--out", "out_file", default="report.html", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The HTML file to write (replaced if it exists).")
@click.option("--where", default=None, metavar="PREDICATE",
              help="The selection whose losses the tail section shows: one boolean SQL expression over the "
                   "columns of documents and doc_flags, as for export [default: what export keeps: NOT flagged].")
@handle_errors
def report(store_dir, config_file, out_file, where):
    """Write one self-contained HTML page about the store: corpus, flags, examples, tail, provenance.

    It opens offline (plots are inline SVG, no script) and prints; attach it to a dataset release.
    """
    from provenance.report import write_report

    settings, store = settings_and_store(config_file, store_dir)
    path = write_report(store, out_file, where=where, respect_opt_out=settings["export"]["respect_opt_out"])
    click.echo(str(path))


# ----- plugins --------------------------------------------------------------------------------
@cli.group(invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--hook", help="Only plugins implementing this hook (e.g. register_detectors).")
@click.option("--plugin-module", "plugin_modules", multiple=True, metavar="MODULE_OR_FILE",
              help="Also load a plugin from an importable module or a .py file.")
@click.pass_context
@handle_errors
def plugins(ctx, fmt, hook, plugin_modules):
    """List every plugin, built-ins included: version, distribution, hooks, detectors and categories.

    PROVENANCE_LOAD_PLUGINS='' lists the built-ins only (and is the way to
    get going again when an installed plugin breaks loading).
    """
    if ctx.invoked_subcommand is not None:
        return
    from provenance.pluginmanager import get_plugin_manager, load_plugin_modules, plugin_listing

    pm = get_plugin_manager()
    load_plugin_modules(pm, plugin_modules)
    if hook is not None and hook not in pm.hook_names():
        raise Failure(f"--hook {hook!r}: no such hook; hooks are: {', '.join(pm.hook_names())}", exitcodes.USAGE)
    listing = [p for p in plugin_listing(pm) if hook is None or hook in p["hooks"]]
    if fmt == "json":
        click.echo(json.dumps(listing, indent=2))
        return
    for p in listing:
        kind = "built-in" if p["builtin"] else (p["distribution"] or f"module {p['module']}")
        click.echo(f"{p['name']} {p['version']} ({kind})")
        click.echo(f"    hooks: {', '.join(p['hooks']) or '-'}; categories: {', '.join(p['categories']) or '-'}")
        for d in p["detectors"]:
            options = ", ".join(f"{k}={v!r}" for k, v in d["options"].items()) or "none"
            click.echo(f"    detector {d['name']} v{d['version']} [{d['category']}] "
                       f"{'corpus-level' if d['corpus_level'] else 'per-document'}; "
                       f"needs: {', '.join(d['needs']) or 'doc_id only'}; options: {options}")
    if not listing:
        click.echo("no plugins" + (f" implement {hook}" if hook else ""))


@cli.group()
def plugin():
    """Tools for plugin authors."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to create the package directory.")
@handle_errors
def plugin_new(name, parent):
    """Create an installable plugin package provenance-NAME with one detector, its test and its entry point.

    NAME: lower-case words joined by '-' or '_' (e.g. short-text), without the provenance- prefix.
    """
    from provenance.scaffold import ScaffoldError, new_plugin

    try:
        path = new_plugin(name, parent)
    except ScaffoldError as exc:
        raise Failure(str(exc), exitcodes.USAGE) from None
    click.echo(f"created {path}")
    click.echo(f"next: pip install -e '{path}[test]' && provenance plugins && pytest {path}")


def _register_plugin_commands() -> None:
    """Commands added by plugins (register_commands hook); a broken plugin must not break the CLI."""
    from provenance.pluginmanager import PluginLoadError, get_plugin_manager, load_plugin_modules

    try:
        pm = get_plugin_manager()
        load_plugin_modules(pm, [])  # PROVENANCE_PLUGIN_MODULES
        pm.hook.register_commands(cli=cli)
    except PluginLoadError as exc:
        click.echo(f"provenance: warning: {exc}", err=True)
    except Exception as exc:  # a plugin's register_commands raising
        click.echo(f"provenance: warning: a plugin's register_commands failed: {type(exc).__name__}: {exc}",
                   err=True)


def main(argv: list[str] | None = None) -> None:
    """The console script: every way a command can end becomes an exit code and at most one error line.

    Click's standalone mode would print four lines for a usage error and a
    traceback for anything unexpected; here each is one line on stderr.
    """
    show_store_warnings()
    _register_plugin_commands()
    try:
        code = cli.main(args=argv, prog_name="provenance", standalone_mode=False)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"provenance: error: {exc.format_message()}{where}", err=True)
        sys.exit(exitcodes.USAGE)
    except click.ClickException as exc:  # Failure and click's file errors
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("provenance: interrupted; committed work is kept and the next run resumes", err=True)
        sys.exit(130)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `provenance query ... | head`: the reader left, nothing is wrong
            _silence_stdout()
            sys.exit(exitcodes.FAILURE)
        _report_unexpected(exc)
    except Exception as exc:
        _report_unexpected(exc)
    sys.exit(code if isinstance(code, int) else exitcodes.OK)


def _report_unexpected(exc: Exception) -> None:
    """The safety net: one line and exit 1, or the traceback under --debug / PROVENANCE_DEBUG=1."""
    if errors.debug_enabled():
        raise exc
    message = errors.describe(exc, _store_in_use)
    hint = "" if errors.is_disk_full(exc) else f" ({errors.DEBUG_HINT})"
    click.echo(f"provenance: error: {message}{hint}", err=True)
    sys.exit(exitcodes.FAILURE)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit, which would raise EPIPE once more.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    main()
