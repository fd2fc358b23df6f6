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

from provenance.detectors import CATEGORIES, CorpusDetector, Detector  # noqa: E402


def connect(store, **kwargs):
    """A DuckDB connection over ``store`` with the views documents, tags, doc_flags, errors, fetches, runs."""
    from provenance.sql import connect as _connect

    return _connect(store, **kwargs)


__all__ = ["__version__", "hookimpl", "Detector", "CorpusDetector", "CATEGORIES", "connect"]
