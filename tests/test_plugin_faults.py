"""Isolation: a plugin's faults become error records, never a failed run or a damaged store.

Every test drives the real `provenance` command in a subprocess over a real store.
"""

from __future__ import annotations

import json
import textwrap
import time

import pyarrow.parquet as pq
import pytest

from provenance.sql import connect
from provenance.store import Store
from provenance.testing import make_store

@pytest.fixture(autouse=True)
def _only_builtin_entry_points(monkeypatch):
    """Third-party plugins installed in this environment stay out of these tests."""
    monkeypatch.setenv("PROVENANCE_LOAD_PLUGINS", "")
    monkeypatch.delenv("PROVENANCE_PLUGIN_MODULES", raising=False)
    monkeypatch.delenv("PROVENANCE_TRACE_PLUGINS", raising=False)


N_DOCS = 40
BATCH = 4  # -> 10 batches; the flaky detector fails batches 3, 6 and 9

FAULTY = '''
import os
import time

import provenance


class Good(provenance.Detector):
    """One tag per document."""
    name = "good"
    version = "1"
    category = "quality"
    needs = ("text",)

    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "seen", score=0.5)


class Flaky(provenance.Detector):
    """Raises on every third batch it is given (unless FLAKY_FIXED is set)."""
    name = "flaky"
    version = "1"
    needs = ("text",)

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = 0

    def tag_batch(self, batch):
        self.calls += 1
        if os.environ.get("FLAKY_HANGS"):
            time.sleep(600)
        if self.calls % 3 == 0 and not os.environ.get("FLAKY_FIXED"):
            raise RuntimeError(f"flaky fails on call {self.calls}")
        return self.tags(batch.column("doc_id"), "flaky_seen")


class Hang(provenance.Detector):
    """Never answers."""
    name = "hang"
    version = "1"
    needs = ()

    def tag_batch(self, batch):
        while True:
            time.sleep(60)


@provenance.hookimpl
def register_detectors(register):
    register(Good)
    register(Flaky)
    register(Hang)
'''


def _store(tmp_path, n=N_DOCS):
    docs = [{"url": f"https://example.org/{i}", "text": f"Document {i} says something different."} for i in range(n)]
    return make_store(tmp_path / "store", docs).root


def _write(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def _sql(store, sql):
    con = connect(store)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_exceptions_and_a_hung_plugin_are_recorded_and_the_run_finishes(cli, tmp_path):
    store = _store(tmp_path)
    plugin = _write(tmp_path, "faulty", FAULTY)
    started = time.monotonic()
    # Only the plugin's detectors and one built-in: with every built-in beside them, a loaded machine can keep
    # the good detector's worker off the CPU for its whole 2 s budget.
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", "faulty,exact_duplicate",
               "--batch-size", BATCH, "--time-budget", 2, "--json", check=3)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"the hung detector held the run for {elapsed:.0f} s"
    summary = json.loads(proc.stdout)
    det = summary["detectors"]

    # The well-behaved detectors are complete: one tag per document, no faults.
    assert (det["good"]["status"], det["good"]["rows"], det["good"]["tags"], det["good"]["errors"]) == \
        ("ok", N_DOCS, N_DOCS, 0)
    assert det["exact_duplicate"]["status"] == "ok" and det["exact_duplicate"]["errors"] == 0
    assert _sql(store, "SELECT count(*), count(DISTINCT doc_id) FROM tags WHERE detector = 'good'") == \
        [(N_DOCS, N_DOCS)]

    # Flaky: batches 3, 6, 9 failed; the other 7 batches are tagged.
    flaky = det["flaky"]
    assert (flaky["status"], flaky["errors"], flaky["rows"], flaky["pending"]) == ("partial", 3, 28, 12)
    assert [f["kind"] for f in flaky["faults"]] == ["exception"] * 3
    assert _sql(store, "SELECT count(*) FROM tags WHERE detector = 'flaky'") == [(28,)]

    # Hang: stopped by the time budget, recorded, everything left for the next run.
    hang = det["hang"]
    assert (hang["status"], hang["errors"], hang["tags"], hang["pending"]) == ("stopped", 1, 0, N_DOCS)
    assert hang["faults"][0]["kind"] == "timeout"

    errors = _sql(store, "SELECT detector, plugin, kind, batch_start, batch_end, message, traceback, run_id "
                         "FROM errors ORDER BY detector, batch_start")
    assert [(e[0], e[1], e[2], e[3], e[4]) for e in errors] == [
        ("flaky", "faulty", "exception", 8, 12), ("flaky", "faulty", "exception", 20, 24),
        ("flaky", "faulty", "exception", 32, 36), ("hang", "faulty", "timeout", 0, 4)]
    for e in errors[:3]:
        assert e[5].startswith("RuntimeError: flaky fails on call")
        assert "Traceback" in e[6] and "faulty.py" in e[6] and "in tag_batch" in e[6]
    assert "time budget of 2 s" in errors[3][5]
    assert {e[7] for e in errors} == {summary["run_id"]}

    # The human summary on stderr reports both faults and where to read them.
    assert "exception x3" in proc.stderr and "timeout x1" in proc.stderr
    assert "stopped" in proc.stderr and "errors view" in proc.stderr
    assert "4 error(s)" in proc.stderr

    # The run record says partial; the store is intact and queryable.
    assert _sql(store, f"SELECT status FROM runs WHERE run_id = '{summary['run_id']}'") == [("partial",)]

    # Rerun with the flaky plugin fixed and the hung one disabled: only the failed batches are redone.
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--batch-size", BATCH, "--disable", "hang",
               "--json", env={"FLAKY_FIXED": "1"}, check=0)
    rerun = json.loads(proc.stdout)["detectors"]
    assert (rerun["flaky"]["status"], rerun["flaky"]["rows"], rerun["flaky"]["batches"], rerun["flaky"]["tags"]) == \
        ("ok", 12, 3, 12)
    assert rerun["good"]["status"] == "up_to_date" and rerun["exact_duplicate"]["status"] == "up_to_date"
    assert "hang" not in rerun
    assert _sql(store, "SELECT count(*), count(DISTINCT doc_id) FROM tags WHERE detector = 'flaky'") == \
        [(N_DOCS, N_DOCS)]

    # And again: nothing left to do, no new tag rows.
    before = _sql(store, "SELECT count(*) FROM tags")
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--disable", "hang", "--json", check=0)
    assert json.loads(proc.stdout)["tags"] == 0
    assert _sql(store, "SELECT count(*) FROM tags") == before


def test_a_time_out_costs_one_error_even_when_the_batch_held_several_pending_slices(cli, tmp_path):
    store = _store(tmp_path)
    plugin = _write(tmp_path, "faulty", FAULTY)
    args = ("tag", "--store", store, "--plugin-module", plugin, "--plugins", "flaky", "--json")
    cli(*args, "--batch-size", BATCH, check=3)  # leaves rows 8..12, 20..24 and 32..36 pending
    # One batch of 40 rows holds all three pending slices; the first call hangs and its worker is killed.
    proc = cli(*args, "--batch-size", 40, "--time-budget", 1, env={"FLAKY_HANGS": "1"}, check=3)
    flaky = json.loads(proc.stdout)["detectors"]["flaky"]
    assert (flaky["status"], flaky["errors"], flaky["pending"]) == ("stopped", 1, 12)
    assert [f["kind"] for f in flaky["faults"]] == ["timeout"]  # not two more "crashed" for the other slices
    # The slices it never answered are still pending: a fixed detector completes them.
    again = json.loads(cli(*args, env={"FLAKY_FIXED": "1"}, check=0).stdout)["detectors"]["flaky"]
    assert (again["rows"], again["pending"]) == (12, 0)


INVALID = '''
import pyarrow as pa
import provenance


class Base(provenance.Detector):
    version = "1"
    needs = ()


class ScoreOutOfRange(Base):
    name = "score_out_of_range"
    def tag_batch(self, batch):
        return [{"doc_id": batch.column("doc_id")[0].as_py(), "tag": "x", "score": 7.0}]


class UnknownDoc(Base):
    name = "unknown_doc"
    def tag_batch(self, batch):
        return self.tags(["not-a-document-of-this-batch"], "x")


class ExtraColumn(Base):
    name = "extra_column"
    def tag_batch(self, batch):
        return pa.table({"doc_id": batch.column("doc_id"), "tag": pa.repeat("x", batch.num_rows),
                         "sneaky": pa.repeat(1, batch.num_rows)})


class WrongType(Base):
    name = "wrong_type"
    def tag_batch(self, batch):
        return [{"doc_id": batch.column("doc_id")[0].as_py(), "tag": "x", "score": "high"}]


class NullTag(Base):
    name = "null_tag"
    def tag_batch(self, batch):
        return pa.table({"doc_id": batch.column("doc_id"), "tag": pa.nulls(batch.num_rows, pa.string())})


class NotRows(Base):
    name = "not_rows"
    def tag_batch(self, batch):
        return "everything is fine"


class Fine(Base):
    name = "fine"
    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "ok")


@provenance.hookimpl
def register_detectors(register):
    for cls in (ScoreOutOfRange, UnknownDoc, ExtraColumn, WrongType, NullTag, NotRows, Fine):
        register(cls)
'''


def test_output_that_breaks_the_tags_schema_is_refused_and_nothing_of_it_stored(cli, tmp_path):
    store = _store(tmp_path, n=6)
    plugin = _write(tmp_path, "invalid", INVALID)
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem, "--json", check=3)
    det = json.loads(proc.stdout)["detectors"]
    bad = ["extra_column", "not_rows", "null_tag", "score_out_of_range", "unknown_doc", "wrong_type"]
    for name in bad:
        assert (det[name]["tags"], det[name]["errors"], det[name]["pending"]) == (0, 1, 6), name
        assert det[name]["faults"][0]["kind"] == "invalid_output", name
    assert det["fine"]["tags"] == 6 and det["fine"]["errors"] == 0

    assert _sql(store, "SELECT DISTINCT detector FROM tags") == [("fine",)]
    messages = dict(_sql(store, "SELECT detector, message FROM errors WHERE kind = 'invalid_output'"))
    assert sorted(messages) == bad
    assert "scores must lie in [0, 1]" in messages["score_out_of_range"]
    assert "not-a-document-of-this-batch" in messages["unknown_doc"]
    assert "sneaky" in messages["extra_column"]
    assert "score" in messages["wrong_type"]
    assert "tags.tag" in messages["null_tag"]
    assert "expected None, a list of dicts or a pyarrow Table" in messages["not_rows"]
    # Nothing was covered, so the next run tries them again.
    again = json.loads(cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem,
                           "--json", check=3).stdout)["detectors"]
    assert again["score_out_of_range"]["errors"] == 1 and again["fine"]["status"] == "up_to_date"


CRASHY = '''
import os
import provenance


class Crash(provenance.Detector):
    name = "crash"
    version = "1"
    needs = ()
    def tag_batch(self, batch):
        os._exit(7)


class NoStart(provenance.Detector):
    name = "no_start"
    version = "1"
    needs = ()
    def __init__(self, **options):
        raise RuntimeError("model weights not found")
    def tag_batch(self, batch):
        return None


class Chatty(provenance.Detector):
    name = "chatty"
    version = "1"
    needs = ()
    def tag_batch(self, batch):
        print("debug output from a detector")
        return self.tags(batch.column("doc_id"), "ok")


@provenance.hookimpl
def register_detectors(register):
    register(Crash)
    register(NoStart)
    register(Chatty)
'''


def test_crash_and_failed_start_are_recorded_and_prints_stay_off_stdout(cli, tmp_path):
    store = _store(tmp_path, n=5)
    plugin = _write(tmp_path, "crashy", CRASHY)
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem, "--json", check=3)
    summary = json.loads(proc.stdout)  # stdout is pure JSON: the detector's print went to stderr
    assert "debug output from a detector" in proc.stderr
    det = summary["detectors"]
    assert det["crash"]["status"] == "stopped" and det["crash"]["faults"][0]["kind"] == "crashed"
    assert "exit code 7" in det["crash"]["faults"][0]["message"]
    assert det["no_start"]["status"] == "stopped" and det["no_start"]["faults"][0]["where"] == "start"
    assert det["chatty"]["tags"] == 5
    errors = _sql(store, "SELECT detector, kind, message, traceback FROM errors ORDER BY detector")
    assert [(e[0], e[1]) for e in errors] == [("crash", "crashed"), ("no_start", "crashed")]
    assert "model weights not found" in errors[1][2] and "RuntimeError" in errors[1][3]


CORPUS = '''
import os
import provenance


class Clusters(provenance.CorpusDetector):
    name = "clusters"
    version = "1"
    category = "duplicate"
    needs = ("text_sha256",)

    def __init__(self, **options):
        super().__init__(**options)
        self.seen = []

    def observe(self, batch):
        if os.environ.get("OBSERVE_FAILS"):
            raise ValueError("cannot observe")
        self.seen.extend(batch.column("doc_id").to_pylist())

    def finish(self):
        if os.environ.get("FINISH_FAILS"):
            raise ValueError("cannot finish")
        if os.environ.get("FINISH_TAGS_A_STRANGER"):
            return [{"doc_id": "f" * 32, "tag": "clustered"}]
        return [{"doc_id": d, "tag": "clustered", "evidence": {"n": len(self.seen)}} for d in self.seen[:2]]


@provenance.hookimpl
def register_detectors(register):
    register(Clusters)
'''


@pytest.mark.parametrize("fault, where, kind", [("OBSERVE_FAILS", "documents/", "exception"),
                                                ("FINISH_FAILS", "finish", "exception"),
                                                ("FINISH_TAGS_A_STRANGER", "finish", "invalid_output")])
def test_corpus_detector_faults_keep_earlier_tags(cli, tmp_path, fault, where, kind):
    store = _store(tmp_path, n=6)
    plugin = _write(tmp_path, "corpus", CORPUS)
    args = ("tag", "--store", store, "--plugin-module", plugin, "--plugins", "clusters", "--batch-size", 3, "--json")
    first = json.loads(cli(*args, check=0).stdout)["detectors"]["clusters"]
    assert (first["status"], first["tags"]) == ("ok", 2)
    make_store(store, [{"url": "https://example.org/new", "text": "A new document arrives."}])
    proc = cli(*args, env={fault: "1"}, check=3)
    stats = json.loads(proc.stdout)["detectors"]["clusters"]
    assert stats["status"] == "stopped"
    assert any(f["kind"] == kind and (f["where"] or "").startswith(where) for f in stats["faults"])
    if fault == "FINISH_TAGS_A_STRANGER":  # finish() may tag the documents it observed, no others
        assert f"tagged doc_id '{'f' * 32}', which is not in the store's documents" in stats["faults"][0]["message"]
    # The earlier output stays live until a complete pass replaces it.
    assert _sql(store, "SELECT count(*), min(evidence) FROM tags WHERE detector = 'clusters'") == [(2, '{"n": 6}')]
    again = json.loads(cli(*args, check=0).stdout)["detectors"]["clusters"]
    assert (again["status"], again["tags"]) == ("ok", 2)
    assert _sql(store, "SELECT count(*), min(evidence) FROM tags WHERE detector = 'clusters'") == [(2, '{"n": 7}')]


# ----- faults at load time ----------------------------------------------------------------------
def test_wrong_hook_signature_fails_at_load_naming_the_plugin(cli, tmp_path):
    plugin = _write(tmp_path, "bad_signature", '''
        import provenance

        @provenance.hookimpl
        def register_detectors(register, conf):
            pass
    ''')
    for args in (("plugins",), ("tag", "--store", _store(tmp_path, n=1))):
        proc = cli(*args, "--plugin-module", plugin, check=1)
        assert "plugin 'bad_signature'" in proc.stderr
        assert "register_detectors" in proc.stderr and "conf" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_misspelled_hook_name_fails_via_check_pending(cli, tmp_path):
    plugin = _write(tmp_path, "typo", '''
        import provenance

        @provenance.hookimpl
        def register_detector(register):
            pass
    ''')
    proc = cli("plugins", "--plugin-module", plugin, check=1)
    assert "plugin 'typo' implements unknown hook 'register_detector'" in proc.stderr
    assert "misspelled" in proc.stderr and "register_detectors" in proc.stderr


def test_duplicate_detector_names_across_plugins_are_an_error(cli, tmp_path):
    body = '''
        import provenance

        class Twin(provenance.Detector):
            name = "twin"
            version = "1"
            def tag_batch(self, batch):
                return None

        @provenance.hookimpl
        def register_detectors(register):
            register(Twin)
    '''
    first, second = _write(tmp_path, "plugin_one", body), _write(tmp_path, "plugin_two", body)
    proc = cli("tag", "--store", _store(tmp_path, n=1), "--plugin-module", first, "--plugin-module", second, check=1)
    assert "detector name 'twin' is registered by both plugin 'plugin_one' and plugin 'plugin_two'" in proc.stderr


@pytest.mark.parametrize("body, message", [
    ("class X:\n    name = 'x'", "is not a subclass of provenance.Detector"),
    ("class X(provenance.Detector):\n    name = 'Bad-Name'\n    version = '1'", "must be snake_case"),
    ("class X(provenance.Detector):\n    name = 'x'", "version must be a non-empty string"),
    ("class X(provenance.Detector):\n    name = 'x'\n    version = '1'", "must implement tag_batch"),
    ("class X(provenance.Detector):\n    name = 'x'\n    version = '1'\n    needs = ('html',)\n"
     "    def tag_batch(self, b): return None", "needs unknown column(s) ['html']"),
    ("class X(provenance.CorpusDetector):\n    name = 'x'\n    version = '1'\n"
     "    def observe(self, b): pass", "must implement finish()"),
])
def test_unusable_detector_classes_are_refused_at_load(cli, tmp_path, body, message):
    plugin = tmp_path / "refused.py"
    plugin.write_text("import provenance\n\n" + body + "\n\n@provenance.hookimpl\n"
                      "def register_detectors(register):\n    register(X)\n")
    proc = cli("plugins", "--plugin-module", plugin, check=1)
    assert "plugin 'refused'" in proc.stderr and message in proc.stderr


def test_plugin_that_fails_to_import_is_named(cli, tmp_path):
    plugin = _write(tmp_path, "broken_import", "import no_such_module_anywhere\n")
    proc = cli("plugins", "--plugin-module", plugin, check=1)
    assert "'" + str(plugin) + "' failed to import" in proc.stderr and "no_such_module_anywhere" in proc.stderr


# ----- detectors whose needs differ, and a time-out part-way --------------------------------------
NEEDS = '''
import os
import time

import provenance


class Versions(provenance.Detector):
    """Tags documents that have an earlier version; with VERSIONS_HANG_FROM=k it hangs from its k-th call."""
    name = "versions"
    version = "1"
    category = "provenance"
    needs = ("previous",)

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = 0

    def tag_batch(self, batch):
        self.calls += 1
        hang_from = int(os.environ.get("VERSIONS_HANG_FROM", "0"))
        if hang_from and self.calls >= hang_from:
            time.sleep(600)
        changed = batch.column("previous_text").is_valid()
        return self.tags(batch.column("doc_id").filter(changed), "new_version")


class Length(provenance.Detector):
    """Reads only text, never previous_*."""
    name = "length"
    version = "1"
    needs = ("text",)

    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "measured")


@provenance.hookimpl
def register_detectors(register):
    register(Versions)
    register(Length)
'''


def _versioned_store(tmp_path, n_urls=12, rows_per_file=8):
    """2 * n_urls documents: a first version of each URL, then a second one pointing back to it."""
    from provenance.testing import make_document

    first = [make_document(i, url=f"https://example.org/{i}", text=f"Page {i}, first version.")
             for i in range(n_urls)]
    second = [make_document(n_urls + i, url=f"https://example.org/{i}", text=f"Page {i}, rewritten.",
                            previous_doc_id=doc["doc_id"]) for i, doc in enumerate(first)]
    store = make_store(tmp_path / "store", first + second, rows_per_file=rows_per_file).root
    return store, {d["doc_id"] for d in second}


def test_a_detector_needing_previous_that_is_up_to_date_does_not_break_the_others(cli, tmp_path):
    store, changed = _versioned_store(tmp_path)
    plugin = _write(tmp_path, "needs", NEEDS)
    args = ("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem, "--json")
    first = json.loads(cli(*args, "--plugins", "versions", check=0).stdout)["detectors"]
    assert first["versions"]["tags"] == len(changed)
    # versions has nothing left to do, length has every document: the files are read without previous_*.
    second = json.loads(cli(*args, check=0).stdout)["detectors"]
    assert second["versions"]["status"] == "up_to_date"
    assert (second["length"]["status"], second["length"]["rows"], second["length"]["tags"]) == ("ok", 24, 24)
    assert {r[0] for r in _sql(store, "SELECT doc_id FROM tags WHERE detector = 'versions'")} == changed


def test_a_detector_needing_previous_that_times_out_part_way_does_not_break_the_others(cli, tmp_path):
    store, changed = _versioned_store(tmp_path)  # 3 document files of 8 rows
    plugin = _write(tmp_path, "needs", NEEDS)
    args = ("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem, "--batch-size", 4,
            "--time-budget", 2, "--json")
    det = json.loads(cli(*args, env={"VERSIONS_HANG_FROM": "2"}, check=3).stdout)["detectors"]
    # Stopped on its second batch (rows 4..8 of the first file); the batch before it is kept.
    versions = det["versions"]
    assert (versions["status"], versions["rows"], versions["errors"], versions["pending"]) == ("stopped", 4, 1, 20)
    assert versions["faults"][0]["kind"] == "timeout" and versions["faults"][0]["where"].endswith("[4:8]")
    # The other detector read every file after that, without previous_* columns.
    assert (det["length"]["status"], det["length"]["rows"], det["length"]["errors"]) == ("ok", 24, 0)
    assert _sql(store, "SELECT kind, batch_start, batch_end FROM errors") == [("timeout", 4, 8)]

    # The rerun does only what versions left, and the result is complete.
    again = json.loads(cli(*args, check=0).stdout)["detectors"]
    assert (again["versions"]["rows"], again["versions"]["pending"]) == (20, 0)
    assert again["length"]["status"] == "up_to_date"
    assert {r[0] for r in _sql(store, "SELECT doc_id FROM tags WHERE detector = 'versions'")} == changed


# ----- memory -------------------------------------------------------------------------------------
LIMIT_MB = 256
MEMORY = f'''
import numpy as np
import pyarrow as pa

import provenance

LIMIT = {LIMIT_MB} * 2**20


class Hog(provenance.Detector):
    """Asks Arrow's allocator for twice the worker's memory limit when its batch holds a 'huge' document."""
    name = "hog"
    version = "1"
    needs = ("text",)

    def tag_batch(self, batch):
        if any("huge" in text for text in batch.column("text").to_pylist()):
            pa.allocate_buffer(2 * LIMIT)
        return self.tags(batch.column("doc_id"), "fits")


class Leaky(provenance.Detector):
    """Keeps 70 MB of numpy memory from every batch: the fourth call of a worker goes over 256 MB."""
    name = "leaky"
    version = "1"
    needs = ()

    def __init__(self, **options):
        super().__init__(**options)
        self.hoard = []

    def tag_batch(self, batch):
        self.hoard.append(np.ones(70 * 2**20 // 8))
        return self.tags(batch.column("doc_id"), "kept")


class BigModel(provenance.Detector):
    """Loads a 'model' twice the limit in __init__."""
    name = "big_model"
    version = "1"
    needs = ()

    def __init__(self, **options):
        super().__init__(**options)
        self.weights = np.zeros(2 * LIMIT // 8)

    def tag_batch(self, batch):
        return None


class Good(provenance.Detector):
    name = "good"
    version = "1"
    needs = ("text",)

    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "seen")


@provenance.hookimpl
def register_detectors(register):
    register(Hog)
    register(Leaky)
    register(BigModel)
    register(Good)
'''


def test_a_detector_over_its_memory_limit_is_stopped_recorded_and_the_run_goes_on(cli, tmp_path):
    docs = [{"url": f"https://example.org/{i}", "text": "a huge page" if i == 17 else f"Document {i}."}
            for i in range(N_DOCS)]
    store = make_store(tmp_path / "store", docs).root
    plugin = _write(tmp_path, "memory_hungry", MEMORY)
    (tmp_path / "provenance.toml").write_text(f"[tag]\nworker_memory_mb = {LIMIT_MB}\n")
    started = time.monotonic()
    # Only this plugin's detectors: near_duplicate's finish (DuckDB) needs more than the small limit set here.
    proc = cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", plugin.stem,
               "--batch-size", BATCH, "--json", cwd=tmp_path, check=3)
    assert time.monotonic() - started < 60
    det = json.loads(proc.stdout)["detectors"]

    # The 512 MB request failed at once, in the batch holding document 17 only; the rest is tagged. (Stored
    # files are in doc_id order: the batch is where document 17 landed.)
    [doc_file] = Store(store).snapshot().paths("documents")
    huge_row = pq.read_table(doc_file, columns=["text"]).column("text").to_pylist().index("a huge page")
    huge_batch = huge_row // int(BATCH) * int(BATCH)
    hog = det["hog"]
    assert (hog["status"], hog["rows"], hog["errors"], hog["pending"]) == ("partial", 36, 1, 4)
    assert hog["faults"][0]["kind"] == "memory" and \
        hog["faults"][0]["where"].endswith(f"[{huge_batch}:{huge_batch + int(BATCH)}]")
    # The leak fills the worker on its 4th batch; a fresh worker takes over and the run goes on.
    leaky = det["leaky"]
    assert [f["where"][-7:] for f in leaky["faults"]] == ["[12:16]", "[28:32]"]
    assert (leaky["status"], leaky["rows"], leaky["pending"]) == ("partial", 32, 8)
    assert (det["good"]["status"], det["good"]["rows"]) == ("ok", N_DOCS)
    # Loading a model bigger than the limit: stopped at start, with the reason.
    big = det["big_model"]
    assert (big["status"], big["pending"], big["faults"][0]["kind"], big["faults"][0]["where"]) == \
        ("stopped", N_DOCS, "memory", "start")

    errors = _sql(store, "SELECT detector, kind, batch_start, message, traceback FROM errors "
                         "WHERE detector <> 'big_model' ORDER BY 1, 3")
    assert [e[:3] for e in errors] == [("hog", "memory", huge_batch), ("leaky", "memory", 12), ("leaky", "memory", 28)]
    for e in errors:
        assert f"over the worker memory limit of {LIMIT_MB} MB" in e[3] and "MemoryError" in e[3]
    assert "ArrowMemoryError" in errors[0][3] and "allocate_buffer" in errors[0][4]
    assert "memory x1" in proc.stderr

    # Unlimited (0): the same run has no faults.
    (tmp_path / "provenance.toml").write_text("[tag]\nworker_memory_mb = 0\n")
    again = json.loads(cli("tag", "--store", store, "--plugin-module", plugin, "--plugins", "hog",
                           "--batch-size", BATCH, "--json", cwd=tmp_path, check=0).stdout)["detectors"]
    assert (again["hog"]["rows"], again["hog"]["errors"], again["hog"]["pending"]) == (4, 0, 0)


@pytest.mark.parametrize("line", ["commit_rows = -1", "commit_rows = 2.5", "commit_seconds = \"soon\"",
                                  "worker_memory_mb = true", "worker_memory_mb = -4096"])
def test_bad_commit_and_memory_settings_are_one_clear_line(cli, tmp_path, line):
    store = _store(tmp_path, n=1)
    (tmp_path / "provenance.toml").write_text(f"[tag]\n{line}\n")
    proc = cli("tag", "--store", store, cwd=tmp_path, check=2)
    key = line.split(" =")[0]
    assert proc.stderr.startswith("provenance: error: ") and f"{key}" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
