"""The example external plugin (examples/provenance-shouting), installed the way a user installs one.

It is pip-installed into a fresh environment (tests/plugin_venv.py), found
through its ``provenance.plugins`` entry point, listed by ``provenance plugins``,
run by ``provenance tag`` and queried with SQL; a rerun does nothing and a new
release of the plugin re-tags.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
from conftest import builtin_detectors, builtin_plugins

from plugin_venv import REPO, PluginVenv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = REPO / "examples" / "provenance-shouting"

PAGES = [
    {"url": "https://forum.example.org/t/1", "text": "BUY NOW!!! LIMITED OFFER, CLICK HERE BEFORE IT IS GONE!!!"},
    {"url": "https://forum.example.org/t/2",
     "text": "WARNING: THIS THREAD IS CLOSED BY THE MODERATORS. Read the rules."},
    {"url": "https://example.org/river", "text": "The river bends twice before it reaches the old mill."},
    {"url": "https://example.org/bread", "text": "Good bread needs time more than skill."},
    {"url": "https://mirror.example.net/bread", "text": "Good bread needs time more than skill."},
    {"url": "https://example.org/ok", "text": "OK"},
]
SHOUTING_URLS = {"https://forum.example.org/t/1", "https://forum.example.org/t/2"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A fresh environment with provenance-shouting 0.1.0 installed."""
    root = tmp_path_factory.mktemp("example-plugin")
    venv = PluginVenv(root / "venv")
    venv.pip_install(EXAMPLE, copy_to=root / "src-0.1.0")
    venv.root = root
    return venv


def _query(env, store, sql):
    proc = env.provenance("query", "--store", store, "--format", "json", sql)
    return json.loads(proc.stdout)


def test_example_declares_the_quoted_entry_point_group():
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["provenance.plugins"] == {"shouting": "provenance_shouting"}
    assert meta["project"]["version"] == "0.1.0"


def test_plugins_lists_builtins_and_the_installed_example(env):
    listing = {p["name"]: p for p in json.loads(env.provenance("plugins", "--format", "json").stdout)}
    builtin = listing["exact_duplicate"]
    assert builtin["builtin"] is True and builtin["distribution"] == "provenance-guard"
    assert builtin["version"] and builtin["version"] != "0"
    shouting = listing["shouting"]
    assert shouting["builtin"] is False
    assert (shouting["distribution"], shouting["version"]) == ("provenance-shouting", "0.1.0")
    assert shouting["module"] == "provenance_shouting"
    assert shouting["hooks"] == ["register_commands", "register_detectors"]
    assert shouting["categories"] == ["quality"]
    assert [(d["name"], d["version"], d["category"], d["corpus_level"], d["needs"]) for d in shouting["detectors"]] \
        == [("shouting", "1", "quality", False, ["text"])]
    assert shouting["detectors"][0]["options"] == {"min_fraction": 0.6, "min_letters": 12}

    table = env.provenance("plugins").stdout
    assert re.search(r"^shouting 0\.1\.0 \(provenance-shouting\)$", table, re.M)
    assert re.search(r"^exact_duplicate \S+ \(built-in\)$", table, re.M)

    only_commands = json.loads(env.provenance("plugins", "--format", "json", "--hook", "register_commands").stdout)
    assert [p["name"] for p in only_commands] == ["llm_ngram", "shouting"]  # llm_ngram: `train llm-ngram`


def test_load_plugins_switch_keeps_builtins(env):
    def names(value):
        proc = env.provenance("plugins", "--format", "json", env={"PROVENANCE_LOAD_PLUGINS": value})
        return sorted(p["name"] for p in json.loads(proc.stdout))

    assert names("") == builtin_plugins()
    assert names("shouting") == sorted([*builtin_plugins(), "shouting"])
    assert names("provenance-shouting") == sorted([*builtin_plugins(), "shouting"])  # the distribution name works too
    assert names("something-else") == builtin_plugins()


def test_hook_register_commands_from_an_installed_plugin(env):
    proc = env.provenance("shouting-score", "HELLO there")
    assert proc.stdout.strip() == "0.500 (10 letters)"
    assert "shouting-score" in env.provenance("--help").stdout
    # With the plugin switched off its command is gone too.
    off = env.provenance("shouting-score", "x", env={"PROVENANCE_LOAD_PLUGINS": ""}, check=2)
    assert "No such command" in off.stderr


def test_tag_query_rerun_and_version_bump(env, tmp_path):
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    store = tmp_path / "store"
    env.provenance("ingest", pages, "--store", store)

    # First run: both detectors, the example's through its entry point.
    first = json.loads(env.provenance("tag", "--store", store, "--json").stdout)
    assert first["errors"] == 0
    shout = first["detectors"]["shouting"]
    assert (shout["plugin"], shout["plugin_version"], shout["distribution"]) == \
        ("shouting", "0.1.0", "provenance-shouting")
    assert shout["status"] == "ok" and shout["rows"] == len(PAGES) and shout["tags"] == 2

    flagged = _query(env, store, "SELECT d.url, f.flags, f.quality_score FROM doc_flags f JOIN documents d "
                                 "USING (doc_id) WHERE list_contains(f.flags, 'quality:shouting') ORDER BY d.url")
    assert {r["url"] for r in flagged} == SHOUTING_URLS
    assert all(0.6 <= r["quality_score"] <= 1.0 for r in flagged)
    rows = _query(env, store, "SELECT plugin, plugin_version, detector, detector_version, config_hash, evidence "
                              "FROM tags WHERE detector = 'shouting'")
    assert len(rows) == 2
    assert {(r["plugin"], r["plugin_version"], r["detector_version"]) for r in rows} == {("shouting", "0.1.0", "1")}
    assert {r["config_hash"] for r in rows} == {shout["config_hash"]}
    assert all(set(json.loads(r["evidence"])) == {"upper_fraction", "letters"} for r in rows)
    dups = _query(env, store, "SELECT count(*) AS n FROM tags WHERE detector = 'exact_duplicate'")
    assert dups == [{"n": 1}]

    # The export manifest names exactly the detectors that vetted the kept documents.
    out = tmp_path / "export"
    env.provenance("export", "--store", store, "--out", out)
    manifest = json.loads((out / "manifest.json").read_text())
    vetted = {d["detector"]: d for d in manifest["detectors"]}
    assert set(vetted) == {*builtin_detectors(), "shouting"}
    assert (vetted["shouting"]["plugin"], vetted["shouting"]["plugin_version"]) == ("shouting", "0.1.0")
    assert vetted["shouting"]["covers_all_kept"] is True

    # Nothing changed: nothing is done and no tag row is written.
    n_tag_files = len(list((store / "tags").rglob("*.parquet")))
    again = json.loads(env.provenance("tag", "--store", store, "--json").stdout)
    assert again["tags"] == 0
    assert {d["status"] for d in again["detectors"].values()} == {"up_to_date"}
    assert len(list((store / "tags").rglob("*.parquet"))) == n_tag_files
    assert _query(env, store, "SELECT count(*) AS n FROM tags WHERE detector IN "
                              "('shouting', 'exact_duplicate', 'near_duplicate')") == [{"n": 4}]  # 2, 1 and 1

    # A new release of the plugin: same code, version 0.2.0. Its detector re-tags everything.
    src = env.root / "src-0.2.0"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    env.pip_install(src)
    listing = {p["name"]: p for p in json.loads(env.provenance("plugins", "--format", "json").stdout)}
    assert listing["shouting"]["version"] == "0.2.0"

    bumped = json.loads(env.provenance("tag", "--store", store, "--json").stdout)
    assert bumped["detectors"]["shouting"]["status"] == "ok"
    assert bumped["detectors"]["shouting"]["rows"] == len(PAGES)
    assert bumped["detectors"]["shouting"]["plugin_version"] == "0.2.0"
    assert bumped["detectors"]["exact_duplicate"]["status"] == "up_to_date"
    live = _query(env, store, "SELECT plugin_version, run_id, count(*) AS n FROM tags WHERE detector = 'shouting' "
                              "GROUP BY ALL")
    assert live == [{"plugin_version": "0.2.0", "run_id": bumped["run_id"], "n": 2}]
    flagged_after = _query(env, store, "SELECT count(*) AS n FROM doc_flags "
                                       "WHERE list_contains(flags, 'quality:shouting')")
    assert flagged_after == [{"n": 2}]

    # And the new version is itself idempotent.
    assert json.loads(env.provenance("tag", "--store", store, "--json").stdout)["tags"] == 0
