"""What a detector is: the classes plugin authors subclass, and how their output becomes tag rows.

A per-document detector implements ``tag_batch(batch)``; a corpus-level one
implements ``observe(batch)`` for every batch and then ``finish()``. Both
return tags in any of these forms, and the runner turns them into rows of the
tags schema (adding plugin, versions, run id, config hash and time):

- ``None`` or an empty list: nothing found;
- a list of dicts with ``doc_id``, ``tag`` and optionally ``score``, ``evidence``
  (dict or JSON string) and ``category`` (defaults to the detector's);
- a ``pyarrow.Table``/``RecordBatch`` with those columns (the fast path:
  build it with ``self.tags(...)`` from arrays, no per-row Python).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

CATEGORIES = ("llm", "poison", "duplicate", "quality", "provenance", "other")
# Not document columns, but things the runner can join in for a detector that asks.
SPECIAL_NEEDS = {
    # the earlier version of the same URL (the versions view: the version just before the document's earliest
    # capture, by capture time, whatever the source or the order of import), as previous_<column>
    "previous": ("previous_doc_id", "previous_text", "previous_text_sha256", "previous_raw_sha256",
                 "previous_fetched_at", "previous_headers", "previous_url", "previous_raw", "previous_resolved_ip"),
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DetectorError(ValueError):
    """A detector class or its options that the core refuses, with the reason."""


class InvalidOutput(DetectorError):
    """What a detector returned cannot become rows of the tags schema; nothing of it is stored."""


class Detector:
    """A per-document detector: ``tag_batch`` sees one Arrow record batch at a time.

    Class attributes a subclass sets:
      name      snake_case, unique across all plugins; keys the stored tags
      version   the detector's own version: bump it when its output changes
      category  default category of its tags (one of CATEGORIES, or another word)
      needs     document columns it reads (doc_id is always there); "previous"
                adds the earlier version of the same URL as previous_* columns
      options   option names and defaults; values from [detectors.<name>] in
                provenance.toml are checked against the defaults' types and
                folded into the config hash
      opt_in    True for a detector that needs something only the user has (a model
                on disk): it runs when named in ``[tag] enable`` / ``--plugins`` or
                when provenance.toml has a ``[detectors.<name>]`` table, never by default
    """

    name: str = ""
    version: str = ""
    category: str = "other"
    needs: tuple[str, ...] = ("text",)
    options: dict = {}
    opt_in = False
    corpus_level = False

    def __init__(self, **options):
        self.options = self.validate_options(options)

    @classmethod
    def validate_options(cls, options: dict) -> dict:
        """Defaults overlaid with ``options``; refuses unknown names and wrong types.

        Override (and call super) for checks of values, e.g. ranges.
        """
        unknown = set(options) - set(cls.options)
        if unknown:
            raise DetectorError(f"detector {cls.name}: unknown option(s) {sorted(unknown)}; "
                                f"known: {sorted(cls.options) or 'none'}")
        merged = dict(cls.options)
        for key, value in options.items():
            default = cls.options[key]
            ok = default is None or (isinstance(value, type(default)) and (
                isinstance(default, bool) or not isinstance(value, bool))) or (
                isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise DetectorError(f"detector {cls.name}: option {key!r} must be "
                                    f"{type(default).__name__}, got {value!r}")
            merged[key] = float(value) if isinstance(default, float) else value
        return merged

    @classmethod
    def config_hash(cls, options: dict) -> str:
        blob = json.dumps(cls.validate_options(options), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def tag_batch(self, batch: pa.RecordBatch):
        raise NotImplementedError(f"{type(self).__name__} must implement tag_batch(batch)")

    # ----- helpers for building output --------------------------------------------------
    def tags(self, doc_ids, tag: str | Iterable[str], score=None, evidence=None, category=None) -> pa.Table:
        """Tag rows from arrays (the fast path: no per-row Python unless you pass Python lists).

        doc_ids   Arrow array/ChunkedArray or list of the documents tagged
        tag       one tag for every row, or one per row
        score     one float in [0, 1] for every row, or one per row (array or list); None: no score
        evidence  one per row: dicts (serialised to JSON), JSON strings or None; or an Arrow string array
        category  one category for every row, or one per row; None: the detector's category
        """
        doc_ids = _as_array(doc_ids, pa.string())
        n = len(doc_ids)
        columns = {"doc_id": doc_ids, "tag": _per_row(tag, n, pa.string())}
        if score is not None:
            columns["score"] = _per_row(score, n, pa.float64())
        if evidence is not None:
            if not isinstance(evidence, (pa.Array, pa.ChunkedArray)):
                evidence = [e if e is None or isinstance(e, str) else json.dumps(e, ensure_ascii=False, default=str)
                            for e in evidence]
            columns["evidence"] = _as_array(evidence, pa.string())
        if category is not None:
            columns["category"] = _per_row(category, n, pa.string())
        return pa.table(columns)


def _as_array(values, type_):
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values if values.type.equals(type_) else values.cast(type_)
    return pa.array(values, type_)


def _per_row(value, n: int, type_):
    """A constant broadcast to n rows, or a per-row sequence taken as is."""
    if value is None or isinstance(value, (str, int, float)):
        return pa.repeat(pa.scalar(value, type_), n)
    return _as_array(value, type_)


@dataclass
class CorpusState:
    """What ``finish(corpus)`` of a state-keeping corpus detector reads: files, never rows in memory.

    state_files      every live state file of this detector's state key (Parquet, absolute paths): the
                     rows its ``observe`` returned, for every document of the store that got one
    new_state_files  those added since its last complete ``finish`` under the same configuration
                     (all of them on a first run or after a configuration change)
    doc_files        every live document file (absolute paths)
    fetch_files      every live ``fetches`` file (absolute paths): every crawl fetch and imported re-capture,
                     with the doc_id it confirmed; given to a detector with ``reads_fetches = True`` (a new
                     fetches file then makes ``finish`` run again), else empty
    references       reference sets added with ``provenance reference add``: name -> Parquet files
                     with the columns reference, ref_id, text (schemas/references.v1.json)
    scratch_dir      an empty directory for spill files (e.g. DuckDB's temp_directory), deleted after finish
    time_budget_s    what ``finish`` has, all parts together ([tag] finish_budget_s)

    ``connect(memory_mb)`` gives a DuckDB connection for ``finish`` whose memory is bounded (it spills to
    ``scratch_dir`` beyond it), so that a query over the whole corpus fits a worker at any corpus size.

    Host-level context, as DuckDB relations on a connection the detector opens (``.to_arrow_table()`` for
    Arrow): ``hosts(con)``, the ``hosts`` view (one row per registered domain), and ``host_days(con)``, one row per
    registered domain and capture day (what changed since the captures before: docs/PLUGINS.md). Both read
    only the narrow columns they need of ``doc_files`` and the captures of ``fetch_files`` (so re-captures
    count only for a detector with ``reads_fetches``), never the texts.
    """

    state_files: list[str] = field(default_factory=list)
    new_state_files: list[str] = field(default_factory=list)
    doc_files: list[str] = field(default_factory=list)
    fetch_files: list[str] = field(default_factory=list)
    references: dict[str, list[str]] = field(default_factory=dict)
    scratch_dir: str | None = None
    time_budget_s: float | None = None

    @contextmanager
    def connect(self, memory_mb: int = 512) -> Iterator:
        """``bounded_duckdb`` over ``scratch_dir`` (a temporary directory when there is none), closed on exit."""
        with tempfile.TemporaryDirectory(prefix="provenance-finish-") as own_scratch:
            con = bounded_duckdb(self.scratch_dir or own_scratch, memory_mb)
            try:
                yield con
            finally:
                con.close()

    def hosts(self, con):
        """The ``hosts`` view over this snapshot: a DuckDB relation on ``con`` (one row per registered domain)."""
        from provenance.sql import hosts_sql

        return self._host_relation(con, hosts_sql)

    def host_days(self, con):
        """Per registered domain and capture day, what changed since the captures before it: a DuckDB relation on
        ``con`` (``provenance.sql.host_days_sql``; columns in docs/PLUGINS.md)."""
        from provenance.sql import host_days_sql

        return self._host_relation(con, host_days_sql)

    def _host_relation(self, con, make_sql):
        from provenance import schemas
        from provenance.sql import captures_sql, sql_list

        if self.doc_files:
            documents = f"read_parquet({sql_list(self.doc_files)}, union_by_name = true)"
        else:  # an empty store: the same columns, no rows
            con.register("_no_documents", schemas.load("documents").arrow.empty_table())
            documents = "_no_documents"
        captures = (captures_sql(f"read_parquet({sql_list(self.fetch_files)}, union_by_name = true)")
                    if self.fetch_files else None)
        return con.sql(make_sql(documents, captures))


def bounded_duckdb(scratch_dir: str, memory_mb: int, **settings):
    """A DuckDB connection that spills to ``scratch_dir`` beyond ``memory_mb``, or beyond a third of what the worker
    may still allocate if that is less (``[tag] worker_memory_mb``: what is read back after a query must still
    fit), on every CPU; ``settings`` are more DuckDB settings. Unbounded, DuckDB takes up to 80% of the machine's
    memory before it spills, and a worker's memory limit stops it first."""
    import duckdb

    from provenance.isolation import memory_headroom_mb

    headroom = memory_headroom_mb()
    if headroom is not None:
        memory_mb = max(16, min(memory_mb, headroom // 3))
    return duckdb.connect(config={"temp_directory": scratch_dir, "memory_limit": f"{memory_mb}MB",
                                  "threads": os.cpu_count() or 1, **settings})


class CorpusDetector(Detector):
    """A corpus-level detector: ``observe`` sees batches, then ``finish`` emits the tags.

    For near-duplicate clusters, trigger mining and other signals that need the
    whole corpus. ``finish`` may return one output or yield several: each part
    is written to disk as it arrives, so the runner never holds the whole
    output, and all parts become live together, replacing the detector's
    earlier tags in one commit.

    Two kinds:

    * Without state (``keeps_state = False``, the default): ``observe`` sees
      every batch of every live document in one pass, then ``finish()`` (no
      argument) is called. Any new document file means a whole new pass.
    * With state (``keeps_state = True``): ``observe(batch)`` returns *state
      rows* for the batch's documents (a table with a non-null ``doc_id``
      column and any others, the same schema every call; e.g. a MinHash
      signature per document). The runner stores them as Parquet beside the
      tags, committed with their own coverage like per-document tags, so each
      document is observed once per state key (``state_version`` and the
      options named in ``state_options``). Then ``finish(corpus)`` is called
      with a ``CorpusState`` naming the files; it reads them itself (out of
      core, e.g. with DuckDB) and need not keep anything between calls. The
      instance that runs ``finish`` may not be the one that observed.

    ``finish`` may tag any live document of the store, no other: an unknown
    doc_id refuses the whole output. It runs under its own time budget,
    ``[tag] finish_budget_s``, for all its parts together, in the same worker
    (and memory limit) as the observe calls. If it fails, the earlier tags stay
    live and the next run calls it again (re-observing only what a stateless
    detector must).
    """

    corpus_level = True
    keeps_state = False
    state_version: str | None = None  # bump when the state rows change; None: the detector's version
    state_options: tuple[str, ...] | None = None  # options whose values change the state rows; None: all
    reads_fetches = False  # state-keeping: finish(corpus) reads corpus.fetch_files (re-captures of a document)

    def observe(self, batch: pa.RecordBatch):
        raise NotImplementedError(f"{type(self).__name__} must implement observe(batch)")

    def finish(self, corpus: CorpusState | None = None):
        raise NotImplementedError(f"{type(self).__name__} must implement finish()")

    def tag_batch(self, batch):  # pragma: no cover - corpus detectors are driven by observe/finish
        raise TypeError("corpus-level detectors use observe()/finish(), not tag_batch()")

    @classmethod
    def state_key(cls, options: dict) -> str:
        """Names the stored state: changes when state_version or an option in state_options changes."""
        merged = cls.validate_options(options)
        names = cls.options if cls.state_options is None else cls.state_options
        blob = json.dumps({k: merged[k] for k in names}, sort_keys=True, default=str)
        version = cls.state_version or cls.version
        return f"s{version}-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_detector_class(cls) -> None:
    """Refuse, with a reason, a class that is not a usable detector."""
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise DetectorError(f"{cls!r} is not a subclass of provenance.Detector or provenance.CorpusDetector")
    if not isinstance(cls.name, str) or not _NAME.match(cls.name):
        raise DetectorError(f"{cls.__qualname__}: name {cls.name!r} must be snake_case (a-z, 0-9, _)")
    if not isinstance(cls.version, str) or not cls.version.strip():
        raise DetectorError(f"detector {cls.name}: version must be a non-empty string")
    if not isinstance(cls.category, str) or not _NAME.match(cls.category):
        raise DetectorError(f"detector {cls.name}: category {cls.category!r} must be a snake_case word")
    if isinstance(cls.needs, str) or not all(isinstance(n, str) for n in cls.needs):
        raise DetectorError(f"detector {cls.name}: needs must be a tuple of column names")
    unknown = [n for n in cls.needs if n not in document_columns() and n not in SPECIAL_NEEDS]
    if unknown:
        raise DetectorError(f"detector {cls.name}: needs unknown column(s) {unknown}; a detector may need "
                            f"{', '.join(sorted(SPECIAL_NEEDS))} or any documents column: "
                            f"{', '.join(document_columns())}")
    if not isinstance(cls.options, dict):
        raise DetectorError(f"detector {cls.name}: options must be a dict of defaults")
    if cls.corpus_level:
        for method in ("observe", "finish"):
            if getattr(cls, method) is getattr(CorpusDetector, method):
                raise DetectorError(f"detector {cls.name}: corpus-level detectors must implement {method}()")
    elif cls.tag_batch is Detector.tag_batch:
        raise DetectorError(f"detector {cls.name}: must implement tag_batch(batch)")


def document_columns() -> list[str]:
    """Columns of the documents schema: what a detector's ``needs`` may name."""
    from provenance import schemas

    return schemas.load("documents").names


TAG_OUTPUT_COLUMNS = ("doc_id", "tag", "score", "evidence", "category")


def output_to_table(output, detector: Detector) -> pa.Table:
    """A detector's output (None, list of dicts, Table or RecordBatch) as a table of TAG_OUTPUT_COLUMNS.

    Raises InvalidOutput, naming the detector, for anything else.
    """
    name = getattr(detector, "name", type(detector).__name__)
    if output is None:
        return pa.table({"doc_id": pa.array([], pa.string()), "tag": pa.array([], pa.string())})
    if isinstance(output, pa.RecordBatch):
        output = pa.Table.from_batches([output])
    if isinstance(output, (list, tuple)):
        rows = []
        for row in output:
            if not isinstance(row, dict):
                raise InvalidOutput(f"detector {name}: tag rows must be dicts, got {type(row).__name__}")
            evidence = row.get("evidence")
            if evidence is not None and not isinstance(evidence, str):
                row = {**row, "evidence": json.dumps(evidence, ensure_ascii=False, default=str)}
            rows.append(row)
        try:
            output = pa.Table.from_pylist(rows) if rows else output_to_table(None, detector)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise InvalidOutput(f"detector {name}: tag rows cannot form a table: {exc}") from None
    if not isinstance(output, pa.Table):
        raise InvalidOutput(f"detector {name}: returned {type(output).__name__}; "
                            "expected None, a list of dicts or a pyarrow Table")
    extra = set(output.column_names) - set(TAG_OUTPUT_COLUMNS)
    if extra:
        raise InvalidOutput(f"detector {name}: unexpected tag column(s) {sorted(extra)}; "
                            f"allowed: {list(TAG_OUTPUT_COLUMNS)}")
    for required in ("doc_id", "tag"):
        if required not in output.column_names:
            raise InvalidOutput(f"detector {name}: tag output lacks the {required!r} column")
    return output


def state_to_table(output, detector: Detector) -> pa.Table | None:
    """State rows from ``observe`` of a state-keeping corpus detector: None (no rows) or a table with doc_id.

    Raises InvalidOutput, naming the detector, for anything else; the runner also checks that every
    doc_id is in the batch observed and that the schema does not change between calls.
    """
    name = getattr(detector, "name", type(detector).__name__)
    if output is None:
        return None
    if isinstance(output, pa.RecordBatch):
        output = pa.Table.from_batches([output])
    if not isinstance(output, pa.Table):
        raise InvalidOutput(f"detector {name}: observe returned {type(output).__name__}; a state-keeping "
                            "detector returns None or a pyarrow Table of state rows")
    if "doc_id" not in output.column_names or not pa.types.is_string(output.schema.field("doc_id").type):
        raise InvalidOutput(f"detector {name}: state rows need a string 'doc_id' column")
    if output.column("doc_id").null_count:
        raise InvalidOutput(f"detector {name}: state rows have a null doc_id")
    return output
