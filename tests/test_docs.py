"""docs/PLUGINS.md stays true: every hook documented with its exact signature, every hook tested,
and the worked example runs and gives the output the page shows."""

from __future__ import annotations

import inspect
import json
import re
import types
from pathlib import Path

import pytest

import provenance
from provenance import hookspecs, schemas, testing
from provenance.pluginmanager import get_plugin_manager

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "PLUGINS.md").read_text()
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if getattr(fn, "provenance_spec", None) is not None]


def test_hookspecs_are_found():
    assert HOOKS == sorted(get_plugin_manager(load_entrypoints=False).hook_names())
    assert "register_detectors" in HOOKS and "register_commands" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature(hook):
    fn = getattr(hookspecs, hook)
    signature = f"{hook}({', '.join(inspect.signature(fn).parameters)})"
    assert f"### `{signature}`" in DOC, f"docs/PLUGINS.md needs a section headed ### `{signature}`"
    assert fn.__doc__ and fn.__doc__.strip(), f"hookspec {hook} needs a docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    sources = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    assert re.search(rf"^def test_hook_{hook}\b", sources, re.M), f"no test_hook_{hook} in tests/"


def test_the_detector_api_and_the_test_kit_are_documented():
    for attribute in ("name", "version", "category", "needs", "options"):
        assert f"| `{attribute}`" in DOC
    for method in ("tag_batch", "observe", "finish", "validate_options", "self.tags("):
        assert method in DOC
    for helper in testing.__all__:
        if helper not in ("DEFAULT_DOCS", "TagResult", "DetectorFailed", "make_documents"):
            assert f"`{helper}(" in DOC, f"provenance.testing.{helper} is not documented"
    for fixture in ("provenance_docs", "provenance_store", "provenance_pm", "run_detector"):
        assert f"| `{fixture}` |" in DOC
    kinds = re.findall(r"\w+", schemas.load("errors").docs["kind"])
    assert kinds == ["exception", "timeout", "crashed", "memory", "invalid_output"]
    for kind in kinds:
        assert f"| `{kind}` |" in DOC
    for column in schemas.load("errors").names:  # the errors view, column by column
        assert f"| `{column}` |" in DOC, f"docs/PLUGINS.md does not describe errors.{column}"
    assert '[project.entry-points."provenance.plugins"]' in DOC
    for switch in ("PROVENANCE_LOAD_PLUGINS", "PROVENANCE_TRACE_PLUGINS", "PROVENANCE_PLUGIN_MODULES"):
        assert switch in DOC


def _worked_example() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    (source,) = [b for b in blocks if "class CookieBanner" in b]
    module = types.ModuleType("provenance_cookie_banner")
    exec(compile(source, "docs/PLUGINS.md", "exec"), module.__dict__)
    return module


def test_worked_example_runs_and_matches_the_page():
    module = _worked_example()
    pages = [json.loads(line) for line in re.search(r"\$ cat pages.jsonl\n(.*?)\n\$", DOC, re.S).group(1).splitlines()]
    assert len(pages) == 3
    pm = testing.plugin_manager_with(module)
    assert pm.detectors()["cookie_banner"].plugin.name == "provenance_cookie_banner"
    tags = testing.run_detector(module.CookieBanner, pages, pm=pm)
    shown = {(m.group(1), float(m.group(2)), m.group(3)) for m in re.finditer(
        r"│ (https://\S+) +│ cookie_banner │ ([\d.]+) +│ (\{.*?\}) +│", DOC)}
    urls = {testing.make_document(i, **p)["doc_id"]: p["url"] for i, p in enumerate(pages)}
    got = {(urls[r["doc_id"]], r["score"], r["evidence"]) for r in tags.to_pylist()}
    assert got == shown
    with pytest.raises(provenance.detectors.DetectorError, match="max_chars must be >= 1"):
        module.CookieBanner.validate_options({"max_chars": 0})
