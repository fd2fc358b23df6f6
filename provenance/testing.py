"""Helpers for testing detector plugins: documents, batches, stores, and runs through the real runner.

Everything here uses the real machinery: documents are built by
``provenance.documents.build_document``, stores are real stores written by a
``DocumentSink``, and ``run_detector`` goes through ``provenance.runner.run_tag``
(worker processes, time budget, schema validation, coverage), so a detector
that passes here behaves the same under ``provenance tag``::

    from provenance.testing import make_batch, run_detector

    def test_flags_shouting():
        tags = run_detector(Shouting, [{"text": "HELLO THERE"}, {"text": "hello there"}])
        assert tags.column("tag").to_pylist() == ["shouting"]

The pytest plugin (``provenance.pytest_plugin``, loaded automatically) adds
the fixtures ``provenance_docs``, ``provenance_store``, ``provenance_pm`` and
``run_detector``.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import provenance
from provenance import schemas
from provenance.detectors import Detector

__all__ = [
    "DEFAULT_DOCS", "DetectorFailed", "DetectorsPlugin", "TagResult", "make_batch", "make_document",
    "make_documents", "make_store", "plugin_identity", "plugin_manager_with", "run_detector", "run_detectors",
    "tag_batch",
]

BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)

# A small, varied corpus: plain prose, an exact duplicate pair, shouting, HTML with a title,
# a very short page, one with response headers, and non-English text.
DEFAULT_DOCS: list[dict] = [
    {"url": "https://example.org/articles/river", "text": "The river bends twice before it reaches the old "
     "mill. Fishermen say the second bend is where the trout gather in early summer."},
    {"url": "https://example.org/articles/bread", "text": "Good bread needs time more than skill: flour, water, "
     "salt and a slow overnight rise in a cool kitchen."},
    {"url": "https://mirror.example.net/bread", "text": "Good bread needs time more than skill: flour, water, "
     "salt and a slow overnight rise in a cool kitchen."},
    {"url": "https://example.org/forum/1", "text": "BUY NOW!!! LIMITED OFFER, CLICK HERE BEFORE IT IS GONE!!!"},
    {"url": "https://example.org/about", "html": "<html><head><title>About us</title></head><body><main>"
     "<p>We are a small cooperative of beekeepers in the hills above the town. Our honey is raw and "
     "unfiltered, and every jar carries the name of the hive it came from.</p></main></body></html>"},
    {"url": "https://example.org/short", "text": "Hi."},
    {"url": "https://example.org/api/notes", "text": "Release notes: version 2 fixes the login bug.",
     "headers": {"Content-Type": "text/plain; charset=utf-8", "Server": "nginx"}},
    {"url": "https://exemple.fr/accueil", "text": "Bienvenue sur notre site. Nous vendons des livres anciens "
     "et des cartes postales."},
]


class DetectorFailed(AssertionError):
    """A run through the test kit recorded faults; the message lists them with the first traceback."""


# ----- documents and batches ------------------------------------------------------------------
def make_document(index: int = 0, *, url: str | None = None, text: str | None = None, html: str | None = None,
                  headers=None, fetched_at=None, source: str = "jsonl", crawl_id: str = "test",
                  run_id: str = "test", **fields) -> dict:
    """One row of the documents schema, built the way ingest builds it.

    Give ``text`` and/or ``html`` (HTML is run through the real text extractor
    unless ``text`` is given too). ``url`` defaults to a unique test URL,
    ``fetched_at`` (datetime or ISO string) to 2024-01-01 plus ``index``
    seconds. ``headers`` is a dict or a list of (name, value) pairs. Any other
    documents column (``previous_doc_id``, ``title``, ``http_status``, ...) may
    be given as a keyword.
    """
    if text is None and html is None:
        text = f"Test document number {index}."
    if isinstance(headers, dict):
        headers = list(headers.items())
    if isinstance(fetched_at, str):
        fetched_at = datetime.fromisoformat(fetched_at.replace("Z", "+00:00"))
    if fetched_at is None:
        fetched_at = BASE_TIME + timedelta(seconds=index)
    from provenance.documents import build_document

    return build_document(url=url or f"https://example.test/doc/{index}", body=None, text=text, html=html,
                          headers=headers, fetched_at=fetched_at, source=source, crawl_id=crawl_id,
                          run_id=run_id, **fields)


def make_documents(docs: Iterable[dict | str]) -> list[dict]:
    """Rows of the documents schema from dicts of ``make_document`` keywords (or plain strings: the text)."""
    rows = []
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            doc = {"text": doc}
        elif "doc_id" in doc and "raw_sha256" in doc:  # already a full row
            rows.append(dict(doc))
            continue
        rows.append(make_document(i, **doc))
    return rows


def make_batch(docs: Iterable[dict | str], needs: Iterable[str] | None = None) -> pa.RecordBatch:
    """A documents record batch, as a detector receives it.

    With ``needs`` (e.g. ``MyDetector.needs``), only ``doc_id`` and those
    columns, exactly what the runner hands the detector; otherwise every
    column of the documents schema.
    """
    rows = make_documents(docs)
    table = schemas.conform(pa.Table.from_pylist(rows) if rows else schemas.load("documents").arrow.empty_table(),
                            "documents")
    if needs is not None:
        columns = ["doc_id"] + [n for n in needs if n != "doc_id"]
        unknown = [c for c in columns if c not in table.column_names]
        if unknown:
            raise ValueError(f"make_batch: {unknown} are not documents columns (\"previous\" needs a store: "
                             "use make_store and run_detector)")
        table = table.select(columns)
    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def make_store(path: str | os.PathLike, docs: Iterable[dict | str] | None = None, *,
               crawl_id: str = "test", rows_per_file: int = 500):
    """A real store at ``path`` holding ``docs`` (default: DEFAULT_DOCS), written as ingest writes.

    Documents go into Parquet files of ``rows_per_file`` rows each. Calling it
    again on the same path adds documents the store does not hold yet.
    """
    from provenance.documents import DocumentSink, existing_doc_ids
    from provenance.store import Store

    rows = make_documents(DEFAULT_DOCS if docs is None else docs)
    store = Store.open(path, create=True)
    with store.run("ingest", config={"source": "provenance.testing", "crawl_id": crawl_id}) as run:
        sink = DocumentSink(run, crawl_id, existing_doc_ids(store.snapshot()), flush_rows=rows_per_file)
        for row in rows:
            sink.add({**row, "run_id": run.run_id, "crawl_id": crawl_id})
        sink.flush()
        run.stats = {"stored": sink.written, "already_stored": sink.skipped_existing}
    return store


# ----- plugins --------------------------------------------------------------------------------
class DetectorsPlugin:
    """A plugin object registering the given detector classes: register it for one test.

    ``pm.register_plugin(DetectorsPlugin(MyDetector), "my_plugin", "0.1", None)``
    """

    def __init__(self, *detector_classes: type[Detector]):
        self.detector_classes = detector_classes

    @provenance.hookimpl
    def register_detectors(self, register):
        for cls in self.detector_classes:
            register(cls)

    def __repr__(self) -> str:
        return f"DetectorsPlugin({', '.join(c.__name__ for c in self.detector_classes)})"


def _distribution_of(module_name: str) -> tuple[str | None, str]:
    """(distribution, version) owning a top-level module, when it is installed."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    top = module_name.split(".")[0]
    for dist in packages_distributions().get(top, []):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None, "0"


def plugin_identity(module_name: str) -> tuple[str, str, str | None]:
    """(plugin name, version, distribution) that a real run stamps on detectors defined in ``module_name``.

    An installed plugin is known by its ``provenance.plugins`` entry-point
    name (``shouting = "provenance_shouting"`` -> ``shouting``) and its
    distribution's version: the entry point whose module is ``module_name`` or
    a package above it, else the only third-party one in the same top-level
    package. A module that no entry point names is a one-off plugin, named
    after its top-level module as ``--plugin-module`` would name it.
    """
    from importlib.metadata import entry_points

    from provenance.pluginmanager import ENTRY_POINT_GROUP, HOST_DISTRIBUTION

    top = module_name.split(".")[0]
    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    within = [ep for ep in eps if module_name == ep.module or module_name.startswith(ep.module + ".")]
    same_top = [ep for ep in eps if ep.module.split(".")[0] == top
                and (ep.dist is None or ep.dist.metadata["Name"] != HOST_DISTRIBUTION)]
    chosen = max(within, key=lambda ep: len(ep.module)) if within else (same_top[0] if len(same_top) == 1 else None)
    if chosen is not None:
        dist = chosen.dist
        return chosen.name, (dist.version if dist else "0"), (dist.metadata["Name"] if dist else None)
    dist, version = _distribution_of(module_name)
    return top, version, dist


def plugin_manager_with(*plugins, installed: bool = False):
    """A fresh plugin manager with the built-ins plus ``plugins``, checked as at load time.

    Each plugin is a module or object with ``@provenance.hookimpl`` functions,
    or a Detector class, wrapped in a DetectorsPlugin with the name and
    version a real run gives it (``plugin_identity``: the entry-point name of
    an installed plugin, else its top-level module).
    ``installed=True`` also loads every installed third-party plugin.
    """
    from provenance.pluginmanager import get_plugin_manager

    pm = get_plugin_manager(third_party=installed)
    groups: dict[tuple, list[type]] = {}  # (name, version, distribution) -> classes
    for plugin in plugins:
        if isinstance(plugin, type) and issubclass(plugin, Detector):
            groups.setdefault(plugin_identity(plugin.__module__), []).append(plugin)
            continue
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        name = name.rsplit(".", 1)[-1]
        dist, version = _distribution_of(getattr(plugin, "__name__", type(plugin).__module__))
        pm.register_plugin(plugin, name, str(getattr(plugin, "__version__", version)), dist)
    for (name, version, dist), classes in groups.items():
        name = name if not pm.has_plugin(name) else f"{name}_under_test"
        if any(s.cls in classes for s in pm.detectors().values()):
            continue  # already registered (installed=True, or a built-in): use it as it is
        pm.register_plugin(DetectorsPlugin(*classes), name, version, dist)
    pm.check_hooks()
    return pm


# ----- running --------------------------------------------------------------------------------
@dataclass
class TagResult:
    """What a test-kit run produced: live tags of the detectors run, this run's errors, the summary."""

    tags: pa.Table
    errors: pa.Table
    summary: object  # provenance.runner.TagSummary
    store_path: Path | None  # None when the store was temporary (already deleted)


def _settings(isolation: str, batch_size: int, time_budget: float, options: dict | None, settings: dict | None):
    from provenance import config

    merged = copy.deepcopy(config.DEFAULTS)
    for section, values in (settings or {}).items():
        merged.setdefault(section, {}).update(values)
    merged["tag"].update({"isolation": isolation, "batch_size": batch_size, "time_budget_s": time_budget})
    for name, opts in (options or {}).items():
        merged["detectors"][name] = dict(opts or {})
    return merged


def _read_kind(snapshot, kind: str, where, order) -> pa.Table:
    """Live rows of one kind (tags, errors) in a store snapshot, filtered and sorted."""
    import pyarrow.parquet as pq

    paths = snapshot.paths(kind)
    if not paths:
        return schemas.load(kind).arrow.empty_table()
    table = pa.concat_tables([pq.read_table(p) for p in paths]).filter(where)
    return table.sort_by(order)


def live_rows(store_dir: str | os.PathLike, kind: str) -> list[tuple]:
    """Every live row of one kind (tags, state, errors) in a store, without the columns that name the run
    (run_id, created_at), sorted: what two runs over the same input (two engines, say) must agree on."""
    import duckdb
    import pyarrow.parquet as pq

    from provenance.store import Store

    paths = Store.open(store_dir).snapshot().paths(kind)
    if not paths:
        return []
    rows = pa.concat_tables([pq.read_table(p) for p in paths], promote_options="permissive")
    rows = rows.drop_columns([c for c in ("run_id", "created_at") if c in rows.column_names])
    con = duckdb.connect()
    try:
        con.register("live_rows", rows)
        return con.sql("SELECT * FROM live_rows ORDER BY ALL").fetchall()
    finally:
        con.close()


def run_detectors(detectors: Iterable[type[Detector]], docs_or_store, options: dict | None = None, *,
                  isolation: str = "process", batch_size: int = 1000, time_budget: float = 60.0,
                  pm=None, settings: dict | None = None, raise_on_error: bool = True) -> TagResult:
    """Run detector classes through the real runner (``run_tag``) and return what it stored.

    ``docs_or_store``: a list of documents (dicts of ``make_document`` keywords
    or strings), written to a temporary store that is deleted afterwards; or a
    Store / store path, which is tagged in place (so a second call shows
    idempotency: nothing new is done). ``options`` maps detector name to its
    options, as ``[detectors.<name>]`` in provenance.toml would.
    ``isolation='process'`` (the default, as in production) runs each
    detector in a worker process with the time budget; ``'inline'`` runs it
    in this process so a debugger can step into it. With ``raise_on_error``
    any fault (exception, time-out, invalid output) raises DetectorFailed with
    its traceback.
    """
    from provenance.runner import run_tag
    from provenance.store import Store

    detectors = list(detectors)
    pm = pm or plugin_manager_with(*detectors)
    names = [d.name for d in detectors]
    tmp = None
    if isinstance(docs_or_store, (Store, str, os.PathLike)):
        store = docs_or_store if isinstance(docs_or_store, Store) else Store.open(docs_or_store)
    else:
        tmp = tempfile.mkdtemp(prefix="provenance-test-")
        store = make_store(Path(tmp) / "store", docs_or_store)
    try:
        summary = run_tag(store, pm, _settings(isolation, batch_size, time_budget, options, settings), enable=names)
        snapshot = store.snapshot()
        tags = _read_kind(snapshot, "tags", pc.field("detector").isin(names),
                          [("detector", "ascending"), ("doc_id", "ascending"), ("tag", "ascending")])
        errors = _read_kind(snapshot, "errors", pc.field("run_id") == summary.run_id,
                            [("detector", "ascending"), ("doc_file", "ascending"), ("batch_start", "ascending")])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if raise_on_error and summary.errors:
        lines = [f"{summary.errors} fault(s) in run {summary.run_id}:"]
        for name, stat in summary.detectors.items():
            lines += [f"  {name}: {f['kind']} at {f['where'] or 'run'}: {f['message']}" for f in stat.faults[:10]]
        first_tb = next((tb for tb in errors.column("traceback").to_pylist() if tb), None)
        if first_tb:
            lines += ["first traceback:", first_tb]
        raise DetectorFailed("\n".join(lines))
    return TagResult(tags, errors, summary, None if tmp is not None else store.root)


def run_detector(detector: type[Detector], docs_or_store, options: dict | None = None, *,
                 isolation: str = "process", batch_size: int = 1000, time_budget: float = 60.0,
                 pm=None, raise_on_error: bool = True) -> pa.Table:
    """Run one detector class through the real runner; its live tag rows (tags schema), sorted by doc_id.

    See ``run_detectors`` for the arguments; ``options`` are this detector's options.
    """
    result = run_detectors([detector], docs_or_store, {detector.name: options} if options else None,
                           isolation=isolation, batch_size=batch_size, time_budget=time_budget, pm=pm,
                           raise_on_error=raise_on_error)
    return result.tags


def tag_batch(detector: type[Detector], docs, options: dict | None = None, run_id: str = "test") -> pa.Table:
    """One per-document detector over one batch, in this process, with no store: the pure path.

    Builds the batch the runner would hand it (doc_id + its needs), calls
    ``provenance.runner.TagBatchFn`` (the function a Ray Data pipeline maps
    over batches) and returns the validated tag rows.
    """
    from provenance.detectors import check_detector_class
    from provenance.pluginmanager import DetectorSpec, PluginInfo
    from provenance.runner import DetectorRun, TagBatchFn

    check_detector_class(detector)
    name, version, dist = plugin_identity(detector.__module__)
    plugin = PluginInfo(name, version, dist, False, detector.__module__)
    drun = DetectorRun(DetectorSpec(detector, plugin), detector.validate_options(dict(options or {})))
    if isinstance(docs, pa.RecordBatch):
        batch = docs
    else:
        batch = make_batch(docs, needs=[c for c in drun.columns if c != "doc_id"])
    return TagBatchFn(drun, run_id)(batch)
