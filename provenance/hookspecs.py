"""Every hook a Provenance Guard plugin can implement. One section each in docs/PLUGINS.md.

Implementations may accept any subset of a hook's arguments (pluggy's opt-in
arguments), so hooks can gain arguments without breaking existing plugins.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("provenance")


@hookspec
def register_detectors(register):
    """Add detectors: call ``register(DetectorClass)`` once per detector.

    ``DetectorClass`` subclasses ``provenance.Detector`` (per-document, one
    Arrow record batch at a time) or ``provenance.CorpusDetector`` (sees every
    batch, then emits tags). The core owns detector identity: it validates the
    class, refuses a name another plugin already registered, and stamps every
    tag row with this plugin's name and version.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``provenance`` command line: ``cli`` is its click group."""
