"""pytest fixtures for Provenance Guard plugin authors (loaded through the ``pytest11`` entry point).

Fixtures:

  provenance_docs    the test kit's small, varied corpus (a list of dicts; copy and extend it)
  provenance_store   a real store in tmp_path seeded with provenance_docs
  provenance_pm      a fresh plugin manager with every installed plugin (yours too, once
                     ``pip install -e .``-ed); register a temporary plugin with
                     ``provenance_pm.register_plugin(obj, name, version, None)``
  run_detector       provenance.testing.run_detector: a detector class through the real runner

This module imports nothing heavy at import time (it is loaded by every pytest
run in an environment where Provenance Guard is installed) and defines only
fixtures, so it cannot change how unrelated test suites behave.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def provenance_docs() -> list[dict]:
    """A fresh copy of provenance.testing.DEFAULT_DOCS."""
    import copy

    from provenance.testing import DEFAULT_DOCS

    return copy.deepcopy(DEFAULT_DOCS)


@pytest.fixture
def provenance_store(tmp_path, provenance_docs):
    """A provenance.store.Store in tmp_path holding provenance_docs."""
    from provenance.testing import make_store

    return make_store(tmp_path / "provenance-store", provenance_docs)


@pytest.fixture
def provenance_pm():
    """A fresh plugin manager: built-ins plus every installed plugin, checked as `provenance tag` loads them."""
    from provenance.pluginmanager import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def run_detector():
    """provenance.testing.run_detector(detector_cls, docs_or_store, options=None, isolation="process", ...)."""
    from provenance.testing import run_detector as _run_detector

    return _run_detector
