"""Every hook a Provenance Guard plugin can implement. One section each in docs/PLUGINS.md.

Implement a hook with ``@provenance.hookimpl`` on a module-level function (or
a method of a plugin object) with the hook's exact name. Implementations may
accept any subset of a hook's arguments (pluggy's opt-in arguments), so hooks
can gain arguments without breaking existing plugins; an argument that is not
in the spec, or a misspelled hook name, fails when the plugin is loaded, with
a message naming the plugin. tests/test_docs.py checks that each hook here is
documented with this exact signature and exercised by a test.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("provenance")


@hookspec
def register_detectors(register):
    """Add detectors: call ``register(DetectorClass)`` once per detector.

    ``DetectorClass`` subclasses ``provenance.Detector`` (per-document, one
    Arrow record batch at a time) or ``provenance.CorpusDetector`` (sees every
    batch, then emits tags). The core owns detector identity: ``register``
    checks the class at once (name, version, category, needs, options, the
    methods it must implement), refuses a name another plugin already
    registered, and the runner stamps every tag row with this plugin's name
    and version. Called each time the detectors are listed or a run starts;
    it must only register, not do work.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``provenance`` command line: ``cli`` is its ``click.Group``.

    Called once when the command starts, before arguments are parsed. Use
    ``@cli.command()`` (or ``cli.add_command``); pick names unlikely to clash
    with other plugins, e.g. prefixed with your plugin's name.
    """
