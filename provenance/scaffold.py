"""``provenance plugin new NAME``: an installable plugin package with one detector, its test and its entry point.

For NAME ``short-text`` it writes::

    provenance-short-text/
      pyproject.toml                 distribution provenance-short-text, version 0.1.0,
                                     [project.entry-points."provenance.plugins"] short_text = "provenance_short_text"
      README.md                      install, run, test, options
      .gitignore
      provenance_short_text/__init__.py   class ShortText(provenance.Detector) + register_detectors hook
      tests/test_short_text.py       tests through provenance.testing and the pytest fixtures

The templates are the strings below (kept here, not as package data, so the
scaffold works from any install). The generated package is tested by
tests/test_plugin_scaffold.py: generated, pip-installed into a fresh
environment, listed by ``provenance plugins``, and its own tests run.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 40


class ScaffoldError(ValueError):
    """A plugin name or target directory that ``plugin new`` refuses, with the reason."""


def plugin_names(name: str) -> dict[str, str]:
    """The names derived from NAME: distribution, module, entry point, detector, class."""
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lower-case letters and digits, words separated by '-' or '_', "
            f"starting with a letter, at most {MAX_NAME} characters (e.g. 'shouting' or 'short-text')")
    if name.startswith(("provenance-", "provenance_")) or name == "provenance":
        raise ScaffoldError(f"invalid plugin name {name!r}: leave out the 'provenance-' prefix; "
                            f"'plugin new {name.split('-', 1)[-1].split('_', 1)[-1]}' creates "
                            "provenance-<name> for you")
    snake = name.replace("-", "_")
    if keyword.iskeyword(snake):
        raise ScaffoldError(f"invalid plugin name {name!r}: it is a Python keyword")
    kebab = snake.replace("_", "-")
    return {
        "name": kebab,
        "distribution": f"provenance-{kebab}",
        "module": f"provenance_{snake}",
        "entry_point": snake,
        "detector": snake,
        "class_name": "".join(part.capitalize() for part in snake.split("_")),
        "title": " ".join(snake.split("_")).capitalize(),
    }


PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "A Provenance Guard detector plugin: $title."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["provenance-guard"]

[project.optional-dependencies]
test = ["pytest"]

# How Provenance Guard finds the plugin. The group name has a dot, so it must be quoted.
[project.entry-points."provenance.plugins"]
$entry_point = "$module"

[tool.setuptools]
packages = ["$module"]
''')

MODULE = Template('''\
"""$distribution: a Provenance Guard detector plugin.

One per-document detector, ``$detector``: it flags documents whose extracted
text is shorter than ``min_chars`` characters (category ``quality``). Replace
the logic in ``tag_batch`` with your own; keep it vectorised with
pyarrow.compute so it stays fast on large batches.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

import provenance


class $class_name(provenance.Detector):
    """Flags documents whose text is shorter than min_chars characters."""

    name = "$detector"          # unique across plugins; keys the stored tags
    version = "1"                # bump when the output changes: `provenance tag` then re-tags
    category = "quality"         # llm | poison | duplicate | quality | provenance | other
    needs = ("text",)            # the only document columns the runner will read for it
    options = {"min_chars": 200}  # defaults; override in provenance.toml under [detectors.$detector]

    def tag_batch(self, batch: pa.RecordBatch):
        lengths = pc.fill_null(pc.utf8_length(batch.column("text")), 0)
        short = pc.less(lengths, self.options["min_chars"])
        chars = pc.cast(lengths.filter(short), pa.string())
        evidence = pc.binary_join_element_wise('{"chars": ', chars, "}", "")  # JSON without per-row Python
        score = pc.subtract(1.0, pc.divide(pc.cast(lengths.filter(short), pa.float64()),
                                           float(self.options["min_chars"])))
        return self.tags(batch.column("doc_id").filter(short), "short_text", score=score, evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register($class_name)
''')

TEST = Template('''\
"""Tests for $distribution, run through Provenance Guard's real runner (provenance.testing)."""

import json

from provenance.testing import make_batch, run_detector, tag_batch

from $module import $class_name

LONG = "This sentence is long enough to pass the default threshold of two hundred characters. " * 3


def test_tags_short_documents_only():
    tags = run_detector($class_name, [{"text": "Too short."}, {"text": LONG}])
    rows = tags.to_pylist()
    assert [r["tag"] for r in rows] == ["short_text"]
    assert rows[0]["detector"] == "$detector" and rows[0]["category"] == "quality"
    assert json.loads(rows[0]["evidence"]) == {"chars": 10}
    assert 0.0 <= rows[0]["score"] <= 1.0


def test_min_chars_option():
    assert run_detector($class_name, [{"text": "Too short."}], options={"min_chars": 5}).num_rows == 0


def test_sees_only_what_it_needs():
    batch = make_batch([{"text": "Too short."}], needs=$class_name.needs)
    assert batch.schema.names == ["doc_id", "text"]
    assert tag_batch($class_name, batch).num_rows == 1


def test_fixture_corpus(provenance_store, run_detector):
    tags = run_detector($class_name, provenance_store)
    assert tags.num_rows >= 1
    assert set(tags.column("plugin").to_pylist()) == {"$entry_point"}  # as a real `provenance tag` stamps it


def test_installed_through_its_entry_point(provenance_pm):
    spec = provenance_pm.detectors().get("$detector")
    assert spec is not None, "not installed: run `pip install -e .` first"
    assert spec.plugin.distribution == "$distribution"
    assert spec.plugin.name == "$entry_point"
''')

README = Template('''\
# $distribution

A [Provenance Guard](https://github.com/provenance-guard) detector plugin.

Detector `$detector` (per-document, category `quality`): flags documents whose
extracted text is shorter than `min_chars` characters, with a score that grows
as the text gets shorter and evidence `{"chars": N}`.

## Install

    pip install -e .            # into the environment where `provenance` is installed
    provenance plugins          # lists $entry_point $distribution 0.1.0 and its detector

## Run

    provenance tag --store ./provenance-store --plugins $detector
    provenance query --store ./provenance-store \\
        "select doc_id, tag, score, evidence from tags where detector = '$detector'"

## Options

In `provenance.toml`:

    [detectors.$detector]
    min_chars = 200

Changing an option changes the detector's config hash, so the next
`provenance tag` re-tags every document with the new setting.

## Test

    pip install -e '.[test]'
    pytest

The tests use `provenance.testing` (documents, stores, and runs through the
real runner) and the pytest fixtures that ship with Provenance Guard
(`provenance_store`, `provenance_pm`, `run_detector`).

## Release

Bump `version` in pyproject.toml whenever the detector's output changes (and
the detector's own `version` too): stored tags record both, and
`provenance tag` re-tags documents vetted by an older version.
''')

GITIGNORE = "__pycache__/\n*.egg-info/\nbuild/\ndist/\n.pytest_cache/\nprovenance-store/\n"


def new_plugin(name: str, parent: str | Path = ".") -> Path:
    """Create ``provenance-<name>/`` under ``parent``; returns its path. Refuses to overwrite anything."""
    names = plugin_names(name)
    parent = Path(parent)
    root = parent / names["distribution"]
    if root.exists():
        raise ScaffoldError(f"{root} already exists; choose another name or directory (nothing was written)")
    files = {
        "pyproject.toml": PYPROJECT.substitute(names),
        "README.md": README.substitute(names),
        ".gitignore": GITIGNORE,
        f"{names['module']}/__init__.py": MODULE.substitute(names),
        f"tests/test_{names['detector']}.py": TEST.substitute(names),
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
