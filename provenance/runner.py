"""The tag runner: detectors over the store's documents, tags written beside them.

Two layers:

* Pure functions over Arrow batches, with no store and no I/O:
  ``finalize_tags`` turns a detector's output into validated rows of the tags
  schema, and ``TagBatchFn`` runs one per-document detector over one batch.
  A distributed engine (Ray Data's ``map_batches``) calls these directly.
* ``run_tag``, the local driver: plans what is left to do from the store's
  coverage records, streams document files batch by batch (reading only the
  columns the detectors with work in that file need), feeds each detector
  through an isolated worker (time budget, memory limit), and commits tags,
  errors and coverage every ``[tag] commit_rows`` document rows or
  ``commit_seconds`` (and at the end of each file). A kill loses at most that
  much; Ctrl-C loses only the calls in flight; a rerun skips everything
  already covered for the same detector version, plugin version and options.
  A corpus detector's tags are committed once ``finish`` has seen the whole
  corpus; its parts are written to disk as they stream in, under
  ``[tag] finish_budget_s``. A state-keeping corpus detector's state rows are
  committed like per-document tags (bounded commits, own coverage), so a new
  crawl observes only the new documents, and ``finish`` reads the stored state.

Coverage records (in the store's commit log) say what a detector has seen:
  per-document: {"detector", "tag_key", "doc_file", "ranges": [[start, end], ...]}
  state rows:   {"detector", "state_key", "doc_file", "ranges": [[start, end], ...]}
  corpus-level: {"detector", "tag_key", "corpus": true, "doc_files": [...],
                 and for state-keeping detectors "state_files": [...], "references": {name: content sha256},
                 and with reads_fetches (or a need of "previous") "fetch_files": [...]}
  version chain: {"detector", "tag_key", "chain": true, "capture_files": [...]} (per-document detectors that
                 need "previous": the document and fetches files whose captures their tags reflect)

Version chains. A per-document detector that needs "previous" reads, per document, the version of its URL just
before the document's earliest capture. A capture that arrives later (a WARC of last year imported after this
week's crawl, or its re-capture of stored bytes: a fetches row) can change that for documents already tagged,
so their row coverage is not enough: the chain record names the capture files (documents and fetches) the tags
reflect. When the store holds capture files it does not name, ``retag_plan`` takes the captures in them and
finds, in the current chain (``versions_sql``), each one's version: a document's previous_* can only have
changed if a new capture starts its first version (it moved the document's earliest capture, or it is that
version) or ends the version just before it (a new version, or a later last capture, before the document). A
capture inside a version, or ending the newest one (a re-crawl that found a page unchanged), changes no
document's previous. Those documents, in covered rows, are tagged again, and in one commit their new tags go
live, every older tag of theirs under the same tag key leaves (the tag files holding them are rewritten without
them) and the chain record names the run's capture files. A rerun with no new capture file does nothing; a file
merged by ``store compact`` counts as new (more work, never a wrong tag); a store tagged before chain records
existed is re-checked once as if every capture were new.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from provenance import config as config_mod
from provenance import schemas
from provenance.detectors import SPECIAL_NEEDS, CorpusState, DetectorError, InvalidOutput, output_to_table
from provenance.isolation import Reply, WorkerStartError, make_worker
from provenance.pluginmanager import DetectorSpec, ProvenancePluginManager
from provenance.references import reference_sets, reference_versions
from provenance.store import FileEntry, Run, Snapshot, Store, safe_name, utcnow


class TagRunError(Exception):
    """A tag run that cannot start (unknown detector, bad options, ...)."""


# ----- identity of one detector configuration -------------------------------------------------
@dataclass(frozen=True)
class DetectorRun:
    """A detector class with its validated options: what one set of stored tags was made by."""

    spec: DetectorSpec
    options: dict

    @property
    def name(self) -> str:
        return self.spec.cls.name

    @property
    def config_hash(self) -> str:
        return self.spec.cls.config_hash(self.options)

    @property
    def tag_key(self) -> str:
        """Changes whenever the detector version, plugin version or options change: then we re-tag."""
        return safe_name(f"v{self.spec.cls.version}-p{self.spec.plugin.version}-{self.config_hash}")

    @property
    def keeps_state(self) -> bool:
        return self.spec.cls.corpus_level and bool(getattr(self.spec.cls, "keeps_state", False))

    @property
    def state_key(self) -> str | None:
        """Names the detector's stored state rows (state-keeping corpus detectors only)."""
        return safe_name(self.spec.cls.state_key(self.options)) if self.keeps_state else None

    @property
    def columns(self) -> list[str]:
        cols = {"doc_id"}
        for need in self.spec.cls.needs:
            cols.update(["previous_doc_id"] if need in SPECIAL_NEEDS else [need])
        return sorted(cols)

    def describe(self) -> dict:
        cls, plugin = self.spec.cls, self.spec.plugin
        return {"detector": cls.name, "detector_version": cls.version, "category": cls.category,
                "plugin": plugin.name, "plugin_version": plugin.version, "distribution": plugin.distribution,
                "config_hash": self.config_hash, "options": self.options, "tag_key": self.tag_key,
                "corpus_level": cls.corpus_level, "state_key": self.state_key}


# ----- pure batch functions -------------------------------------------------------------------
def finalize_tags(output: pa.Table, drun: DetectorRun, run_id: str, created_at=None,
                  allowed_doc_ids: pa.Array | None = None) -> pa.Table:
    """Detector output -> rows of the tags schema, stamped with who made them.

    Raises InvalidOutput (a DetectorError) when the rows break the tags schema
    (unknown column, wrong type, null where a value is required, score outside
    [0, 1]) or tag a doc_id that is not in ``allowed_doc_ids``. Vectorised: no
    per-row Python.
    """
    n = output.num_rows
    cls, plugin = drun.spec.cls, drun.spec.plugin
    try:
        doc_ids = output.column("doc_id")
        if not doc_ids.type.equals(pa.string()):
            doc_ids = doc_ids.cast(pa.string())
        if allowed_doc_ids is not None:
            _check_doc_ids(doc_ids, allowed_doc_ids, cls.name, "the batch it was given")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidOutput(f"detector {cls.name}: tags.doc_id: {exc}") from None
    created_at = created_at or utcnow()

    def const(value, type_=pa.string()):
        return pa.repeat(pa.scalar(value, type_), n)

    try:
        columns = {
            "doc_id": doc_ids,
            "plugin": const(plugin.name), "plugin_version": const(plugin.version),
            "detector": const(cls.name), "detector_version": const(cls.version),
            "category": (pc.fill_null(output.column("category").cast(pa.string()), cls.category)
                         if "category" in output.column_names else const(cls.category)),
            "tag": output.column("tag"),
            "score": output.column("score") if "score" in output.column_names else const(None, pa.float64()),
            "evidence": output.column("evidence") if "evidence" in output.column_names else const(None),
            "run_id": const(run_id), "config_hash": const(drun.config_hash),
            "created_at": const(created_at, pa.timestamp("us", tz="UTC")),
        }
        return schemas.conform(pa.table(columns), "tags")
    except schemas.SchemaError as exc:
        raise InvalidOutput(f"detector {cls.name}: {exc}") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidOutput(f"detector {cls.name}: {exc}") from None


def _check_doc_ids(doc_ids, allowed, detector: str, what: str) -> None:
    """Raise InvalidOutput when a tag names a doc_id outside ``allowed`` (one hash lookup per row)."""
    if not len(doc_ids):
        return
    unknown = pc.invert(pc.fill_null(pc.is_in(doc_ids, value_set=allowed), False))
    if pc.any(unknown).as_py():
        bad = doc_ids.filter(unknown)[0].as_py()
        raise InvalidOutput(f"detector {detector}: tagged doc_id {bad!r}, which is not in {what}")


def ranged_output(drun: DetectorRun, op: str, value, part: pa.RecordBatch, run_id: str) -> pa.Table | None:
    """What a ranged call returned, checked against the batch it was given: op "tag": rows of the tags schema
    (``finalize_tags``); op "observe": state rows (or None) naming only documents of the batch. Raises
    InvalidOutput (a DetectorError)."""
    if op == "tag":
        return finalize_tags(value, drun, run_id, allowed_doc_ids=part.column("doc_id"))
    if value is not None:
        _check_doc_ids(value.column("doc_id"), part.column("doc_id"), drun.name, "the batch it observed")
    return value


class TagBatchFn:
    """Run one per-document detector over one batch: a pure callable, picklable for Ray Data.

    ``ray.data.read_parquet(files).map_batches(TagBatchFn, fn_constructor_args=(drun, run_id),
    batch_format="pyarrow")`` yields tag tables identical to the local runner's.
    """

    def __init__(self, drun: DetectorRun, run_id: str):
        if drun.spec.cls.corpus_level:
            raise TypeError(f"{drun.name} is corpus-level: drive it with observe()/finish()")
        self.drun, self.run_id = drun, run_id
        self.detector = drun.spec.cls(**drun.options)

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        if isinstance(batch, pa.Table):
            batches = batch.combine_chunks().to_batches()
            batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=batch.schema)
        out = output_to_table(self.detector.tag_batch(batch), self.detector)
        return finalize_tags(out, self.drun, self.run_id, allowed_doc_ids=batch.column("doc_id"))


# ----- planning -------------------------------------------------------------------------------
def select_detectors(pm: ProvenancePluginManager, settings: dict, enable: list[str] | None = None,
                     disable: list[str] | None = None) -> list[DetectorRun]:
    """The detectors to run: all (opt-in ones only with a [detectors.<name>] table), or those named (by
    detector or plugin name), minus the disabled."""
    specs = pm.detectors()
    config_mod.check_detector_tables(settings, specs)  # a [detectors.<typo>] table would silently do nothing
    tag_settings = config_mod.section("tag", settings.get("tag"))
    enable = enable if enable is not None else tag_settings.get("enable")
    disable = list(disable or []) + list(tag_settings.get("disable") or [])
    plugin_names = {s.plugin.name for s in specs.values()}

    def matches(spec: DetectorSpec, names) -> bool:
        return spec.name in names or spec.plugin.name in names

    for name in list(enable or []) + disable:
        if name not in specs and name not in plugin_names:
            raise TagRunError(f"no detector or plugin named {name!r}; available detectors: "
                              f"{', '.join(specs) or 'none'}")
    configured = settings.get("detectors", {})

    def wanted(spec: DetectorSpec) -> bool:
        if enable is not None:
            return matches(spec, enable)
        # "all" means every detector that can run as installed; an opt-in one waits for its own table
        return not spec.cls.opt_in or spec.name in configured

    chosen = [s for s in specs.values() if wanted(s) and not matches(s, disable)]
    runs = []
    where = settings.get("_path") or "provenance.toml"
    for spec in chosen:
        options = settings.get("detectors", {}).get(spec.name, {})
        if not isinstance(options, dict):
            raise TagRunError(f"{where}: [detectors.{spec.name}] must be a table of options")
        try:
            runs.append(DetectorRun(spec, spec.cls.validate_options(dict(options))))
        except DetectorError as exc:
            raise TagRunError(f"{where}: [detectors.{spec.name}]: {exc}") from None
        except Exception as exc:  # a plugin's own validate_options raising something else
            raise TagRunError(f"{where}: [detectors.{spec.name}]: detector {spec.name} (plugin "
                              f"{spec.plugin.name}) refused its options: {type(exc).__name__}: {exc}") from None
    return runs


def _merge_ranges(ranges: list[list[int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(map(tuple, ranges)):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _subtract(total: tuple[int, int], covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    todo, cursor = [], total[0]
    for start, end in covered:
        if start > cursor:
            todo.append((cursor, min(start, total[1])))
        cursor = max(cursor, end)
    if cursor < total[1]:
        todo.append((cursor, total[1]))
    return [r for r in todo if r[0] < r[1]]


def pending_ranges(snapshot: Snapshot, drun: DetectorRun) -> dict[str, list[tuple[int, int]]]:
    """Per document file, the row ranges not yet covered: tagged by a per-document detector configuration,
    or observed into the stored state of a state-keeping corpus detector."""
    key, value = ("state_key", drun.state_key) if drun.keeps_state else ("tag_key", drun.tag_key)
    covered: dict[str, list] = defaultdict(list)
    for c in snapshot.coverage:
        if c["detector"] == drun.name and c.get(key) == value and "doc_file" in c:
            covered[c["doc_file"]].extend(c["ranges"])
    todo = {}
    for entry in snapshot.entries("documents"):
        left = _subtract((0, entry.rows), _merge_ranges(covered.get(entry.path, [])))
        if left:
            todo[entry.path] = left
    return todo


def state_files(snapshot: Snapshot, drun: DetectorRun, current: bool = True) -> list[str]:
    """The live state files of a state-keeping detector: of its current state key, or (current=False) of others."""
    return [e.path for e in snapshot.entries("state") if e.meta.get("detector") == drun.name
            and (e.meta.get("state_key") == drun.state_key) == current]


def _corpus_record(snapshot: Snapshot, drun: DetectorRun) -> dict:
    """What a corpus detector's finish covers now; it is up to date when its last record says the same."""
    record = {"detector": drun.name, "tag_key": drun.tag_key, "corpus": True,
              "doc_files": sorted(e.path for e in snapshot.entries("documents"))}
    if drun.keeps_state:
        record["state_files"] = sorted(state_files(snapshot, drun))
        record["references"] = reference_versions(snapshot)  # name -> content hash: a re-added set is new
    if (drun.keeps_state and getattr(drun.spec.cls, "reads_fetches", False)) or "previous" in drun.spec.cls.needs:
        # a re-capture of a known page adds only fetches (and can change the previous_* a stateless one observes)
        record["fetch_files"] = sorted(e.path for e in snapshot.entries("fetches"))
    return record


def _last_corpus_record(snapshot: Snapshot, drun: DetectorRun) -> dict | None:
    records = [c for c in snapshot.coverage if c["detector"] == drun.name and c.get("corpus")
               and c.get("tag_key") == drun.tag_key]
    return records[-1] if records else None


def corpus_up_to_date(snapshot: Snapshot, drun: DetectorRun) -> bool:
    if drun.keeps_state and pending_ranges(snapshot, drun):
        return False
    return _last_corpus_record(snapshot, drun) == _corpus_record(snapshot, drun)


def needs_chain(drun: DetectorRun) -> bool:
    """A per-document detector that reads the version chain (the "previous" need): see "Version chains" above."""
    return not drun.spec.cls.corpus_level and "previous" in drun.spec.cls.needs


def chain_record(snapshot: Snapshot, drun: DetectorRun) -> dict:
    """The capture files (documents and fetches) whose captures the detector's tags reflect once this run is done."""
    return {"detector": drun.name, "tag_key": drun.tag_key, "chain": True,
            "capture_files": sorted(e.path for e in snapshot.entries("documents") + snapshot.entries("fetches"))}


def _last_chain_record(snapshot: Snapshot, drun: DetectorRun) -> dict | None:
    records = [c for c in snapshot.coverage if c["detector"] == drun.name and c.get("chain")
               and c.get("tag_key") == drun.tag_key]
    return records[-1] if records else None


CHAIN_AFFECTED_SQL = """
WITH v AS ({chain}),
n AS ({new_captures}),
hit AS (
    SELECT DISTINCT v.url_key, v.version, n.fetched_at = v.fetched_at AS at_start, n.fetched_at = v.last_fetched_at
           AS at_end
    FROM v JOIN n ON n.doc_id = v.doc_id AND n.fetched_at BETWEEN v.fetched_at AND v.last_fetched_at
    WHERE v.version IS NOT NULL
)
SELECT DISTINCT v.doc_id FROM v JOIN hit h ON v.url_key = h.url_key
    AND ((v.version = h.version AND h.at_start) OR (v.version = h.version + 1 AND h.at_end))
WHERE NOT v.seen_before
"""


def retag_plan(snapshot: Snapshot, drun: DetectorRun, pending: dict[str, list[tuple[int, int]]]
               ) -> tuple[dict, dict[str, list[int]]] | None:
    """For a detector that needs "previous": None when its tags reflect every capture file of ``snapshot``; else
    (the chain record to commit once done, {document file: covered rows to tag again}), rows outside ``pending``
    (those are tagged anyway) of the documents whose previous version new captures may have changed."""
    import duckdb

    from provenance.sql import captures_sql, sql_list, versions_sql

    record = chain_record(snapshot, drun)
    last = _last_chain_record(snapshot, drun)
    if last is not None and last["capture_files"] == record["capture_files"]:
        return None
    covered = any(c["detector"] == drun.name and c.get("tag_key") == drun.tag_key and "doc_file" in c
                  for c in snapshot.coverage)
    known = set(last["capture_files"]) if last else set()
    new = [p for p in record["capture_files"] if p not in known]
    new_docs = [snapshot.root / p for p in new if snapshot.files[p].kind == "documents"]
    new_fetches = [snapshot.root / p for p in new if snapshot.files[p].kind == "fetches"]
    doc_paths, fetch_paths = snapshot.paths("documents"), snapshot.paths("fetches")
    if not covered or not (new_docs or new_fetches) or not doc_paths:
        return record, {}
    parts = [f"SELECT doc_id, fetched_at FROM read_parquet({sql_list(new_docs)}, union_by_name = true) "
             "WHERE fetched_at IS NOT NULL"] if new_docs else []
    if new_fetches:
        parts.append(captures_sql(f"read_parquet({sql_list(new_fetches)}, union_by_name = true)"))
    fetches = captures_sql(f"read_parquet({sql_list(fetch_paths)}, union_by_name = true)") if fetch_paths else None
    docs = f"read_parquet({sql_list(doc_paths)}, union_by_name = true, filename = true, file_row_number = true)"
    chain = versions_sql(f"(SELECT doc_id, url, fetched_at, text_sha256 FROM {docs})", (), fetches)
    con = duckdb.connect()
    try:
        affected = CHAIN_AFFECTED_SQL.format(chain=chain, new_captures=" UNION ".join(parts))
        con.execute(f"CREATE TABLE affected AS {affected}")
        located = con.execute(f"SELECT filename, file_row_number FROM {docs} WHERE doc_id IN "
                              "(SELECT doc_id FROM affected) ORDER BY filename, file_row_number").fetchall()
    finally:
        con.close()
    by_path = {str(snapshot.root / e.path): e.path for e in snapshot.entries("documents")}
    rows: dict[str, list[int]] = defaultdict(list)
    for filename, row in located:
        path = by_path[filename]
        if not any(start <= row < end for start, end in pending.get(path, ())):
            rows[path].append(row)
    return record, dict(rows)


def superseded_files(snapshot: Snapshot, drun: DetectorRun, keep_current: bool) -> list[str]:
    """Tag files of this detector made under another configuration (or all, for a corpus rerun)."""
    return [e.path for e in snapshot.entries("tags") if e.meta.get("detector") == drun.name
            and (not keep_current or e.meta.get("tag_key") != drun.tag_key)]


# ----- the local driver -----------------------------------------------------------------------
@dataclass
class DetectorStats:
    """What one detector did in one run.

    status   up_to_date (nothing to do) | ok | partial (some batches failed) |
             stopped (timed out, crashed or failed to start: the rest is left for the next run)
    rows     documents it tagged successfully in this run
    pending  documents still to do for this configuration (a rerun does them)
    """

    status: str = "up_to_date"
    rows: int = 0
    batches: int = 0
    tags: int = 0
    errors: int = 0
    pending: int = 0
    seconds: float = 0.0
    faults: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"status": self.status, "rows": self.rows, "batches": self.batches, "tags": self.tags,
                "errors": self.errors, "pending": self.pending, "seconds": round(self.seconds, 3),
                "faults": self.faults[:20]}


@dataclass
class TagSummary:
    run_id: str
    detectors: dict[str, DetectorStats]
    descriptions: dict[str, dict]
    engine: dict = field(default_factory=dict)  # what a non-local engine reports (ray: where the work ran)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.detectors.values())

    @property
    def tags(self) -> int:
        return sum(s.tags for s in self.detectors.values())

    def to_json(self) -> dict:
        out = {"run_id": self.run_id, "errors": self.errors, "tags": self.tags,
               "detectors": {n: {**self.descriptions[n], **s.to_json()} for n, s in self.detectors.items()}}
        if self.engine:
            out["engine"] = self.engine
        return out


PREVIOUS_MEMORY_MB = 512  # DuckDB's memory for ordering every capture by URL and time (PreviousLookup)


class PreviousLookup:
    """Adds previous_* columns (the earlier version of the same URL) for detectors that need "previous".

    The earlier version is the one the ``versions`` view names (provenance.sql.versions_sql) for the document's
    first version: the version of the same URL just before the document's earliest capture, every capture (a
    document row or a fetch row that saw stored bytes: ``fetch_paths``) at its own time, whatever the source or
    the order of import. previous_fetched_at is that version's last capture before this document appeared (not
    its stored fetched_at, which an older capture of the same bytes imported later leaves behind). Built once
    per run: DuckDB orders every capture and keeps, per document that has an earlier version, where that
    version lives (file, row), in DuckDB's own memory, not in Python. That memory is bounded by ``memory_mb``
    (PREVIOUS_MEMORY_MB): beyond it the ordering spills to ``spill_dir`` (a temporary directory when None,
    deleted by ``close``). Unbounded, DuckDB takes up to 80% of the machine's memory before it spills: the
    ordering of 1M documents (none of them with an earlier version) peaked at 1.4 GB. ``add`` then
    joins one batch: it reads from Parquet only the rows of that batch's earlier versions (DuckDB skips the row
    groups it does not need), so memory is bounded by the batch, not the corpus.

    ``add`` appends the columns of COLUMNS under their names, except previous_doc_id, which it appends as
    PREVIOUS_DOC_ID: a batch may also hold the stored previous_doc_id column (the crawl's link), read for a
    detector that names it as an ordinary need. ``columns_for`` gives each detector what it asked for.
    """

    COLUMNS = tuple((name, name.removeprefix("previous_")) for name in SPECIAL_NEEDS["previous"])
    PREVIOUS_DOC_ID = "__previous_doc_id"

    def __init__(self, doc_paths, fetch_paths=(), filesystem=None, spill_dir=None, memory_mb: int = 0):
        import tempfile

        import duckdb

        from provenance.sql import captures_sql, sql_list, sql_string, versions_sql

        # a temporary directory when none is given: removed by close, or at exit (a Ray actor never closes it)
        self._own = None if spill_dir else tempfile.TemporaryDirectory(prefix="provenance-previous-")
        self._own_spill = self._own.name if self._own else None
        self.con = duckdb.connect()
        if filesystem is not None:  # paths are s3:// URIs of staged files (ray --stage): DuckDB reads them through it
            self.con.register_filesystem(filesystem)
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute(f"SET temp_directory = {sql_string(str(spill_dir or self._own_spill))}")
        self.con.execute(f"SET memory_limit = '{int(memory_mb or PREVIOUS_MEMORY_MB)}MB'")
        self._fields = schemas.load("documents").arrow
        paths = [str(p) for p in doc_paths]
        if not paths:
            self.con.execute("CREATE TABLE prev (doc_id VARCHAR, prev_file VARCHAR, prev_row BIGINT, "
                             "prev_at TIMESTAMPTZ)")
            return
        files = f"read_parquet({sql_list(paths)}, filename=true, file_row_number=true, union_by_name=true)"
        fetches = [str(p) for p in fetch_paths]
        captures = captures_sql(f"read_parquet({sql_list(fetches)}, union_by_name=true)") if fetches else None
        chain = versions_sql(f"(SELECT doc_id, url, fetched_at, text_sha256, filename, file_row_number FROM {files})",
                             ("filename", "file_row_number"), captures)
        # A document's first version: where its bytes first appeared at the URL (a later return to them, A B A,
        # is no new document; transient_edit reads that).
        self.con.execute(f"CREATE TABLE prev AS SELECT doc_id, previous_filename AS prev_file, "
                         f"previous_file_row_number AS prev_row, previous_fetched_at AS prev_at FROM ({chain}) "
                         f"WHERE previous_doc_id IS NOT NULL AND NOT seen_before")

    def _previous_rows(self, doc_ids: pa.Array) -> pa.Table:
        """(doc_id, then the documents columns of COLUMNS) of the earlier versions of ``doc_ids``."""
        from provenance.sql import sql_string

        con = self.con
        con.register("_batch", pa.table({"doc_id": doc_ids}))
        try:
            want = con.sql("SELECT b.doc_id, p.prev_file, p.prev_row, p.prev_at FROM _batch b "
                           "JOIN prev p USING (doc_id)").to_arrow_table()
        finally:
            con.unregister("_batch")
        # previous_fetched_at: the chain's time of the earlier capture, not the stored row's
        cols = ", ".join("w.prev_at" if name == "previous_fetched_at" else f"d.{c}" for name, c in self.COLUMNS)
        parts = []
        if want.num_rows:
            con.register("_want", want)
            try:
                # One scan per file holding earlier versions; the join's row numbers prune its row groups.
                for path in pc.unique(want.column("prev_file")).to_pylist():
                    parts.append(con.sql(
                        f"SELECT w.doc_id AS doc_id, {cols} FROM (SELECT * FROM _want WHERE prev_file = "
                        f"{sql_string(path)}) w JOIN read_parquet({sql_string(path)}, file_row_number=true) d "
                        f"ON d.file_row_number = w.prev_row").to_arrow_table())
            finally:
                con.unregister("_want")
        schema = pa.schema([pa.field("doc_id", pa.string())] + [
            pa.field(name, self._fields.field(c).type) for name, c in self.COLUMNS])
        return pa.concat_tables([t.rename_columns(schema.names).cast(schema) for t in parts]) if parts \
            else schema.empty_table()

    def add(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        found = self._previous_rows(batch.column("doc_id"))
        index = pc.index_in(batch.column("doc_id"), value_set=found.column("doc_id"))
        found = found.take(index)
        # The batch's own fields keep their schema (nullability included): a detector that concatenates the
        # batches of one run gets one schema, whether or not a file was read with previous_* columns.
        schema, arrays = batch.schema, list(batch.columns)
        for name, _ in self.COLUMNS:
            array = found.column(name).combine_chunks()
            schema = schema.append(pa.field(self.PREVIOUS_DOC_ID if name == "previous_doc_id" else name, array.type))
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    @classmethod
    def columns_for(cls, drun: DetectorRun, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The part of ``batch`` a detector gets: doc_id plus its needs; "previous" as the previous_* columns
        (previous_doc_id in its sorted place, the others after)."""
        if "previous" not in drun.spec.cls.needs or cls.PREVIOUS_DOC_ID not in batch.schema.names:
            return batch.select(drun.columns)
        names = [cls.PREVIOUS_DOC_ID if c == "previous_doc_id" else c for c in drun.columns]
        names += [n for n, _ in cls.COLUMNS if n != "previous_doc_id"]
        return batch.select(names).rename_columns([c.replace(cls.PREVIOUS_DOC_ID, "previous_doc_id") for c in names])

    def close(self) -> None:
        self.con.close()
        if self._own is not None:
            self._own.cleanup()


def _iter_batches(path, columns: list[str], batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    offset = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
        yield offset, batch
        offset += batch.num_rows


def _split(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into at most ``parts`` contiguous, non-empty, nearly equal ranges."""
    parts = max(1, min(parts, hi - lo))
    bounds = [lo + (hi - lo) * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _slice_pending(batch: pa.RecordBatch, start: int, ranges: list[tuple[int, int]]):
    """The parts of a batch (rows start..start+len) that fall in ``ranges``, as (start, end, slice)."""
    end = start + batch.num_rows
    for r_start, r_end in ranges:
        lo, hi = max(start, r_start), min(end, r_end)
        if lo < hi:
            yield lo, hi, batch.slice(lo - start, hi - lo)


def _trace(message: str) -> None:
    """With PROVENANCE_TRACE_PLUGINS set: one line per file read and per detector call, on stderr."""
    if os.environ.get("PROVENANCE_TRACE_PLUGINS"):
        print(f"[trace] {message}", file=sys.stderr, flush=True)


def _error_row(run_id: str, drun: DetectorRun, reply: Reply, doc_file=None, start=None, end=None) -> dict:
    return {"run_id": run_id, "plugin": drun.spec.plugin.name, "plugin_version": drun.spec.plugin.version,
            "detector": drun.name, "detector_version": drun.spec.cls.version, "doc_file": doc_file,
            "batch_start": start, "batch_end": end, "kind": reply.kind, "message": reply.message,
            "traceback": reply.traceback, "created_at": utcnow()}


@dataclass(frozen=True)
class TagSettings:
    """The [tag] settings one run works with, checked (see provenance.config for their meaning)."""

    batch_size: int = 1000
    time_budget_s: float = 300.0
    isolation: str = "process"
    commit_rows: int = 10_000  # document rows read between commits: what a kill can lose (0: per file only)
    commit_seconds: float = 60.0  # ... or seconds between commits (0: no time limit)
    worker_memory_mb: int = 4096  # what a detector's worker may allocate (0: unlimited)
    finish_budget_s: float = 3600.0  # a corpus detector's finish(), all its parts together
    workers: int = 1  # worker processes per per-document or state-keeping detector, each given part of a batch
    engine: str = "local"  # local (this machine's worker processes) | ray (Ray Data, provenance.ray_engine)
    ray_address: str | None = None  # engine ray: the cluster to join (None: start a local one)
    ray_stage: str | None = None  # engine ray: s3:// prefix the document files are copied to for the workers

    @classmethod
    def from_settings(cls, tag: dict | None) -> TagSettings:
        """Typed and bounded by the one settings model (provenance.config), as if read from provenance.toml."""
        checked = config_mod.section("tag", tag)
        return cls(**{name: checked[name] for name in cls.__dataclass_fields__})

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size, "time_budget_s": self.time_budget_s, "isolation": self.isolation,
                "commit_rows": self.commit_rows, "commit_seconds": self.commit_seconds,
                "worker_memory_mb": self.worker_memory_mb, "finish_budget_s": self.finish_budget_s,
                "workers": self.workers, "engine": self.engine, "ray_address": self.ray_address,
                "ray_stage": None if self.ray_stage is None else _stage_label(self.ray_stage)}


def _stage_label(uri: str) -> str:
    """The stage as a run records it: no endpoint query (configuration, not provenance)."""
    return uri.split("?", 1)[0]


def run_tag(store: Store, pm: ProvenancePluginManager, settings: dict, enable: list[str] | None = None,
            disable: list[str] | None = None, progress: Callable[[int], None] | None = None,
            on_total: Callable[[int], None] | None = None, run_id: str | None = None) -> TagSummary:
    """Run the selected detectors over every document they have not yet covered.

    ``settings`` is the effective configuration (provenance.config.load()):
    [tag] batch_size, time_budget_s, isolation, commit_rows, commit_seconds,
    worker_memory_mb, enable, disable and [detectors.<name>] options. Faults
    never raise: they become rows of the errors view and entries in the summary.
    """
    tag = TagSettings.from_settings(settings.get("tag"))
    druns = select_detectors(pm, settings, enable, disable)
    config = {"detectors": [d.describe() for d in druns], **tag.to_json()}
    tag_pass = _TagPass
    if tag.engine == "ray":
        from provenance import ray_engine

        ray_engine.require_ray()  # before the store is locked; the cluster is joined only when there is work
        if tag.ray_stage:  # a bad URI, a missing bucket, refused credentials: one line before the lock
            ray_engine.check_stage(tag.ray_stage)
        tag_pass = ray_engine.RayTagPass
    # Serial: two tag runs at once would plan and do the same work. Crawls and ingests may commit meanwhile.
    with store.run("tag", config=config, run_id=run_id, serial="tag") as run:
        summary = tag_pass(store, run, druns, tag, progress, on_total).execute()
        run.stats = summary.to_json()
        run.finish("partial" if summary.errors else "succeeded")
    return summary


def _fault(stat: DetectorStats, kind: str, message: str, where: str | None = None) -> None:
    stat.errors += 1
    stat.faults.append({"kind": kind, "message": message, "where": where})


class _Uncommitted:
    """Work done on one document file since its last commit: tags with the rows they cover, and errors.

    Each finished call is appended as one (lo, hi, tags) item, so an interrupt
    can never separate tags from the coverage that says they exist.
    """

    def __init__(self):
        self.done: dict[str, list[tuple[int, int, pa.Table]]] = defaultdict(list)
        self.errors: list[dict] = []
        self.rows = 0  # document rows read since the last commit
        self.since = time.monotonic()

    def take(self) -> _Uncommitted:
        """Hand over everything and start empty (so a commit interrupted half-way never commits twice)."""
        taken = _Uncommitted()
        taken.done, taken.errors = self.done, self.errors
        self.done, self.errors = defaultdict(list), []
        self.rows, self.since = 0, time.monotonic()
        return taken

    def due(self, tag: TagSettings) -> bool:
        return bool((tag.commit_rows and self.rows >= tag.commit_rows) or
                    (tag.commit_seconds and time.monotonic() - self.since >= tag.commit_seconds))


class _TagPass:
    """One tag run over a store snapshot: plans, streams document files, commits every bounded amount of work.

    ``ranged`` holds the detectors that work through row ranges of document files with coverage of
    their own: per-document detectors (op "tag", output: tags) and state-keeping corpus detectors
    (op "observe", output: state rows). ``corpus`` holds stateless corpus detectors, which observe
    every row of every file in one pass. Both kinds of corpus detector then ``finish``.
    """

    def __init__(self, store: Store, run: Run, druns: list[DetectorRun], tag: TagSettings, progress, on_total):
        self.store, self.run, self.tag, self.progress, self.on_total = store, run, tag, progress, on_total
        self.druns = druns
        self.snapshot = store.snapshot()
        self.doc_entries = {e.path: e for e in self.snapshot.entries("documents")}
        self.stats = {d.name: DetectorStats() for d in druns}
        self.summary = TagSummary(run.run_id, self.stats, {d.name: d.describe() for d in druns})
        ranged = {d.name: (d, pending_ranges(self.snapshot, d)) for d in druns
                  if not d.spec.cls.corpus_level or d.keeps_state}
        self.ranged = {n: v for n, v in ranged.items() if v[1]}
        # Detectors that need "previous" and whose tags miss captures that arrived since (Version chains, above).
        self.retag = {d.name: (d, *plan) for d in druns if needs_chain(d)
                      and (plan := retag_plan(self.snapshot, d, ranged[d.name][1])) is not None}
        self.corpus = [d for d in druns if d.spec.cls.corpus_level and not d.keeps_state
                       and not corpus_up_to_date(self.snapshot, d)]
        self.stateful = [d for d in druns if d.keeps_state and not corpus_up_to_date(self.snapshot, d)]
        self.workers: dict[str, list] = {}  # detector -> its workers (ranged: [tag] workers of them; others: one)
        self.corpus_failed: set[str] = set()
        self._state_schema: dict[str, pa.Schema] = {}  # the first state rows' schema, per detector, this run
        self._previous: PreviousLookup | None = None
        self._doc_ids: pa.ChunkedArray | None = None

    def _per_document(self, name: str) -> bool:
        return not self.ranged[name][0].spec.cls.corpus_level

    # ----- the pass -------------------------------------------------------------------------
    def execute(self) -> TagSummary:
        run, stats = self.run, self.stats
        # Per-document detectors already complete under this configuration may still have old files to retire.
        _retire_superseded(run, self.snapshot, [d for d in self.druns
                                                if not d.spec.cls.corpus_level and d.name not in self.ranged])
        if not self.ranged and not self.corpus and not self.stateful and not self.retag:
            return self.summary
        todo_rows = {name: sum(e - s for ranges in todo.values() for s, e in ranges)
                     for name, (_, todo) in self.ranged.items()}
        todo_rows.update({d.name: sum(e.rows for e in self.doc_entries.values()) for d in self.corpus})
        for drun in [v[0] for v in self.ranged.values()] + self.corpus:
            stats[drun.name].status = "ok"
        start_errors = []
        for drun in self._local_detectors():
            start_errors += self._start_workers(drun, self.tag.workers if drun.name in self.ranged else 1)
        if start_errors:
            run.commit(add=[run.write("errors", pa.Table.from_pylist(start_errors), "")])
        try:
            files = [p for p in self.doc_entries
                     if self.corpus or any(p in todo for _, todo in self.ranged.values())]
            if self.on_total:
                self.on_total(sum(self.doc_entries[p].rows for p in files))
            self._tag_files(files)
            for name in self.retag:
                self._retag(name)
            for drun in self.corpus + self.stateful:
                self._finish_corpus(drun)
            finished = [drun for name, (drun, _todo) in self.ranged.items() if self._per_document(name)
                        and stats[name].status == "ok" and not stats[name].errors]
            if finished:  # one read of the log, now holding this run's commits, for all of them
                _retire_superseded(run, self.store.snapshot(), finished)
        finally:
            for workers in self.workers.values():
                for worker in workers:
                    worker.close()
            if self._previous is not None:
                self._previous.close()
                shutil.rmtree(self.store.root / "_tmp" / f"{self.run.run_id}-previous", ignore_errors=True)
        for name, s in stats.items():
            if s.status == "ok" and s.errors:
                s.status = "partial"
            if name in todo_rows:
                if name in self.ranged:
                    s.pending = max(0, todo_rows[name] - s.rows)
                else:
                    s.pending = 0 if s.status == "ok" else todo_rows[name]
        return self.summary

    def _local_detectors(self) -> list[DetectorRun]:
        """The detectors whose observe/tag calls run in this machine's workers (another engine takes the ranged)."""
        return [v[0] for v in self.ranged.values()] + self.corpus

    def _tag_files(self, files: list[str]) -> None:
        """Every document file through the detectors with a live worker here, one read of each file."""
        for path in files:
            self._tag_file(self.doc_entries[path])

    def _start_workers(self, drun: DetectorRun, count: int = 1, index: int | None = None) -> list[dict]:
        """Start ``count`` workers for the detector, or restart the one at ``index``; on failure the detector
        is stopped (all its workers): its error row."""
        stat = self.stats[drun.name]
        try:
            def start():
                return make_worker(self.tag.isolation, drun.spec.cls, drun.options,
                                   start_timeout=self.tag.time_budget_s, memory_limit_mb=self.tag.worker_memory_mb)
            if index is None:
                self.workers[drun.name] = []
                for _ in range(count):
                    self.workers[drun.name].append(start())
            else:
                self.workers[drun.name][index] = start()
            return []
        except WorkerStartError as exc:
            reply = exc.reply
            kind = "crashed" if reply.kind == "exception" else reply.kind
            _fault(stat, kind, str(exc), "start")
            stat.status = "stopped"
            for worker in self.workers.pop(drun.name, []):
                worker.close()
            _trace(f"{drun.name}: failed to start: {exc}")
            return [_error_row(self.run.run_id, drun, Reply(False, kind=kind, message=str(exc),
                                                              traceback=reply.traceback))]

    def _alive(self, name: str) -> bool:
        return any(w.alive for w in self.workers.get(name, []))

    def _stop(self, name: str) -> None:
        """A time-out or crash stops the detector for the run: all its workers."""
        for worker in self.workers.get(name, []):
            worker.close(kill=True)

    def _previous_lookup(self) -> PreviousLookup:
        """Built on first use: only a file read for a detector that needs "previous" pays for it."""
        if self._previous is None:
            spill = self.store.root / "_tmp" / f"{self.run.run_id}-previous"
            spill.mkdir(parents=True, exist_ok=True)
            self._previous = PreviousLookup(self.snapshot.paths("documents"), self.snapshot.paths("fetches"),
                                            spill_dir=spill)
        return self._previous

    def _tag_file(self, entry: FileEntry) -> None:
        todo = {n: r for n, (d, t) in self.ranged.items() if (r := t.get(entry.path)) and self._alive(n)}
        corpus = [d for d in self.corpus if self._alive(d.name) and d.name not in self.corpus_failed]
        # What this file is read for: the detectors that still have work in it, and nothing else.
        readers = [self.ranged[n][0] for n in todo] + corpus
        if not readers:
            return
        available = set(schemas.load("documents").names)
        read_cols = sorted({c for d in readers for c in d.columns if c in available})
        with_previous = any("previous" in d.spec.cls.needs for d in readers)
        previous = self._previous_lookup() if with_previous else None
        _trace(f"read {entry.path} columns={read_cols}")
        pending = _Uncommitted()
        try:
            for start, batch in _iter_batches(self.store.root / entry.path, read_cols, self.tag.batch_size):
                if previous is not None:
                    batch = previous.add(batch)
                self._tag_batch(entry, start, batch, todo, corpus, pending)
                pending.rows += batch.num_rows
                if self.progress:
                    self.progress(batch.num_rows)
                if pending.due(self.tag):
                    self._commit(entry, pending.take())
        except KeyboardInterrupt:
            # Ctrl-C: keep every call that finished (each item is output + its coverage), then stop.
            self._commit(entry, pending.take())
            raise
        self._commit(entry, pending.take())

    def _retag(self, name: str) -> None:
        """Tag again the covered documents whose previous version new captures changed; one commit replaces
        their older tags and records the capture files the detector's tags now reflect (Version chains)."""
        drun, record, rows_by_file = self.retag[name]
        run, stat, root = self.run, self.stats[name], self.store.root
        if not rows_by_file:  # what it tagged, in this run or before, reflects every capture of the plan
            run.commit(coverage=[record], drop_coverage=[{"detector": name, "kind": "chain"}])
            return
        if stat.status == "stopped":
            return  # timed out or crashed this run: the next run plans the same again
        stat.status = "ok" if stat.status == "up_to_date" else stat.status
        if not self._alive(name):  # nothing was pending for it (or another engine ran it): a worker here
            errors = self._start_workers(drun)
            if errors:
                run.commit(add=[run.write("errors", pa.Table.from_pylist(errors), "")])
                return
        worker = next(w for w in self.workers[name] if w.alive)
        previous = self._previous_lookup()
        available = set(schemas.load("documents").names)
        read_cols = sorted(c for c in drun.columns if c in available)
        written: list[FileEntry] = []
        retagged: list[pa.Array] = []
        for path, rows in rows_by_file.items():
            wanted = pa.array(rows, pa.int64())
            _trace(f"{name} retag {path}: {len(rows)} row(s)")
            for start, batch in _iter_batches(root / path, read_cols, self.tag.batch_size):
                local = pc.subtract(wanted.filter(pc.and_(pc.greater_equal(wanted, start),
                                                          pc.less(wanted, start + batch.num_rows))), start)
                if not len(local):
                    continue
                part = PreviousLookup.columns_for(drun, previous.add(batch.take(local)))
                worker.send("tag", part)
                reply = worker.receive(self.tag.time_budget_s)
                stat.seconds += reply.seconds
                out = None
                if reply.ok:
                    try:
                        out = ranged_output(drun, "tag", reply.value, part, run.run_id)
                    except DetectorError as exc:
                        reply = Reply(False, kind="invalid_output", message=str(exc), seconds=reply.seconds)
                if not reply.ok:  # nothing of the retag goes live; the next run plans it again
                    where = f"{path} (rows tagged again)"
                    _trace(f"{name} retag {where} -> {reply.kind}: {reply.message}")
                    _fault(stat, reply.kind, reply.message, where)
                    for entry in written:  # never committed: nothing names them
                        (root / entry.path).unlink(missing_ok=True)
                    run.commit(add=[run.write("errors", pa.Table.from_pylist(
                        [_error_row(run.run_id, drun, reply, path)]), "")])
                    return
                if out.num_rows:
                    written.append(run.write("tags", out, f"{safe_name(name)}/{drun.tag_key}",
                                             meta={"detector": name, "tag_key": drun.tag_key, "doc_file": path}))
                retagged.append(part.column("doc_id"))
                stat.rows += len(local)
                stat.batches += 1
                stat.tags += out.num_rows
        # Every older tag of those documents under this tag key leaves: the files holding some are rewritten.
        ids = pa.chunked_array(retagged, pa.string()).combine_chunks() if retagged else pa.array([], pa.string())
        add, remove = list(written), []
        fresh = {e.path for e in written}
        for entry in self.store.snapshot().entries("tags"):
            if entry.meta.get("detector") != name or entry.meta.get("tag_key") != drun.tag_key \
                    or entry.path in fresh:
                continue
            hit = pc.is_in(pq.read_table(root / entry.path, columns=["doc_id"]).column("doc_id"), value_set=ids)
            if not pc.any(hit).as_py():
                continue
            kept = pq.read_table(root / entry.path).filter(pc.invert(hit))
            remove.append(entry.path)
            if kept.num_rows:
                add.append(run.write("tags", kept, f"{safe_name(name)}/{drun.tag_key}", meta=entry.meta))
        _trace(f"{name} retag -> {stat.tags} tags for {len(ids)} documents, {len(remove)} tag file(s) rewritten")
        run.commit(add=add, remove=remove, coverage=[record], drop_coverage=[{"detector": name, "kind": "chain"}])

    def _tag_batch(self, entry: FileEntry, start: int, batch: pa.RecordBatch, todo, corpus,
                   pending: _Uncommitted) -> None:
        """One batch to every detector that wants it, in parallel; results into ``pending``.

        A ranged detector with several workers gets the batch split into one contiguous slice per live
        worker, so its workers run in parallel too.
        """
        run, stats = self.run, self.stats
        calls = []  # (drun, worker index, op, start, end, sliced) sent this round
        for name, ranges in todo.items():
            drun = self.ranged[name][0]
            live = [i for i, w in enumerate(self.workers.get(name, [])) if w.alive]
            op = "observe" if drun.keeps_state else "tag"
            for lo, hi, part in _slice_pending(batch, start, ranges):
                for index, (a, b) in zip(live, _split(lo, hi, len(live))):
                    piece = part.slice(a - lo, b - a)
                    calls.append((drun, index, op, a, b, PreviousLookup.columns_for(drun, piece)))
        for drun in corpus:
            if self._alive(drun.name) and drun.name not in self.corpus_failed:
                calls.append((drun, 0, "observe", start, start + batch.num_rows,
                              PreviousLookup.columns_for(drun, batch)))
        # Send to every worker first so that they run in parallel, then collect.
        for drun, index, op, lo, hi, part in calls:
            self.workers[drun.name][index].send(op, part)
        worker_gone: set[tuple[str, int]] = set()  # workers that ended this round: later calls got no answer
        for drun, index, op, lo, hi, part in calls:
            if (drun.name, index) in worker_gone or drun.name not in self.workers:
                continue  # left uncovered, for a later round or run; not a fault of its own
            stat = stats[drun.name]
            worker = self.workers[drun.name][index]
            reply = worker.receive(self.tag.time_budget_s)
            stat.seconds += reply.seconds
            where = f"{entry.path}[{lo}:{hi}]"
            if reply.ok and drun.name in self.ranged:
                reply = self._ranged_output(drun, op, reply, part, pending, lo, hi)
            if not reply.ok:
                _trace(f"{drun.name} {op} {where} -> {reply.kind}: {reply.message}")
                pending.errors.append(_error_row(run.run_id, drun, reply, entry.path, lo, hi))
                _fault(stat, reply.kind, reply.message, where)
                if not worker.alive:  # timed out, crashed or over its memory limit
                    worker_gone.add((drun.name, index))
                if reply.kind in ("timeout", "crashed"):
                    stat.status = "stopped"
                    self._stop(drun.name)
                    worker_gone.update((drun.name, i) for i in range(len(self.workers[drun.name])))
                if drun.name not in self.ranged:
                    self.corpus_failed.add(drun.name)
                continue
            if drun.name in self.ranged:
                out = pending.done[drun.name][-1][2]
                made = f"{0 if out is None else out.num_rows} {'tags' if op == 'tag' else 'state rows'}"
                _trace(f"{drun.name} {op} {where} -> {made} in {reply.seconds:.3f} s")
            else:
                _trace(f"{drun.name} {op} {where} -> ok in {reply.seconds:.3f} s")
            stat.batches += 1
            stat.rows += hi - lo
        # A detector that keeps nothing in its worker (per-document, or state-keeping: its state is stored)
        # and went over its memory limit gets a fresh worker: a leak or one huge document costs the batches
        # it failed, not the rest of the run. (A stateless corpus detector's state cannot be rebuilt: it is
        # stopped, see _finish_corpus.)
        for name, index in sorted(worker_gone):
            if name in self.ranged and stats[name].status != "stopped" and name in self.workers \
                    and not self.workers[name][index].alive:
                _trace(f"{name}: restarting its worker after a memory fault")
                pending.errors.extend(self._start_workers(self.ranged[name][0], index=index))

    def _ranged_output(self, drun: DetectorRun, op: str, reply: Reply, part: pa.RecordBatch,
                       pending: _Uncommitted, lo: int, hi: int) -> Reply:
        """Check a ranged call's output (tags, or state rows) and keep it with the rows it covers; a Reply
        of kind invalid_output when it cannot be stored."""
        try:
            out = ranged_output(drun, op, reply.value, part, self.run.run_id)
            if op == "tag":
                self.stats[drun.name].tags += out.num_rows
            else:
                self._check_state_schema(drun, out)
        except DetectorError as exc:
            return Reply(False, kind="invalid_output", message=str(exc), seconds=reply.seconds)
        pending.done[drun.name].append((lo, hi, out))
        return reply

    def _check_state_schema(self, drun: DetectorRun, out: pa.Table | None) -> None:
        """State rows keep one schema within a run (they become one stored table); raises InvalidOutput."""
        if out is None:
            return
        expected = self._state_schema.setdefault(drun.name, out.schema)
        if not out.schema.equals(expected):
            raise InvalidOutput(f"detector {drun.name}: state rows changed schema within the run "
                                f"(first {expected}, now {out.schema})")

    def _commit(self, entry: FileEntry, work: _Uncommitted) -> None:
        """Tags or state rows, errors and coverage of part of one document file, in one atomic commit."""
        run = self.run
        add, coverage = [], []
        for name, items in work.done.items():
            drun = self.ranged[name][0]
            parts = [t for _lo, _hi, t in items if t is not None and t.num_rows]
            ranges = [list(r) for r in _merge_ranges([[lo, hi] for lo, hi, _t in items])]
            if drun.keeps_state:
                if parts:
                    add.append(run.write("state", pa.concat_tables(parts), f"{safe_name(name)}/{drun.state_key}",
                                         meta={"detector": name, "state_key": drun.state_key,
                                               "doc_file": entry.path}))
                coverage.append({"detector": name, "state_key": drun.state_key, "doc_file": entry.path,
                                 "ranges": ranges})
                continue
            if parts:
                add.append(run.write("tags", pa.concat_tables(parts), f"{safe_name(name)}/{drun.tag_key}",
                                     meta={"detector": name, "tag_key": drun.tag_key, "doc_file": entry.path}))
            coverage.append({"detector": name, "tag_key": drun.tag_key, "doc_file": entry.path, "ranges": ranges})
        if work.errors:
            add.append(run.write("errors", pa.Table.from_pylist(work.errors), ""))
        run.commit(add=add, coverage=coverage)

    def _finish_corpus(self, drun: DetectorRun) -> None:
        """``finish``, its parts written as they stream in; one commit makes them live, replacing the old tags."""
        run, stat = self.run, self.stats[drun.name]
        stat.status = "ok" if stat.status == "up_to_date" else stat.status
        if drun.keeps_state:
            if any(f["where"] == "start" for f in stat.faults):
                return  # it could not start this run; its start error is recorded
            if not self._alive(drun.name):
                # Its state is on disk, so a fresh worker can finish (after a memory fault, or when there
                # was nothing new to observe and only the references changed).
                errors = self._start_workers(drun)
                if errors:
                    run.commit(add=[run.write("errors", pa.Table.from_pylist(errors), "")])
                    return
        elif not self._alive(drun.name) or drun.name in self.corpus_failed:
            # Its fault is recorded already. finish() is not called on a partial view of the corpus:
            # the detector's earlier tags stay live and the next run starts it again.
            stat.status = "stopped"
            return
        snapshot = self.store.snapshot()  # with this run's commits (its state rows)
        # Documents other runs committed since the plan were not observed: the output covers only the plan's.
        snapshot.files = {p: e for p, e in snapshot.files.items() if e.kind != "documents" or p in self.doc_entries}
        record = _corpus_record(snapshot, drun)
        scratch = None
        payload = None
        if drun.keeps_state:
            scratch = self.store.root / "_tmp" / f"{run.run_id}-{safe_name(drun.name)}"
            scratch.mkdir(parents=True, exist_ok=True)
            last = _last_corpus_record(snapshot, drun) or {}
            seen = set(last.get("state_files", []))
            root = self.store.root
            payload = CorpusState(
                state_files=[str(root / f) for f in record["state_files"]],
                new_state_files=[str(root / f) for f in record["state_files"] if f not in seen],
                doc_files=[str(root / f) for f in record["doc_files"]],
                fetch_files=[str(root / f) for f in record.get("fetch_files", [])],
                references={name: [str(p) for p in paths] for name, paths in reference_sets(snapshot).items()},
                scratch_dir=str(scratch), time_budget_s=self.tag.finish_budget_s)
        written: list[FileEntry] = []
        failure: Reply | None = None
        try:
            worker = next(w for w in self.workers[drun.name] if w.alive)
            for reply in worker.finish_parts(payload, self.tag.finish_budget_s):
                stat.seconds += reply.seconds
                if not reply.ok:
                    failure = reply
                    break
                try:
                    tags = finalize_tags(reply.value, drun, run.run_id)
                    # finish() may tag any live document of the store, no other.
                    _check_doc_ids(tags.column("doc_id"), self._live_doc_ids(), drun.name, "the store's documents")
                except DetectorError as exc:
                    failure = Reply(False, kind="invalid_output", message=str(exc))
                    break
                written.append(run.write("tags", tags, f"{safe_name(drun.name)}/{drun.tag_key}",
                                         meta={"detector": drun.name, "tag_key": drun.tag_key, "corpus": True}))
                stat.tags += tags.num_rows
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if failure is not None:
            for entry in written:  # never committed: nothing names them
                (self.store.root / entry.path).unlink(missing_ok=True)
            stat.tags = 0
            _trace(f"{drun.name} finish -> {failure.kind}: {failure.message}")
            _fault(stat, failure.kind, failure.message, "finish")
            stat.status = "stopped"
            run.commit(add=[run.write("errors", pa.Table.from_pylist([_error_row(run.run_id, drun, failure)]), "")])
            return
        _trace(f"{drun.name} finish -> {stat.tags} tags in {len(written)} part(s)")
        remove = superseded_files(snapshot, drun, keep_current=False)
        drop = [{"detector": drun.name, "kind": "corpus"}]
        if drun.keeps_state:  # state of an earlier state key is of no use once the current one is complete
            remove += state_files(snapshot, drun, current=False)
            drop.append({"detector": drun.name, "kind": "state", "keep_state_key": drun.state_key})
        run.commit(add=written, remove=remove, coverage=[record], drop_coverage=drop)

    def _live_doc_ids(self) -> pa.ChunkedArray:
        if self._doc_ids is None:
            self._doc_ids = pa.chunked_array(
                [pq.read_table(p, columns=["doc_id"]).column("doc_id") for p in self.snapshot.paths("documents")],
                pa.string())
        return self._doc_ids


def _retire_superseded(run: Run, snapshot: Snapshot, druns: list[DetectorRun]) -> None:
    """Once a configuration covers every document, the tags of older configurations leave the live set."""
    for drun in druns:
        if pending_ranges(snapshot, drun):
            continue
        old = superseded_files(snapshot, drun, keep_current=True)
        stale_coverage = any(c["detector"] == drun.name and c.get("tag_key") != drun.tag_key for c in snapshot.coverage)
        if old or stale_coverage:
            run.commit(remove=old, drop_coverage=[{"detector": drun.name, "keep_tag_key": drun.tag_key}])


def print_summary(summary: TagSummary, stream=None, max_faults: int = 3) -> None:
    """One line per detector, then its faults grouped by kind (first few shown)."""
    stream = stream or sys.stderr
    for name, s in summary.detectors.items():
        d = summary.descriptions.get(name, {})
        who = f"{name} v{d.get('detector_version', '?')} ({d.get('plugin', '?')} {d.get('plugin_version', '?')})"
        line = f"  {who:<44} {s.status:<10} rows={s.rows} tags={s.tags} errors={s.errors} time={s.seconds:.2f}s"
        if s.pending:
            line += f" pending={s.pending}"
        print(line, file=stream)
        by_kind: dict[str, list[dict]] = defaultdict(list)
        for f in s.faults:
            by_kind[f["kind"]].append(f)
        for kind, faults in by_kind.items():
            print(f"      {kind} x{len(faults)}:", file=stream)
            for f in faults[:max_faults]:
                print(f"        {f['where'] or 'run'}: {f['message']}", file=stream)
            if len(faults) > max_faults:
                print(f"        ... and {len(faults) - max_faults} more", file=stream)
    if summary.errors:
        print(f"  faults are in the errors view (with tracebacks): provenance query "
              f"\"select detector, kind, batch_start, batch_end, message from errors "
              f"where run_id = '{summary.run_id}'\"", file=stream)


def summary_json(summary: TagSummary) -> str:
    return json.dumps(summary.to_json(), indent=2, default=str)
