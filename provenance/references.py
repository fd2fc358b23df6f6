"""``provenance reference``: named sets of known LLM texts that detectors compare documents against.

A reference set is stored like everything else: Parquet files of the
``references`` kind (schemas/references.v1.json) under
``references/<name>/<run_id>-<seq>.parquet``, made live by the commit log.
Adding a set writes its files in chunks (bounded memory) and commits them in
ONE entry that also removes the set's earlier files, so a kill leaves either
the old version or the new one, never a mix, and a tag run that took its
snapshot before keeps reading the old files (removed files stay on disk for
an hour). Adding the same content under the same name again stores nothing:
each file's commit meta carries the sha256 of the whole set's content.

Input records are read with provenance.ingest's readers (JSONL, ``.jsonl.gz``,
Parquet); a record without a text string is an ``InputProblem`` naming file
and line, and the rest is kept. ``reference_sets(snapshot)`` is what the tag
runner hands corpus detectors as ``CorpusState.references``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from provenance import exitcodes, objectstore
from provenance.ingest import (Input, InputProblem, detect_format, expand_inputs, is_string_type, iter_jsonl,
                               iter_parquet_rows, json_type_name, parquet_source)
from provenance.store import FileEntry, Snapshot, Store

KIND = "references"
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CHUNK_ROWS = 10_000  # rows per file ...
CHUNK_BYTES = 64 << 20  # ... or this much text, whichever comes first: what one add holds in memory


class ReferenceSetError(Exception):
    """A reference command that cannot be done as asked; ``exit_code`` says whose mistake it is."""

    def __init__(self, message: str, exit_code: int = exitcodes.FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ReferenceSetError(f"invalid reference set name {name!r}: use lower-case letters, digits, '_', '.' "
                                f"and '-', starting with a letter or digit, at most 64 characters "
                                f"(e.g. llm-2023)", exitcodes.USAGE)
    return name


# ----- reading ------------------------------------------------------------------------------------
def _entries_by_name(snapshot: Snapshot) -> dict[str, list[FileEntry]]:
    out: dict[str, list[FileEntry]] = {}
    for entry in snapshot.entries(KIND):  # sorted by path
        out.setdefault(entry.meta.get("reference") or entry.path.split("/")[1], []).append(entry)
    return dict(sorted(out.items()))


def reference_sets(snapshot: Snapshot) -> dict[str, list[Path]]:
    """Every live reference set: name -> its Parquet files (absolute paths, sorted). Columns: see schema."""
    return {name: [snapshot.root / e.path for e in entries] for name, entries in _entries_by_name(snapshot).items()}


def reference_versions(snapshot: Snapshot) -> dict[str, str]:
    """name -> content sha256 of every live set: what changes when a set's texts change (for staleness checks)."""
    return {name: entries[0].meta.get("content_sha256", "") for name, entries in _entries_by_name(snapshot).items()}


def list_references(snapshot: Snapshot) -> list[dict]:
    """One dict per live set: name, texts, files, bytes, added_at, run_id, content_sha256."""
    out = []
    for name, entries in _entries_by_name(snapshot).items():
        meta = entries[0].meta
        out.append({"name": name, "texts": sum(e.rows for e in entries), "files": len(entries),
                    "bytes": sum(e.bytes for e in entries), "added_at": meta.get("added_at"),
                    "run_id": meta.get("run_id"), "content_sha256": meta.get("content_sha256")})
    return out


def _unknown(name: str, snapshot: Snapshot) -> ReferenceSetError:
    known = ", ".join(_entries_by_name(snapshot)) or "none yet"
    return ReferenceSetError(f"no reference set named {name!r} in {snapshot.root} (known: {known}); "
                             f"see provenance reference list", exitcodes.USAGE)


# ----- adding -------------------------------------------------------------------------------------
def _check_inputs(paths: list[Input], text_field: str) -> list[Input]:
    """The files to read (local paths, or objects: s3://BUCKET/KEY, a prefix or a glob); refuses, before the lock,
    what cannot give reference texts at all."""
    files, _skipped = expand_inputs([p if objectstore.is_uri(p) else Path(p) for p in paths])
    for f in files:
        fmt, where = detect_format(f), objectstore.label(f)
        if fmt not in ("jsonl", "parquet"):
            raise ReferenceSetError(f"{where}: reference texts are read from .jsonl[.gz] or .parquet files, not {fmt}")
        if fmt == "parquet":
            try:
                columns = {c.name: c.type for c in pq.read_schema(parquet_source(f))}
            except Exception as exc:
                raise ReferenceSetError(f"{where}: not a readable Parquet file: {exc}") from None
            if text_field not in columns or not is_string_type(columns[text_field]):
                found = f"is of type {columns[text_field]}" if text_field in columns else "is missing"
                raise ReferenceSetError(f"{where}: Parquet column {text_field!r} {found} (columns: "
                                        f"{', '.join(columns) or 'none'}); reference texts need a string column "
                                        f"(--text-field names another)")
    return files


def _record_row(record, text_field: str, id_field: str, default_id: str) -> tuple[str, str, str]:
    """(ref_id, text, text_sha256) of one record; ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {json_type_name(record)}")
    text = record.get(text_field)
    if text is None:
        raise ValueError(f"missing {text_field!r} (a string is required; --text-field names another field)")
    if not isinstance(text, str):
        raise ValueError(f"{text_field!r} must be a string, got {json_type_name(text)}")
    if not text.strip():
        raise ValueError(f"{text_field!r} is empty")
    ref_id = record.get(id_field)
    if ref_id is None:
        ref_id = default_id
    elif isinstance(ref_id, int) and not isinstance(ref_id, bool):
        ref_id = str(ref_id)
    elif not isinstance(ref_id, str):
        raise ValueError(f"{id_field!r} must be a string or an integer, got {json_type_name(ref_id)}")
    for field_name, value in ((text_field, text), (id_field, ref_id)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON may carry lone surrogates ("\ud800"), which UTF-8 cannot
            raise ValueError(f"{field_name!r} holds {value[exc.start]!r} at character {exc.start}, "
                             f"which is not valid Unicode text") from None
    return ref_id, text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(path: Input, text_field: str, id_field: str):
    """(where word, rows) of one input: ``iter_jsonl`` or ``iter_parquet_rows`` of the two fields only."""
    if detect_format(path) == "jsonl":
        return "line", iter_jsonl(path)
    names = pq.read_schema(parquet_source(path)).names
    return "row", iter_parquet_rows(path, columns=[c for c in dict.fromkeys((text_field, id_field)) if c in names])


def add_reference(store: Store, name: str, paths: list[Input], *, text_field: str = "text", id_field: str = "id",
                  chunk_rows: int = CHUNK_ROWS, on_record: Callable[[], None] | None = None) -> dict:
    """Add (or replace) reference set ``name`` with the texts of ``paths``; a summary dict.

    Keys: reference, run_id, inputs, records, texts, problems, first_problems
    (``InputProblem``s, at most 100), files, content_sha256, unchanged (the
    same content was live already: nothing stored), replaced_files.
    """
    check_name(name)
    files = _check_inputs(paths, text_field)
    config = {"action": "add", "reference": name, "inputs": [objectstore.label(p) for p in paths],
              "text_field": text_field,
              "id_field": id_field}
    with store.run("reference", config=config, serial="reference") as run:  # two versions of one set must not race
        added_at = run.started_at
        old = _entries_by_name(store.snapshot()).get(name, [])
        digest = hashlib.sha256()
        written: list[FileEntry] = []
        rows: list[dict] = []
        pending_bytes = 0
        summary = {"reference": name, "run_id": run.run_id, "inputs": [objectstore.label(f) for f in files],
                   "records": 0,
                   "texts": 0, "problems": 0, "first_problems": []}

        def problem(p: InputProblem) -> None:
            summary["problems"] += 1
            if len(summary["first_problems"]) < 100:
                summary["first_problems"].append(p)

        def flush() -> None:
            nonlocal rows, pending_bytes
            if rows:
                written.append(run.write(KIND, pa.Table.from_pylist(rows), name))
                rows, pending_bytes = [], 0

        try:
            for path in files:
                where_word, reader = _read(path, text_field, id_field)
                label = objectstore.label(path)
                texts_before, first_problem = summary["texts"], None
                for number, record, error in reader:
                    if on_record:
                        on_record()
                    where = f"{where_word} {number}" if number >= 0 else "end"
                    if error is None:
                        summary["records"] += 1
                        try:
                            ref_id, text, text_sha = _record_row(record, text_field, id_field,
                                                                 f"{objectstore.name_of(path)}:{number}")
                        except ValueError as exc:
                            error = str(exc)
                    if error is not None:
                        problem(InputProblem(label, where, error))
                        first_problem = first_problem or f"{where}: {error}"
                        continue
                    digest.update(json.dumps([ref_id, text_sha]).encode() + b"\n")
                    rows.append({"reference": name, "ref_id": ref_id, "text": text, "text_sha256": text_sha,
                                 "source_file": label, "source_line": number, "added_at": added_at})
                    summary["texts"] += 1
                    pending_bytes += len(text)
                    if len(rows) >= chunk_rows or pending_bytes >= CHUNK_BYTES:
                        flush()
                if summary["texts"] == texts_before:
                    why = f"the first bad one: {first_problem}" if first_problem else "the file holds no records"
                    raise ReferenceSetError(f"{label}: no usable records ({why}); each record needs a non-empty "
                                            f"string {text_field!r} (--text-field names another field); "
                                            f"nothing was stored")
            flush()
        except BaseException:
            _discard(store, written)  # never committed: invisible anyway; gone now rather than at the next run
            raise
        content = digest.hexdigest()
        summary.update(content_sha256=content, files=len(written), replaced_files=len(old))
        summary["unchanged"] = bool(old) and all(e.meta.get("content_sha256") == content for e in old)
        if summary["unchanged"]:
            _discard(store, written)
            summary.update(files=len(old), replaced_files=0, run_id=old[0].meta.get("run_id"))
        else:
            meta = {"reference": name, "content_sha256": content, "run_id": run.run_id,
                    "added_at": added_at.isoformat()}
            run.commit(add=[dataclasses.replace(e, meta=meta) for e in written], remove=[e.path for e in old])
        run.stats = {**summary, "first_problems": [str(p) for p in summary["first_problems"]]}
        run.finish("partial" if summary["problems"] else "succeeded")
    return summary


def _discard(store: Store, entries: list[FileEntry]) -> None:
    for entry in entries:
        (store.root / entry.path).unlink(missing_ok=True)


# ----- removing -----------------------------------------------------------------------------------
def remove_reference(store: Store, name: str) -> dict:
    """Take reference set ``name`` out of the live set (one commit); {reference, run_id, texts, files}."""
    check_name(name)
    if name not in _entries_by_name(store.snapshot()):  # a mistake, not a failed run: said before the lock
        raise _unknown(name, store.snapshot())
    with store.run("reference", config={"action": "remove", "reference": name}, serial="reference") as run:
        snapshot = store.snapshot()
        entries = _entries_by_name(snapshot).get(name)
        if not entries:  # removed by another run meanwhile
            raise _unknown(name, snapshot)
        run.commit(remove=[e.path for e in entries])
        run.stats = {"reference": name, "texts": sum(e.rows for e in entries), "files": len(entries)}
        return {**run.stats, "run_id": run.run_id}
