"""``provenance ingest``: documents from files (JSONL, Parquet; WARC/WET via provenance.crawlers.warc).

Bad input never stops an ingest and never loses good input: each bad record
becomes an ``InputProblem`` naming the file and line (or WARC offset), the
rest is stored, and the command exits 'partial'. Ingesting the same file
twice stores nothing the second time (documents are keyed by URL + body hash).
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from provenance import objectstore
from provenance.documents import DocumentSink, KnownCaptures, build_document, existing_doc_ids
from provenance.extract import get_extractor
from provenance.store import Run, Store

KNOWN_FIELDS = {"url", "text", "html", "fetched_at", "title", "http_status", "content_type"}


class IngestError(Exception):
    """An input that cannot be read at all (missing, unknown format, corrupt container)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


# An input: a local Path, or an s3:// URI (a str, its endpoint query kept for opening; objectstore.label drops it).
Input = Path | str


@contextlib.contextmanager
def _object_errors():
    """ObjectStoreError -> IngestError with the same line and exit code."""
    try:
        yield
    except objectstore.ObjectStoreError as exc:
        raise IngestError(str(exc), exc.exit_code) from None


@dataclass(frozen=True)
class InputProblem:
    file: str
    where: str  # "line 12", "offset 4096", "row 7"
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.message}"


@dataclass
class IngestResult:
    files: list[str] = field(default_factory=list)
    records: int = 0
    stored: int = 0
    already_stored: int = 0
    problems: list[InputProblem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)  # format-specific counts, e.g. WARC records skipped
    skipped: list[str] = field(default_factory=list)  # files of unknown format found in a directory

    def to_json(self) -> dict:
        out = {"files": self.files, "records": self.records, "stored": self.stored,
               "already_stored": self.already_stored, "problems": len(self.problems),
               "first_problems": [str(p) for p in self.problems[:100]], "skipped_unknown_format": self.skipped}
        if self.stats:
            out["stats"] = dict(sorted(self.stats.items()))
        return out


def parse_time(value) -> datetime | None:
    """ISO 8601 string or unix seconds -> aware UTC datetime; None for missing."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00") if value.strip().endswith("Z") else value.strip()
        parsed = datetime.fromisoformat(text)
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError(f"fetched_at must be an ISO 8601 string or unix seconds, not {type(value).__name__}")


def record_to_document(record: dict, *, source: str, crawl_id: str, run_id: str, source_file: str,
                       line: int | None, extractor: str | None = None) -> dict:
    """One JSONL/Parquet record -> a documents row. Raises ValueError with a readable message."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    url = record.get("url")
    if url is None:
        raise ValueError("missing 'url' (a non-empty string is required)")
    if not isinstance(url, str):
        raise ValueError(f"'url' must be a string, got {json_type_name(url)}")
    if not url.strip():
        raise ValueError("'url' is empty (a non-empty string is required)")
    text, html = record.get("text"), record.get("html")
    if text is None and html is None:
        raise ValueError("needs 'text' or 'html'")
    for name, value in (("text", text), ("html", html)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"'{name}' must be a string, got {json_type_name(value)}")
    try:
        fetched_at = parse_time(record.get("fetched_at"))
    except ValueError as exc:
        raise ValueError(f"bad 'fetched_at': {exc}") from None
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    status = record.get("http_status")
    return build_document(
        url=url.strip(), body=None, html=html, text=text if html is None else None, source=source,
        crawl_id=crawl_id, run_id=run_id, fetched_at=fetched_at, title=record.get("title"),
        http_status=status if isinstance(status, int) else None, content_type=record.get("content_type"),
        metadata=extra or None, source_file=source_file, source_line=line, extractor=extractor,
    )


def json_type_name(value) -> str:
    """The JSON word for a value's type: what a user who wrote the record recognises."""
    for kind, word in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (list, "an array"),
                       (dict, "an object")):
        if isinstance(value, kind):
            return word
    return type(value).__name__


@contextlib.contextmanager
def _open_maybe_gzip(path: Input):
    with objectstore.open_any(path) as raw:
        if objectstore.name_of(path).endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                yield fh
        else:
            yield raw


def iter_jsonl(path: Input) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, problem) per non-blank line; exactly one of record/problem is set."""
    try:
        with _open_maybe_gzip(path) as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    yield number, None, f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
                    continue
                try:
                    yield number, json.loads(line), None
                except json.JSONDecodeError as exc:
                    yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield -1, None, f"unreadable after this point: {type(exc).__name__}: {exc}"


def is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"


def parquet_source(path: Input):
    """What pyarrow opens: the local path, or a random-access object (only the byte ranges read are fetched)."""
    if objectstore.is_uri(path):
        with _object_errors():
            return objectstore.open_random_access(path)
    return path


def check_parquet_columns(path: Input) -> None:
    """Refuse a Parquet file whose columns cannot make documents: one error for the file, not one per row.

    Reads only the footer. Raises IngestError naming the file, the column and what it must be.
    """
    try:
        schema = pq.read_schema(parquet_source(path))
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(f"{objectstore.label(path)}: not a readable Parquet file: {exc}") from None
    path = objectstore.label(path)
    columns = {f.name: f.type for f in schema}
    listing = ", ".join(columns) or "none"
    if "url" not in columns:
        raise IngestError(f"{path}: Parquet file has no 'url' column (columns: {listing}); "
                          "records need 'url' and 'text' and/or 'html'")
    if "text" not in columns and "html" not in columns:
        raise IngestError(f"{path}: Parquet file has neither a 'text' nor an 'html' column (columns: {listing}); "
                          "records need 'url' and 'text' and/or 'html'")
    for name in ("url", "text", "html"):
        if name in columns and not pa.types.is_null(columns[name]) and not is_string_type(columns[name]):
            raise IngestError(f"{path}: Parquet column '{name}' is of type {columns[name]}, "
                              "it must be a string column")


def iter_parquet(path: Input) -> Iterator[tuple[int, dict | None, str | None]]:
    check_parquet_columns(path)
    yield from iter_parquet_rows(path)


def iter_parquet_rows(path: Input, columns: list[str] | None = None) -> Iterator[tuple[int, dict | None, str | None]]:
    """(row number, record, problem) per row, like iter_jsonl; ``columns`` only (default all), unchecked."""
    try:
        pf = pq.ParquetFile(parquet_source(path))
    except IngestError:
        raise
    except Exception as exc:
        raise IngestError(f"{objectstore.label(path)}: not a readable Parquet file: {exc}") from None
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=256, columns=columns):
            for record in batch.to_pylist():
                row += 1
                yield row, record, None
    except Exception as exc:
        yield row + 1, None, f"corrupt Parquet data from row {row + 1}: {type(exc).__name__}: {exc}"


def detect_format(path: Input) -> str:
    name = objectstore.name_of(path).lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".json.gz", "jsonl"), (".ndjson", "jsonl"),
                        (".parquet", "parquet"), (".warc", "warc"), (".warc.gz", "warc"), (".arc", "warc"),
                        (".arc.gz", "warc"), (".wet", "warc"), (".wet.gz", "warc"), (".warc.wet.gz", "warc"),
                        (".warc.lz4", "warc")):  # unsupported, but reported by the WARC reader as such
        if name.endswith(suffix):
            return fmt
    raise IngestError(f"{objectstore.label(path)}: unknown input format (expected .jsonl[.gz], .parquet, .warc[.gz], .wet[.gz])")


def _known_format(path: Input) -> bool:
    try:
        detect_format(path)
    except IngestError:
        return False
    return True


def expand_inputs(paths: list[Input]) -> tuple[list[Input], list[Input]]:
    """(files to ingest, files skipped). Files named explicitly must be ingestible; in a directory, files
    of unknown format are skipped (and listed in the summary), and a directory with none to ingest is an error.
    An ``s3://`` URI names one object, every object under a prefix, or those a glob in the key matches
    (objectstore.list_files); a prefix or glob is a directory here.
    """
    out, skipped = [], []

    def take_listing(where: str, found: list, name_of, kind: str) -> None:
        known = [f for f in found if _known_format(f)]
        if not known:
            unknown = f" ({len(found)} of unknown format, e.g. {name_of(found[0])})" if found else ""
            raise IngestError(f"{where}: no {kind} to ingest{unknown}; expected .jsonl[.gz], .parquet, "
                              f".warc[.gz], .arc[.gz] or .wet[.gz] {kind}")
        out.extend(known)
        skipped.extend(f for f in found if not _known_format(f))

    for p in paths:
        if objectstore.is_uri(p):
            with _object_errors():
                found = objectstore.list_files(p)
            if found == [p]:  # one object, named explicitly
                out.append(p)
            else:
                take_listing(objectstore.label(p), found, objectstore.name_of, "objects")
        elif p.is_dir():
            take_listing(str(p), sorted(f for f in p.rglob("*") if f.is_file()), lambda f: f.name, "files")
        elif p.exists():
            out.append(p)
        else:
            raise IngestError(f"{p}: no such file or directory")
    return out, skipped


def ingest_file(path: Input, run: Run, sink: DocumentSink, result: IngestResult,
                on_problem: Callable[[InputProblem], None] | None = None,
                on_record: Callable[[], None] | None = None, extractor: str | None = None) -> None:
    """Import one file; ``extractor`` ([ingest] extractor) extracts the text of every HTML page in it."""
    fmt = detect_format(path)

    def problem(where: str, message: str) -> None:
        p = InputProblem(objectstore.label(path), where, message)
        result.problems.append(p)
        if on_problem:
            on_problem(p)

    if fmt == "warc":
        from provenance.crawlers.warc import ingest_warc

        ingest_warc(path, run, sink, result, problem, on_record, extractor=extractor)
        return
    rows = iter_jsonl(path) if fmt == "jsonl" else iter_parquet(path)
    where_word = "line" if fmt == "jsonl" else "row"
    for number, record, error in rows:
        if on_record:
            on_record()
        if error is not None:
            problem(f"{where_word} {number}" if number >= 0 else "end", error)
            continue
        result.records += 1
        try:
            doc = record_to_document(record, source=fmt, crawl_id=sink.crawl_id, run_id=run.run_id,
                                     source_file=objectstore.label(path), line=number, extractor=extractor)
        except ValueError as exc:
            problem(f"{where_word} {number}", str(exc))
            continue
        if sink.add(doc):
            result.stored += 1
        else:
            result.already_stored += 1


def run_ingest(store: Store, paths: list[Input], crawl_id: str | None = None, flush_rows: int = 500,
               on_problem=None, on_record=None, extractor: str | None = None) -> IngestResult:
    try:  # an unknown or uninstalled extractor fails before the lock, not on every page
        extractor = get_extractor(extractor).name
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    paths = [p if objectstore.is_uri(p) else Path(p) for p in paths]
    files, skipped = expand_inputs(paths)
    for f in files:  # refuse unusable files before taking the lock: one error for a file, not one per record
        if detect_format(f) == "parquet":
            check_parquet_columns(f)
    result = IngestResult(files=[objectstore.label(f) for f in files], skipped=[objectstore.label(f) for f in skipped])
    config = {"inputs": [objectstore.label(p) for p in paths], "crawl_id": crawl_id, "extractor": extractor}
    with store.run("ingest", config=config) as run:
        known = existing_doc_ids(store.snapshot())
        captures = KnownCaptures(store)
        for path in files:
            sink = DocumentSink(run, crawl_id or f"ingest-{objectstore.name_of(path).split('.')[0]}", known, flush_rows=flush_rows,
                                captures=captures)
            try:
                with _object_errors():
                    ingest_file(path, run, sink, result, on_problem, on_record, extractor=extractor)
            finally:
                sink.flush()  # commit what was read, even when the file then failed
        run.stats = result.to_json()
        run.finish("partial" if result.problems else "succeeded")
    return result
