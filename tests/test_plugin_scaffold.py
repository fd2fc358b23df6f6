"""`provenance plugin new NAME`: the generated package installs, is discovered, and its own tests pass."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import builtin_detectors, builtin_plugins

from plugin_venv import PluginVenv
from provenance.scaffold import ScaffoldError, new_plugin, plugin_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_names_derived_from_name():
    names = plugin_names("short-text")
    assert names == {"name": "short-text", "distribution": "provenance-short-text", "module": "provenance_short_text",
                     "entry_point": "short_text", "detector": "short_text", "class_name": "ShortText",
                     "title": "Short text"}
    assert plugin_names("short_text")["distribution"] == "provenance-short-text"


@pytest.mark.parametrize("bad", ["", "Bad", "two words", "1abc", "a--b", "trailing-", "provenance-x", "with.dot",
                                 "class", "x" * 41, "ünïcode"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ScaffoldError, match="invalid plugin name"):
        plugin_names(bad)


def test_cli_refuses_bad_name_and_existing_directory(cli, tmp_path):
    proc = cli("plugin", "new", "Not Valid", "--dir", tmp_path, check=2)
    assert "invalid plugin name 'Not Valid'" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    cli("plugin", "new", "dupe", "--dir", tmp_path, check=0)
    before = (tmp_path / "provenance-dupe" / "provenance_dupe" / "__init__.py").read_text()
    proc = cli("plugin", "new", "dupe", "--dir", tmp_path, check=2)
    assert "already exists" in proc.stderr
    assert (tmp_path / "provenance-dupe" / "provenance_dupe" / "__init__.py").read_text() == before


def test_generated_package_layout(cli, tmp_path):
    proc = cli("plugin", "new", "short-text", "--dir", tmp_path, check=0)
    root = tmp_path / "provenance-short-text"
    assert str(root) in proc.stdout
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [".gitignore", "README.md", "provenance_short_text/__init__.py", "pyproject.toml",
                     "tests/test_short_text.py"]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "provenance-short-text"
    assert meta["project"]["version"] == "0.1.0"
    # Quoted in the file, so TOML reads one group named "provenance.plugins", not nested tables.
    assert '[project.entry-points."provenance.plugins"]' in (root / "pyproject.toml").read_text()
    assert meta["project"]["entry-points"]["provenance.plugins"] == {"short_text": "provenance_short_text"}
    module = (root / "provenance_short_text" / "__init__.py").read_text()
    assert "@provenance.hookimpl\ndef register_detectors(register):" in module
    assert "from provenance.testing import" in (root / "tests" / "test_short_text.py").read_text()


def test_generated_plugin_installs_lists_and_passes_its_own_tests(tmp_path):
    root = new_plugin("word-count", tmp_path / "src")
    venv = PluginVenv(tmp_path / "venv")
    venv.pip_install(root)

    listing = {p["name"]: p for p in json.loads(venv.provenance("plugins", "--format", "json").stdout)}
    assert {"exact_duplicate", "word_count"} <= set(listing)
    plugin = listing["word_count"]
    assert (plugin["distribution"], plugin["version"], plugin["builtin"]) == ("provenance-word-count", "0.1.0", False)
    assert plugin["hooks"] == ["register_detectors"]
    assert [d["name"] for d in plugin["detectors"]] == ["word_count"]

    # Its own generated tests, through provenance.testing and the pytest11 fixtures.
    proc = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests"), cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout

    # And it runs under `provenance tag` like any installed plugin.
    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"url": "https://example.org/a", "text": "Short."}) + "\n"
                     + json.dumps({"url": "https://example.org/b", "text": "Long enough. " * 40}) + "\n")
    store = tmp_path / "store"
    venv.provenance("ingest", pages, "--store", store)
    venv.provenance("tag", "--store", store, "--plugins", "word_count")
    rows = json.loads(venv.provenance("query", "--store", store, "--format", "json",
                                      "SELECT d.url, t.tag, t.plugin, t.plugin_version FROM tags t "
                                      "JOIN documents d USING (doc_id)").stdout)
    assert rows == [{"url": "https://example.org/a", "tag": "short_text", "plugin": "word_count",
                     "plugin_version": "0.1.0"}]


def test_installed_plugin_with_a_wrong_hook_signature_fails_at_load_and_can_be_switched_off(tmp_path):
    root = new_plugin("broken-sig", tmp_path / "src")
    module = root / "provenance_broken_sig" / "__init__.py"
    module.write_text(module.read_text().replace("def register_detectors(register):",
                                                 "def register_detectors(register, conf):"))
    venv = PluginVenv(tmp_path / "venv")
    venv.pip_install(root)

    proc = venv.provenance("plugins", check=1)
    assert "plugin 'broken_sig' (provenance-broken-sig)" in proc.stderr
    assert "register_detectors" in proc.stderr and "conf" in proc.stderr and "Traceback" not in proc.stderr
    store = tmp_path / "store"
    pages = tmp_path / "pages.jsonl"
    pages.write_text(json.dumps({"url": "https://example.org/a", "text": "Some text."}) + "\n")
    # Commands that need no plugins still work, with a warning naming the plugin.
    proc = venv.provenance("ingest", pages, "--store", store, check=0)
    assert "provenance: warning: plugin 'broken_sig'" in proc.stderr
    venv.provenance("tag", "--store", store, check=1)
    # The escape hatch: no third-party plugins, built-ins still there.
    off = {"PROVENANCE_LOAD_PLUGINS": ""}
    listing = json.loads(venv.provenance("plugins", "--format", "json", env=off).stdout)
    assert [p["name"] for p in listing] == builtin_plugins()
    summary = json.loads(venv.provenance("tag", "--store", store, "--json", env=off).stdout)
    assert set(summary["detectors"]) == builtin_detectors()
