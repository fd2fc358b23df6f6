"""The plugin platform: listing, enable/disable, options and config hash, needs, env switches, the test kit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from conftest import builtin_detectors, builtin_plugins

import provenance
from provenance.pluginmanager import PluginLoadError, get_plugin_manager, load_plugin_modules
from provenance.runner import TagBatchFn, run_tag
from provenance.sql import connect
from provenance.store import Store
from provenance.testing import (DEFAULT_DOCS, DetectorFailed, DetectorsPlugin, make_batch, make_document,
                                make_store, plugin_manager_with, run_detector, run_detectors, tag_batch)

@pytest.fixture(autouse=True)
def _only_builtin_entry_points(monkeypatch):
    """Third-party plugins installed in this environment stay out of these tests."""
    monkeypatch.setenv("PROVENANCE_LOAD_PLUGINS", "")
    monkeypatch.delenv("PROVENANCE_PLUGIN_MODULES", raising=False)
    monkeypatch.delenv("PROVENANCE_TRACE_PLUGINS", raising=False)


LOCAL = '''
import json

import pyarrow as pa
import pyarrow.compute as pc

import provenance

__version__ = "2.5"


class Length(provenance.Detector):
    """Tags documents shorter than max_chars; evidence lists the columns it was given."""
    name = "length"
    version = "1"
    category = "quality"
    needs = ("text",)
    options = {"max_chars": 20, "label": "short"}

    def tag_batch(self, batch):
        n = pc.fill_null(pc.utf8_length(batch.column("text")), 0)
        hit = pc.less(n, self.options["max_chars"])
        cols = json.dumps(batch.schema.names)
        return self.tags(batch.column("doc_id").filter(hit), self.options["label"],
                         evidence=pa.repeat(cols, pc.sum(hit).as_py() or 0))


class Hosts(provenance.Detector):
    """Tags every document with its host; sees doc_id, domain and headers only."""
    name = "hosts"
    version = "1"
    category = "provenance"
    needs = ("domain", "headers")

    def tag_batch(self, batch):
        return self.tags(batch.column("doc_id"), "host", evidence=pa.repeat(json.dumps(batch.schema.names),
                                                                               batch.num_rows))


@provenance.hookimpl
def register_detectors(register):
    register(Length)
    register(Hosts)
'''


@pytest.fixture
def local_plugin(tmp_path):
    path = tmp_path / "local_checks.py"
    path.write_text(LOCAL)
    return path


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "store", DEFAULT_DOCS).root


def _sql(store, sql, params=None):
    con = connect(store)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _tag(cli, store, *args, check=0, env=None, cwd=None):
    proc = cli("tag", "--store", store, "--json", *args, check=check, env=env, cwd=cwd)
    return json.loads(proc.stdout)


# ----- listing --------------------------------------------------------------------------------
def test_plugins_lists_builtins_with_version_distribution_hooks_detectors(cli, local_plugin):
    listing = json.loads(cli("plugins", "--format", "json", "--plugin-module", local_plugin, check=0).stdout)
    by_name = {p["name"]: p for p in listing}
    builtin = by_name["exact_duplicate"]
    assert builtin["builtin"] is True
    assert (builtin["distribution"], builtin["version"]) == ("provenance-guard", provenance.__version__)
    assert builtin["module"] == "provenance.plugins.exact_duplicate"
    assert builtin["hooks"] == ["register_detectors"] and builtin["categories"] == ["duplicate"]
    assert builtin["detectors"][0] | {"options": None} == {
        "name": "exact_duplicate", "version": "1", "category": "duplicate", "corpus_level": True,
        "needs": ["text_sha256", "fetched_at", "domain", "text"], "options": None,
        "doc": "Byte-identical extracted text: every copy except the earliest is tagged."}
    local = by_name["local_checks"]
    assert (local["version"], local["distribution"], local["builtin"]) == ("2.5", None, False)
    assert local["categories"] == ["provenance", "quality"]
    assert [d["name"] for d in local["detectors"]] == ["hosts", "length"]
    assert local["detectors"][1]["options"] == {"max_chars": 20, "label": "short"}
    assert local["detectors"][1]["doc"].startswith("Tags documents shorter")
    assert listing[0]["name"] == builtin_plugins()[0]  # built-ins first

    table = cli("plugins", "--plugin-module", local_plugin, check=0).stdout
    assert f"exact_duplicate {provenance.__version__} (built-in)" in table
    assert "local_checks 2.5 (module local_checks)" in table
    assert "detector length v1 [quality] per-document; needs: text; options: max_chars=20, label='short'" in table


def test_plugins_hook_filter(cli, tmp_path, local_plugin):
    commands = tmp_path / "with_command.py"
    commands.write_text(COMMAND_PLUGIN)
    args = ("plugins", "--format", "json", "--plugin-module", local_plugin, "--plugin-module", commands)
    names = lambda *extra: [p["name"] for p in json.loads(cli(*args, *extra, check=0).stdout)]  # noqa: E731
    assert names() == [*builtin_plugins(), "local_checks", "with_command"]
    assert names("--hook", "register_detectors") == [*builtin_plugins(), "local_checks"]
    assert names("--hook", "register_commands") == ["llm_ngram", "with_command"]  # llm_ngram: `train llm-ngram`
    proc = cli("plugins", "--hook", "register_detector", check=2)
    assert "no such hook" in proc.stderr and "register_detectors" in proc.stderr


def test_load_plugins_env_keeps_builtins(cli):
    for value in ("", "nothing-installed-by-that-name"):
        listing = json.loads(cli("plugins", "--format", "json", env={"PROVENANCE_LOAD_PLUGINS": value},
                                 check=0).stdout)
        assert [p["name"] for p in listing] == builtin_plugins()
    pm = get_plugin_manager(third_party=False)
    assert [i.name for i in pm.plugin_infos()] == builtin_plugins()


def test_trace_plugins_env(cli, store, local_plugin):
    proc = cli("tag", "--store", store, "--plugin-module", local_plugin, "--plugins", "hosts",
               env={"PROVENANCE_TRACE_PLUGINS": "1"}, check=0)
    assert "[trace] loaded plugin exact_duplicate" in proc.stderr
    assert "[trace] register_detectors: plugin local_checks registered hosts v1" in proc.stderr
    # The runner reads only the columns the selected detectors need.
    assert "columns=['doc_id', 'domain', 'headers']" in proc.stderr
    assert "[trace] hosts tag documents/" in proc.stderr


# ----- hooks ----------------------------------------------------------------------------------
def test_hook_register_detectors(store):
    class Marker(provenance.Detector):
        name = "marker"
        version = "3"
        category = "other"
        needs = ()

        def tag_batch(self, batch):
            return self.tags(batch.column("doc_id"), "marked")

    class Plugin:
        @provenance.hookimpl
        def register_detectors(self, register):
            register(Marker)

    pm = get_plugin_manager()
    pm.register_plugin(Plugin(), "marker_plugin", "1.2.3", "provenance-marker")
    spec = pm.detectors()["marker"]
    assert (spec.cls, spec.plugin.name, spec.plugin.version, spec.plugin.distribution) == \
        (Marker, "marker_plugin", "1.2.3", "provenance-marker")
    summary = run_tag(Store.open(store), pm, _settings(isolation="inline"), enable=["marker"])
    assert summary.detectors["marker"].tags == len(DEFAULT_DOCS)
    rows = _sql(store, "SELECT DISTINCT plugin, plugin_version, detector, detector_version, config_hash FROM tags")
    assert rows == [("marker_plugin", "1.2.3", "marker", "3", Marker.config_hash({}))]
    pm.unregister_plugin("marker_plugin")
    assert "marker" not in pm.detectors()


COMMAND_PLUGIN = '''
import click
import provenance


@provenance.hookimpl
def register_commands(cli):
    @cli.command(name="hello-plugin")
    @click.argument("who")
    def hello(who):
        """Say hello (added by a plugin)."""
        click.echo(f"hello {who} from a plugin")
'''


def test_hook_register_commands(cli, tmp_path):
    plugin = tmp_path / "with_command.py"
    plugin.write_text(COMMAND_PLUGIN)
    env = {"PROVENANCE_PLUGIN_MODULES": str(plugin)}
    assert cli("hello-plugin", "world", env=env, check=0).stdout == "hello world from a plugin\n"
    assert "hello-plugin" in cli("--help", env=env, check=0).stdout
    assert "hello-plugin" not in cli("--help", check=0).stdout
    # A broken plugin does not stop the CLI from starting: a warning, then the built-in commands work.
    broken = tmp_path / "broken_cmd.py"
    broken.write_text("import provenance\n\n@provenance.hookimpl\ndef register_commands(cli, extra):\n    pass\n")
    proc = cli("plugins", "--format", "json", env={"PROVENANCE_PLUGIN_MODULES": str(broken)}, check=1)
    assert proc.stderr.startswith("provenance: warning: plugin 'broken_cmd'")


# ----- choosing detectors -------------------------------------------------------------------------
def test_enable_and_disable_per_run(cli, store, local_plugin):
    mod = ("--plugin-module", local_plugin)
    assert set(_tag(cli, store, *mod, "--plugins", "length")["detectors"]) == {"length"}
    # A plugin name selects all its detectors; --disable removes some.
    assert set(_tag(cli, store, *mod, "--plugins", "local_checks", "--disable", "length")["detectors"]) == {"hosts"}
    assert set(_tag(cli, store, *mod, "--disable", "local_checks")["detectors"]) == builtin_detectors()
    proc = cli("tag", "--store", store, *mod, "--plugins", "lenght", check=2)
    assert "no detector or plugin named 'lenght'" in proc.stderr and "length" in proc.stderr


def test_enable_and_disable_in_config(cli, store, local_plugin, tmp_path):
    config = tmp_path / "provenance.toml"
    config.write_text('[tag]\nenable = ["local_checks", "exact_duplicate"]\ndisable = ["hosts"]\n')
    summary = _tag(cli, store, "--plugin-module", local_plugin, cwd=tmp_path)
    assert set(summary["detectors"]) == {"exact_duplicate", "length"}
    config.write_text('[tag]\ndisable = ["exact_duplicate"]\n')
    summary = _tag(cli, store, "--plugin-module", local_plugin, "--config", config)
    assert set(summary["detectors"]) == builtin_detectors() - {"exact_duplicate"} | {"hosts", "length"}


# ----- options and the config hash ---------------------------------------------------------------
def test_options_are_validated_and_folded_into_the_config_hash(cli, store, local_plugin, tmp_path):
    config = tmp_path / "provenance.toml"
    run = lambda check=0: _tag(cli, store, "--plugin-module", local_plugin, "--plugins", "length",  # noqa: E731
                               "--config", config, check=check)

    config.write_text("[detectors.length]\nmax_chars = 20\n")
    first = run()["detectors"]["length"]
    assert first["options"] == {"max_chars": 20, "label": "short"} and first["tags"] == 1  # "Hi."
    assert run()["detectors"]["length"]["status"] == "up_to_date"

    config.write_text("[detectors.length]\nmax_chars = 60\nlabel = \"tiny\"\n")
    second = run()["detectors"]["length"]
    assert second["config_hash"] != first["config_hash"]
    assert second["status"] == "ok" and second["rows"] == len(DEFAULT_DOCS)  # re-tagged everything
    live = _sql(store, "SELECT DISTINCT tag, config_hash FROM tags WHERE detector = 'length'")
    assert live == [("tiny", second["config_hash"])]  # the old configuration's rows left the live set
    assert _sql(store, "SELECT count(*) FROM tags WHERE detector = 'length'")[0][0] == 3

    for bad, message in (("max_char = 20", "unknown option(s) ['max_char']; known: ['label', 'max_chars']"),
                         ("max_chars = \"twenty\"", "option 'max_chars' must be int, got 'twenty'"),
                         ("max_chars = true", "option 'max_chars' must be int, got True")):
        config.write_text(f"[detectors.length]\n{bad}\n")
        proc = cli("tag", "--store", store, "--plugin-module", local_plugin, "--config", config, check=2)
        assert "[detectors.length]" in proc.stderr and message in proc.stderr, proc.stderr
    # A detector's own validate_options (value checks) is honoured too.
    with pytest.raises(provenance.detectors.DetectorError, match="unknown option"):
        provenance.detectors.Detector.validate_options({"x": 1})


# ----- needs ----------------------------------------------------------------------------------
def test_detector_sees_only_doc_id_and_its_needs(store, local_plugin, cli):
    _tag(cli, store, "--plugin-module", local_plugin, "--plugins", "local_checks")
    seen = dict(_sql(store, "SELECT detector, any_value(evidence) FROM tags WHERE detector IN ('hosts', 'length') "
                            "GROUP BY 1"))
    assert json.loads(seen["hosts"]) == ["doc_id", "domain", "headers"]
    assert json.loads(seen["length"]) == ["doc_id", "text"]


def test_previous_need_adds_the_earlier_version_of_the_url(tmp_path):
    old = make_document(0, url="https://example.org/page", text="First version of the page.")
    new = make_document(1, url="https://example.org/page", text="Second version, rewritten.",
                        previous_doc_id=old["doc_id"])
    other = make_document(2, url="https://example.org/other", text="Unrelated.")
    # One document per file, so the earlier version lives in another file than the newer one.
    store = make_store(tmp_path / "store", [old, new, other], rows_per_file=1)

    class Changed(provenance.Detector):
        name = "changed"
        version = "1"
        category = "provenance"
        needs = ("text", "previous")

        def tag_batch(self, batch):
            changed = batch.column("previous_text").is_valid()
            evidence = [json.dumps({"columns": batch.schema.names, "before": b})
                        for b in batch.column("previous_text").filter(changed).to_pylist()]
            return self.tags(batch.column("doc_id").filter(changed), "content_changed", evidence=evidence)

    tags = run_detector(Changed, store).to_pylist()
    assert [t["doc_id"] for t in tags] == [new["doc_id"]]
    evidence = json.loads(tags[0]["evidence"])
    assert evidence["before"] == "First version of the page."
    assert evidence["columns"] == ["doc_id", "previous_doc_id", "text", "previous_text", "previous_text_sha256",
                                   "previous_raw_sha256", "previous_fetched_at", "previous_headers", "previous_url",
                                   "previous_raw", "previous_resolved_ip"]


# ----- the test kit -----------------------------------------------------------------------------
class Upper(provenance.Detector):
    name = "upper"
    version = "1"
    category = "quality"
    needs = ("text",)
    options = {"min_fraction": 0.5}

    def tag_batch(self, batch):
        import pyarrow.compute as pc

        text = pc.fill_null(batch.column("text"), "")
        letters = pc.utf8_length(pc.replace_substring_regex(text, r"[^\p{L}]", ""))
        upper = pc.utf8_length(pc.replace_substring_regex(text, r"[^\p{Lu}]", ""))
        frac = pc.divide(pc.cast(upper, pa.float64()), pc.max_element_wise(pc.cast(letters, pa.float64()), 1.0))
        hit = pc.greater_equal(frac, self.options["min_fraction"])
        return self.tags(batch.column("doc_id").filter(hit), "upper", score=frac.filter(hit))


def test_make_batch_and_make_document():
    batch = make_batch(["plain text", {"html": "<html><head><title>T</title></head><body><p>Body text here.</p>"
                                               "</body></html>", "url": "https://example.org/x"}])
    assert isinstance(batch, pa.RecordBatch) and batch.num_rows == 2
    assert batch.schema.names == provenance.schemas.load("documents").names
    row = batch.to_pylist()[1]
    assert row["title"] == "T" and "Body text here." in row["text"] and row["domain"] == "example.org"
    assert len(row["doc_id"]) == 32 and row["raw_sha256"]
    assert make_batch(["x"], needs=Upper.needs).schema.names == ["doc_id", "text"]
    assert make_document(3, text="x")["fetched_at"].isoformat() == "2024-01-01T00:00:03+00:00"
    with pytest.raises(ValueError, match="not documents columns"):
        make_batch(["x"], needs=("nope",))


def test_run_detector_goes_through_the_real_runner_in_both_isolations():
    docs = ["ALL CAPS HERE", "lower case here", "MiXeD"]
    process = run_detector(Upper, docs)
    inline = run_detector(Upper, docs, isolation="inline")
    assert process.column_names == provenance.schemas.load("tags").names
    key = ["doc_id", "tag", "score", "plugin", "plugin_version", "detector", "config_hash"]
    assert process.select(key).to_pylist() == inline.select(key).to_pylist()
    assert process.column("tag").to_pylist() == ["upper", "upper"]
    assert set(process.column("plugin").to_pylist()) == {"test_plugins"}  # named after the module
    assert run_detector(Upper, docs, options={"min_fraction": 0.9}).num_rows == 1
    # The pure batch function (what Ray Data would map) gives the same rows.
    pure = tag_batch(Upper, docs)
    assert pure.select(["doc_id", "tag", "score"]).to_pylist() == \
        process.select(["doc_id", "tag", "score"]).sort_by("doc_id").to_pylist()


def test_run_detector_reports_faults_with_the_traceback():
    class Broken(Upper):
        name = "broken"

        def tag_batch(self, batch):
            raise KeyError("no such thing")

    with pytest.raises(DetectorFailed, match=r"(?s)broken: exception.*KeyError.*in tag_batch"):
        run_detector(Broken, ["x"])
    result = run_detectors([Broken], ["x"], raise_on_error=False)
    assert result.tags.num_rows == 0
    assert result.errors.column("kind").to_pylist() == ["exception"]

    class Slow(Upper):
        name = "slow"

        def tag_batch(self, batch):
            import time

            time.sleep(30)

    result = run_detectors([Slow], ["x"], time_budget=0.5, raise_on_error=False)
    assert result.errors.column("kind").to_pylist() == ["timeout"]


def test_run_detector_on_a_store_is_idempotent(tmp_path):
    store = make_store(tmp_path / "store", ["ONE", "two", "THREE"])
    first = run_detectors([Upper], store)
    again = run_detectors([Upper], store)
    assert first.tags.num_rows == again.tags.num_rows == 2
    assert again.summary.detectors["upper"].status == "up_to_date"
    assert again.tags.to_pylist() == first.tags.to_pylist()


def test_corpus_detector_through_the_test_kit():
    from provenance.plugins.exact_duplicate import ExactDuplicate

    tags = run_detector(ExactDuplicate, DEFAULT_DOCS).to_pylist()
    assert len(tags) == 1 and tags[0]["plugin"] == "exact_duplicate"  # the built-in, as registered
    mirror = make_document(2, **DEFAULT_DOCS[2])["doc_id"]
    original = make_document(1, **DEFAULT_DOCS[1])["doc_id"]
    assert tags[0]["doc_id"] == mirror
    assert json.loads(tags[0]["evidence"])["kept_doc_id"] == original


def test_the_test_kit_stamps_the_entry_point_name_a_real_run_stamps(tmp_path, monkeypatch, cli):
    """An installed plugin (a real distribution on sys.path) whose entry-point name differs from its module."""
    site = tmp_path / "site"
    (site / "kit_demo_pkg").mkdir(parents=True)
    (site / "kit_demo_pkg" / "__init__.py").write_text(textwrap.dedent('''
        import provenance

        class KitDemo(provenance.Detector):
            name = "kit_demo"
            version = "1"
            needs = ("text",)

            def tag_batch(self, batch):
                return self.tags(batch.column("doc_id"), "seen")

        @provenance.hookimpl
        def register_detectors(register):
            register(KitDemo)
    '''))
    info = site / "kit_demo_pkg-2.5.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kit-demo-pkg\nVersion: 2.5.0\n")
    (info / "entry_points.txt").write_text("[provenance.plugins]\nkitdemo = kit_demo_pkg\n")
    monkeypatch.syspath_prepend(str(site))
    from kit_demo_pkg import KitDemo

    docs = ["One document.", "Another one."]
    kit = run_detector(KitDemo, docs)
    pure = tag_batch(KitDemo, docs)
    store = make_store(tmp_path / "store", docs).root
    cli("tag", "--store", store, "--plugins", "kit_demo", env={"PYTHONPATH": str(site),
                                                               "PROVENANCE_LOAD_PLUGINS": "kitdemo"}, check=0)
    real = _sql(store, "SELECT DISTINCT plugin, plugin_version FROM tags")
    assert real == [("kitdemo", "2.5.0")]  # the entry-point name, not the module kit_demo_pkg
    for tags in (kit, pure):
        assert set(zip(tags.column("plugin").to_pylist(), tags.column("plugin_version").to_pylist())) == set(real)


def test_plugin_manager_with_checks_plugins():
    pm = plugin_manager_with(Upper, DetectorsPlugin())
    assert "upper" in pm.detectors()
    assert {i.name for i in pm.plugin_infos()} >= {"exact_duplicate", "test_plugins", "DetectorsPlugin"}

    class Clash(Upper):
        pass  # same detector name as Upper, another class

    with pytest.raises(PluginLoadError, match="'upper' is registered by both"):
        plugin_manager_with(Upper, DetectorsPlugin(Clash)).detectors()


# ----- the pytest11 fixtures ----------------------------------------------------------------------
def test_fixtures_provenance_store_and_run_detector(provenance_store, run_detector):
    tags = run_detector(Upper, provenance_store, options={"min_fraction": 0.8})
    urls = dict(_sql(provenance_store.root, "SELECT doc_id, url FROM documents"))
    assert {urls[d] for d in tags.column("doc_id").to_pylist()} == {"https://example.org/forum/1"}


def test_fixture_provenance_pm_is_fresh_each_time(provenance_pm, provenance_docs):
    assert "exact_duplicate" in provenance_pm.detectors()
    provenance_pm.register_plugin(DetectorsPlugin(Upper), "temporary", "0", None)
    assert provenance_pm.detectors()["upper"].plugin.name == "temporary"
    assert provenance_docs == DEFAULT_DOCS and provenance_docs is not DEFAULT_DOCS


def test_fixture_provenance_pm_again(provenance_pm):
    assert "upper" not in provenance_pm.detectors()  # nothing leaked from the previous test


def test_pytest_plugin_imports_cheaply():
    code = ("import sys, provenance.pytest_plugin; "
            "heavy = [m for m in ('pyarrow', 'duckdb', 'click', 'provenance.detectors') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fixtures_work_in_a_plugin_authors_suite(tmp_path):
    """An unrelated project's pytest run: the fixtures are there, nothing else changes."""
    (tmp_path / "test_author.py").write_text(textwrap.dedent('''
        import provenance

        class Everything(provenance.Detector):
            name = "everything"
            version = "1"
            needs = ()

            def tag_batch(self, batch):
                return self.tags(batch.column("doc_id"), "seen")

        def test_with_fixtures(provenance_store, provenance_pm, run_detector):
            assert "exact_duplicate" in provenance_pm.detectors()
            assert run_detector(Everything, provenance_store).num_rows == 8

        def test_unrelated():
            assert 1 + 1 == 2
    '''))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def _settings(**tag):
    import copy

    from provenance import config

    settings = copy.deepcopy(config.DEFAULTS)
    settings["tag"].update(tag)
    return settings


def test_tag_batch_fn_is_a_pure_function_over_arrow(store):
    """TagBatchFn: what a Ray Data map_batches would call; same rows as the local runner."""
    pm = plugin_manager_with(Upper)
    from provenance.runner import select_detectors

    (drun,) = select_detectors(pm, _settings(), enable=["upper"])
    fn = TagBatchFn(drun, "ray-run")
    docs = _sql(store, "SELECT doc_id, text FROM documents ORDER BY doc_id")
    table = pa.table({"doc_id": [d for d, _ in docs], "text": [t for _, t in docs]})
    out = fn(table)
    assert out.schema == provenance.schemas.load("tags").arrow
    assert set(out.column("run_id").to_pylist()) == {"ray-run"}
    run_tag(Store.open(store), pm, _settings(isolation="inline"), enable=["upper"])
    stored = _sql(store, "SELECT doc_id, score FROM tags WHERE detector = 'upper' ORDER BY doc_id")
    assert sorted(zip(out.column("doc_id").to_pylist(), out.column("score").to_pylist())) == stored


# ----- a plugin file never shadows a standard module -----------------------------------------------
@pytest.mark.parametrize("stem", ["json", "email"])
def test_a_plugin_file_named_like_a_standard_module_does_not_replace_it(tmp_path, stem):
    import importlib

    standard = importlib.import_module(stem)
    path = tmp_path / f"{stem}.py"
    path.write_text(LOCAL)  # which itself imports json: it must get the standard one
    pm = get_plugin_manager()
    try:
        load_plugin_modules(pm, [str(path)])
        assert sys.modules[stem] is standard
        assert pm.has_plugin(stem) and {"length", "hosts"} <= set(pm.detectors())
        assert pm.infos[stem].module == stem
        load_plugin_modules(pm, [str(path)])  # named twice (flag and environment): loaded once
    finally:
        pm.unregister_plugin(stem)


def test_a_plugin_file_named_json_py_through_the_cli(cli, store, tmp_path):
    plugin = tmp_path / "json.py"
    plugin.write_text(LOCAL)
    summary = _tag(cli, store, "--plugin-module", plugin, "--plugins", "json")  # --json output uses json
    assert set(summary["detectors"]) == {"length", "hosts"}


def test_exact_duplicate_groups_by_the_stored_hash_value_across_state_files(tmp_path):
    """exact_duplicate's state rows are grouped by the text_sha256 value as stored, so groups are exactly the equal
    values (upper case, not hex, across state files); the earliest copy is kept, evidence names the stored value,
    and min_chars applies in finish (the state holds every length)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from provenance.detectors import CorpusState
    from provenance.plugins.exact_duplicate import ExactDuplicate
    from provenance.testing import make_batch

    canonical = "ab" * 32
    values = [canonical, "AB" * 32, "not-a-digest", canonical, "AB" * 32, "not-a-digest", "cd" * 32, "ef" * 32,
              "ef" * 32]
    texts = [f"text {i}" for i in range(7)] + ["x", "y"]  # the last two: one character each
    docs = [{"url": f"https://s{i}.org/", "text": text, "fetched_at": f"2020-01-0{i + 1}T00:00:00Z"}
            for i, text in enumerate(texts)]

    def batch(rows, shas):
        b = make_batch(rows, ExactDuplicate.needs)
        return b.set_column(b.schema.get_field_index("text_sha256"), "text_sha256", pa.array(shas, pa.string()))

    detector = ExactDuplicate()
    files = []
    for i, (lo, hi) in enumerate(((0, 3), (3, 9))):
        files.append(str(tmp_path / f"state-{i}.parquet"))
        pq.write_table(detector.observe(batch(docs[lo:hi], values[lo:hi])), files[-1])

    def found(options):
        tags = list(ExactDuplicate(**options).finish(CorpusState(state_files=files, scratch_dir=str(tmp_path))))
        return {t["doc_id"]: json.loads(t["evidence"]) for part in tags for t in part.to_pylist()}

    ids = [make_document(i, **d)["doc_id"] for i, d in enumerate(docs)]
    assert set(found({})) == {ids[3], ids[4], ids[5], ids[8]}
    assert set(found({"min_chars": 2})) == {ids[3], ids[4], ids[5]}
    for copy, kept in ((3, 0), (4, 1), (5, 2)):
        assert found({})[ids[copy]] == {"text_sha256": values[kept], "kept_doc_id": ids[kept], "group_size": 2,
                                        "n_domains": 2}


def test_exact_duplicate_through_the_runner_keeps_the_earliest_of_each_group_and_is_incremental(tmp_path):
    """Through the real runner, in batches that split the groups: every copy but the earliest (fetched_at, then
    doc_id) of each text is tagged, with its group's size and domains; documents added later are observed
    alone and finish regroups everything."""
    import random

    from provenance.plugins.exact_duplicate import ExactDuplicate
    from provenance.store import Store
    from provenance.testing import make_store, run_detector

    rng = random.Random(7)
    docs = [{"url": f"https://s{rng.randrange(5)}.org/p{i}", "text": f"text number {rng.randrange(40)}",
             "fetched_at": f"2021-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T00:00:00Z"} for i in range(300)]

    def expected(rows):
        made = [make_document(i, **d) for i, d in enumerate(rows)]
        groups = {}
        for d in made:
            groups.setdefault(d["text_sha256"], []).append(d)
        want = {}
        for members in groups.values():
            members.sort(key=lambda d: (d["fetched_at"], d["doc_id"]))
            for d in members[1:]:
                want[d["doc_id"]] = {"kept_doc_id": members[0]["doc_id"], "group_size": len(members),
                                     "n_domains": len({m["domain"] for m in members})}
        return want

    def got(store):
        tags = run_detector(ExactDuplicate, store, batch_size=37).to_pylist()
        return {t["doc_id"]: {k: v for k, v in json.loads(t["evidence"]).items() if k != "text_sha256"}
                for t in tags}

    store = make_store(tmp_path / "store", docs[:200])
    assert got(store) == expected(docs[:200])
    make_store(tmp_path / "store", docs[200:])  # a second ingest into the same store
    assert got(Store.open(tmp_path / "store")) == expected(docs)
