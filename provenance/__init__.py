"""Provenance Guard: crawl with provenance, tag with detector plugins, assemble clean sets with SQL.

The public API for plugin authors and analysts::

    import provenance

    @provenance.hookimpl
    def register_detectors(register):
        register(MyDetector)          # a provenance.Detector subclass

    con = provenance.connect("./provenance-store")   # DuckDB: documents, tags, doc_flags, ...
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("provenance-guard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

hookimpl = pluggy.HookimplMarker("provenance")

_LAZY = {"Detector": "provenance.detectors", "CorpusDetector": "provenance.detectors",
         "CorpusState": "provenance.detectors", "CATEGORIES": "provenance.detectors", "DetectorError": "provenance.detectors"}
_SUBMODULES = {"detectors", "schemas", "testing", "runner", "pluginmanager", "hookspecs", "store", "sql",
               "documents", "config"}


def __getattr__(name):
    # Imported on first use so that `import provenance` (and the pytest11 plugin, which
    # every pytest run in this environment loads) stays cheap: pyarrow loads only when needed.
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"provenance.{name}")
    else:
        raise AttributeError(f"module 'provenance' has no attribute {name!r}")
    globals()[name] = value
    return value


def connect(store, **kwargs):
    """A DuckDB connection over ``store`` with the views documents, tags, doc_flags, errors, fetches, runs."""
    from provenance.sql import connect as _connect

    return _connect(store, **kwargs)


__all__ = ["__version__", "hookimpl", "Detector", "CorpusDetector", "CorpusState", "DetectorError", "CATEGORIES", "connect"]
