"""The Ray engine: ``provenance tag --engine ray``, the same plugins over the same store through Ray Data.

What runs where:

* The driver (the ``tag`` command) plans exactly as the local engine: ``RayTagPass`` is a ``_TagPass``, so
  the coverage records, pending ranges, commits (every ``[tag] commit_rows`` rows or ``commit_seconds`` and
  at the end of each file), tag keys, error rows, corpus ``finish`` and retiring of old configurations are
  the local runner's own code. Only the driver writes to the store.
* The per-document and state-keeping detectors' calls go to the cluster: one work unit per window of
  ``[tag] batch_size`` rows of a document file (the local engine's batches), naming for each detector the
  row ranges it still needs there. Ray Data maps the units over a pool of actors (``_UnitTagger``, one per
  cluster CPU). Each actor loads the plugins by entry point, reads only the needed columns of the unit's
  rows, calls each detector in a worker from ``provenance.isolation`` (the same forked process as locally,
  so the per-call time budget, the memory limit and crash containment hold inside the Ray worker too),
  checks its output with ``runner.ranged_output`` and returns tags or state rows as Arrow IPC, or the fault.
* Stateless corpus detectors (none of the built-ins) observe on the driver after the distributed phase: their
  state lives in one instance's memory and the API has no way to merge two instances, so splitting their
  observe calls over actors would be unsound. Every corpus detector's ``finish`` runs on the driver, as
  locally; state-keeping ones read the state rows the cluster produced from disk.
* With ``[tag] ray_stage`` (``--stage s3://BUCKET/PREFIX``), for clusters without a shared filesystem, the driver
  first copies the document files the units read (and, when a detector needs ``previous``, every live document
  and fetch file, which the earlier-version lookup reads) to ``PREFIX/<path in the store>``, skipping a file
  already there with the same size (store files are written once under unique names), and the units name the
  ``s3://`` URIs: actors read them through ``pyarrow.fs.S3FileSystem`` (provenance.objectstore), DuckDB's
  earlier-version lookup through the same filesystem (fsspec). The store itself never leaves the driver.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from provenance import objectstore, schemas
from provenance.detectors import DetectorError
from provenance.isolation import Reply, WorkerStartError, make_worker
from provenance.runner import (DetectorRun, PreviousLookup, TagRunError, TagSettings, _error_row, _fault,
                               _TagPass, _trace, _Uncommitted, ranged_output)

RAY_MISSING = "ray is not installed: pip install 'provenance-guard[ray]'"

# One row per (unit, detector, row range) that an actor returns; ``rows`` is an Arrow IPC stream.
RESULT_SCHEMA = pa.schema([
    ("unit", pa.int64()), ("doc_file", pa.string()), ("detector", pa.string()),
    ("start", pa.int64()), ("end", pa.int64()),
    ("kind", pa.string()),  # null: ok; a fault kind (exception, timeout, ...); "skipped": not run, left pending
    ("where", pa.string()),  # "start" for a detector that could not be started on the worker
    ("message", pa.string()), ("traceback", pa.string()), ("seconds", pa.float64()),
    ("rows", pa.large_binary()), ("pid", pa.int64()), ("node_id", pa.string()),
])


def require_ray():
    """The ray module; TagRunError (exit 2) when it is not installed."""
    try:
        import ray
    except ImportError:
        raise TagRunError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def connected(address: str | None):
    """Joined to a Ray cluster (``auto``, ``ray://HOST:PORT``) or, with no address, a local one started for the
    run; a cluster the caller already joined (``ray.init`` in a notebook or test) is used as it is."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a CLI run never reports usage unless asked to
    # Workers' output would land in this command's stdout (``tag --json``): faults come back as errors rows.
    kwargs = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise TagRunError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())}; give "
                          "--address auto (a cluster started with `ray start` here) or ray://HOST:10001") from None
    try:
        yield ray
    finally:
        ray.shutdown()


STAGE_THREADS = 8  # uploads in flight when staging document files


def check_stage(stage: str) -> None:
    """ObjectStoreError (one line) unless ``stage`` is an s3:// URI whose bucket exists and answers."""
    objectstore.check_bucket(stage)


def _read_rows(path: str, columns: list[str], start: int, end: int, stage_query: str = "") -> pa.RecordBatch:
    """Rows [start, end) of a document file, only ``columns``: just the row groups that hold them. ``path``: a
    local path, or the s3:// URI of a staged copy (``stage_query``: the stage's endpoint parameters)."""
    source = objectstore.open_random_access(path + stage_query) if objectstore.is_uri(path) else path
    pf = pq.ParquetFile(source)
    groups, offset, first = [], 0, None
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if offset < end and offset + n > start:
            groups.append(i)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups, columns=columns).slice(start - first, end - start).combine_chunks()
    return table.to_batches()[0]


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


class _UnitTagger:
    """A Ray Data actor: work units in, one result row per detector and row range out (tags, state rows or a fault).

    Each detector runs in a worker from provenance.isolation, started on first use, as the local engine
    starts it: a time-out or crash stops that detector in this actor (its later ranges come back "skipped"
    and stay pending for the next run), a memory fault gets a fresh worker.
    """

    def __init__(self, detectors: list[dict], run_id: str, tag: TagSettings, previous_paths: list[str] | None,
                 previous_fetch_paths: list[str] = ()):
        import ray

        from provenance.pluginmanager import get_plugin_manager, load_plugin_modules

        self.run_id, self.tag = run_id, tag
        self.stage_query = objectstore.query_of(tag.ray_stage) if tag.ray_stage else ""
        # Each actor orders the captures itself (a DuckDB connection does not travel); only those that need it.
        self.previous = None
        if previous_paths is not None:
            fs = objectstore.fsspec_filesystem(tag.ray_stage) if tag.ray_stage else None
            self.previous = PreviousLookup(previous_paths, previous_fetch_paths, filesystem=fs)
        self.pid = os.getpid()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.druns: dict[str, DetectorRun] = {}
        self.unusable: dict[str, str] = {}  # detector -> why it cannot run on this node
        self.workers: dict = {}
        self.stopped: set[str] = set()
        pm = get_plugin_manager()  # the plugins installed on this node, by entry point
        load_plugin_modules(pm, [])  # and PROVENANCE_PLUGIN_MODULES, when the cluster's environment sets it
        specs = pm.detectors()
        for d in detectors:
            name, spec = d["name"], specs.get(d["name"])
            if spec is None:
                self.unusable[name] = (f"detector {name} is not installed on Ray node {self.node_id}: install its "
                                       "plugin on every node of the cluster")
                continue
            drun = DetectorRun(spec, d["options"])
            if drun.tag_key != d["tag_key"]:
                self.unusable[name] = (f"detector {name} on Ray node {self.node_id} has tag key {drun.tag_key}, the "
                                       f"driver's is {d['tag_key']}: install the same plugin versions on every node")
                continue
            self.druns[name] = drun
        self.available = set(schemas.load("documents").names)

    def __call__(self, units: pa.Table) -> pa.Table:
        out = []
        for unit in units.to_pylist():
            out.extend(self._unit(unit))
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)

    def _unit(self, unit: dict) -> list[dict]:
        work = json.loads(unit["work"])
        readers = [self.druns[n] for n in work if n in self.druns and n not in self.stopped]
        batch = None
        if readers:
            columns = sorted({c for d in readers for c in d.columns if c in self.available})
            batch = _read_rows(unit["path"], columns, unit["start"], unit["end"], self.stage_query)
            if self.previous is not None and any("previous" in d.spec.cls.needs for d in readers):
                batch = self.previous.add(batch)
        return [self._call(name, unit, batch, a, b) for name, ranges in work.items() for a, b in ranges]

    def _call(self, name: str, unit: dict, batch: pa.RecordBatch | None, a: int, b: int) -> dict:
        row = {"unit": unit["unit"], "doc_file": unit["doc_file"], "detector": name, "start": a, "end": b,
               "pid": self.pid, "node_id": self.node_id}
        if name in self.unusable:
            self.stopped.add(name)
            return {**row, "kind": "crashed", "where": "start", "message": self.unusable.pop(name)}
        if name in self.stopped:
            return {**row, "kind": "skipped"}
        drun = self.druns[name]
        worker = self.workers.get(name)
        if worker is None or not worker.alive:
            try:
                worker = self.workers[name] = make_worker(self.tag.isolation, drun.spec.cls, drun.options,
                                                          start_timeout=self.tag.time_budget_s,
                                                          memory_limit_mb=self.tag.worker_memory_mb)
            except WorkerStartError as exc:
                self.stopped.add(name)
                kind = "crashed" if exc.reply.kind == "exception" else exc.reply.kind
                return {**row, "kind": kind, "where": "start", "message": str(exc), "traceback": exc.reply.traceback}
        op = "observe" if drun.keeps_state else "tag"
        part = batch.slice(a - unit["start"], b - a)
        part = PreviousLookup.columns_for(drun, part)
        reply = worker.call(op, part, self.tag.time_budget_s)
        out = None
        if reply.ok:
            try:
                out = ranged_output(drun, op, reply.value, part, self.run_id)
            except DetectorError as exc:
                reply = Reply(False, kind="invalid_output", message=str(exc), seconds=reply.seconds)
        if not reply.ok:
            if reply.kind in ("timeout", "crashed"):
                self.stopped.add(name)  # as locally: stopped for the run, the rest waits for the next one
            return {**row, "kind": reply.kind, "message": reply.message, "traceback": reply.traceback,
                    "seconds": reply.seconds}
        return {**row, "seconds": reply.seconds, "rows": None if out is None else _to_ipc(out)}


class RayTagPass(_TagPass):
    """A tag pass whose per-document and state-keeping detectors run on the Ray cluster ``connected`` joined."""

    def _local_detectors(self) -> list[DetectorRun]:
        return list(self.corpus)

    def _tag_files(self, files: list[str]) -> None:
        if self.ranged:
            self._distributed()
        super()._tag_files(files)  # stateless corpus detectors: the ranged have no worker here, so are left out

    def _units(self) -> list[dict]:
        """One unit per batch_size window of a document file with work in it; per detector, its pending ranges."""
        units = []
        size = self.tag.batch_size
        for path, entry in self.doc_entries.items():
            for lo in range(0, entry.rows, size):
                hi = min(lo + size, entry.rows)
                work = {}
                for name, (_drun, todo) in self.ranged.items():
                    ranges = [[max(lo, a), min(hi, b)] for a, b in todo.get(path, []) if a < hi and b > lo]
                    if ranges:
                        work[name] = ranges
                if work:
                    start, end = min(r[0] for v in work.values() for r in v), max(r[1] for v in work.values() for r in v)
                    units.append({"unit": len(units), "doc_file": path, "path": self._location(path),
                                  "start": start, "end": end, "work": json.dumps(work)})
        return units

    def _location(self, path: str) -> str:
        """Where workers read a store file (``path`` relative to the store): the store's absolute path, or with
        a stage its staged copy's s3:// URI (no query: the actors add the stage's)."""
        if self.tag.ray_stage:
            return objectstore.canonical(objectstore.join(self.tag.ray_stage, path))
        return str(self.store.root.resolve() / path)

    def _needs_previous(self) -> bool:
        return any("previous" in drun.spec.cls.needs for drun, _todo in self.ranged.values())

    def _stage(self, units: list[dict]) -> dict:
        """Copy what the units read to the stage: their document files, and for the earlier-version lookup every
        live document and fetch file. A file already there with the same size is not copied again."""
        from pyarrow import fs as pafs

        paths = {u["doc_file"] for u in units}
        if self._needs_previous():
            for kind in ("documents", "fetches"):
                paths.update(os.path.relpath(p, self.store.root) for p in self.snapshot.paths(kind))
        root = self.store.root

        def stage_one(path: str) -> int:
            uri = objectstore.join(self.tag.ray_stage, path)
            there = objectstore.info(uri)
            if there.type == pafs.FileType.File and there.size == (root / path).stat().st_size:
                return 0
            objectstore.upload(root / path, uri)
            return 1

        with ThreadPoolExecutor(STAGE_THREADS) as pool:
            copied = sum(pool.map(stage_one, sorted(paths)))
        _trace(f"ray: staged {copied} of {len(paths)} file(s) to {objectstore.canonical(self.tag.ray_stage)}")
        return {"stage": objectstore.canonical(self.tag.ray_stage), "staged_files": len(paths),
                "staged_copied": copied}

    def _distributed(self) -> None:
        units = self._units()
        if units:
            staged = self._stage(units) if self.tag.ray_stage else {}
            with connected(self.tag.ray_address) as ray:
                self._map_units(ray, units)
            self.summary.engine.update(staged)

    def _map_units(self, ray, units: list[dict]) -> None:
        ranged = [drun for drun, _todo in self.ranged.values()]
        needs_previous = any("previous" in d.spec.cls.needs for d in ranged)
        detectors = [{"name": d.name, "options": d.options, "tag_key": d.tag_key} for d in ranged]
        actors = max(1, min(len(units), int(ray.cluster_resources().get("CPU", 1))))
        ray.data.DataContext.get_current().enable_progress_bars = False  # the command has its own
        dataset = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
            _UnitTagger, batch_size=1, batch_format="pyarrow", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            fn_constructor_kwargs={"detectors": detectors, "run_id": self.run.run_id, "tag": self.tag,
                                   "previous_paths": ([self._location(self._relative(p))
                                                       for p in self.snapshot.paths("documents")]
                                                      if needs_previous else None),
                                   "previous_fetch_paths": [self._location(self._relative(p))
                                                            for p in self.snapshot.paths("fetches")]})
        # What is still out: result rows per unit, units per file; a file is committed when its last unit is in.
        expected = {u["unit"]: sum(len(r) for r in json.loads(u["work"]).values()) for u in units}
        unit_rows = {u["unit"]: u["end"] - u["start"] for u in units}
        units_left: dict[str, int] = defaultdict(int)
        for u in units:
            units_left[u["doc_file"]] += 1
        pending = {path: _Uncommitted() for path in units_left}
        pids, nodes = set(), set()
        _trace(f"ray: {len(units)} unit(s) over at most {actors} actor(s)")
        try:
            for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for result in block.to_pylist():
                    path = result["doc_file"]
                    pids.add(result["pid"])
                    nodes.add(result["node_id"])
                    self._take(result, pending[path])
                    expected[result["unit"]] -= 1
                    if expected[result["unit"]]:
                        continue
                    pending[path].rows += unit_rows[result["unit"]]
                    if self.progress:
                        self.progress(unit_rows[result["unit"]])
                    units_left[path] -= 1
                    if not units_left[path] or pending[path].due(self.tag):
                        self._commit(self.doc_entries[path], pending[path].take())
                for path, work in pending.items():  # commit_seconds, for files whose units are slow to come
                    if units_left[path] and (work.done or work.errors) and work.due(self.tag):
                        self._commit(self.doc_entries[path], work.take())
        except BaseException:
            # Ctrl-C or a cluster failure: keep every result that came back (each with its coverage), then stop.
            for path, work in pending.items():
                if work.done or work.errors:
                    self._commit(self.doc_entries[path], work.take())
            raise
        self.summary.engine = {"name": "ray", "address": self.tag.ray_address, "driver_pid": os.getpid(),
                               "units": len(units), "actors": actors, "worker_pids": sorted(pids),
                               "nodes": sorted(nodes)}

    def _relative(self, path) -> str:
        return os.path.relpath(path, self.store.root)

    def _take(self, result: dict, pending: _Uncommitted) -> None:
        """One result row into the file's uncommitted work and the detector's stats, as the local engine does."""
        name, kind = result["detector"], result["kind"]
        if kind == "skipped":
            return
        drun, stat = self.ranged[name][0], self.stats[name]
        lo, hi = result["start"], result["end"]
        stat.seconds += result["seconds"] or 0.0
        out = None
        if kind is None and result["rows"] is not None:
            out = _from_ipc(result["rows"])
            if drun.keeps_state:
                try:
                    self._check_state_schema(drun, out)
                except DetectorError as exc:
                    kind, result = "invalid_output", {**result, "message": str(exc), "traceback": None}
        if kind is not None:
            at_start = result["where"] == "start"
            if at_start and any(f["where"] == "start" for f in stat.faults):
                return  # every actor reports it; one errors row says it
            where = "start" if at_start else f"{result['doc_file']}[{lo}:{hi}]"
            reply = Reply(False, kind=kind, message=result["message"], traceback=result["traceback"])
            _trace(f"{name} {where} -> {kind}: {result['message']}")
            pending.errors.append(_error_row(self.run.run_id, drun, reply, *(
                (None, None, None) if at_start else (result["doc_file"], lo, hi))))
            _fault(stat, kind, result["message"], where)
            if at_start or kind in ("timeout", "crashed"):
                stat.status = "stopped"
            return
        if not drun.keeps_state and out is not None:
            stat.tags += out.num_rows
        pending.done[name].append((lo, hi, out))
        stat.batches += 1
        stat.rows += hi - lo
