"""Built-in detectors (installed as ``provenance.plugins``).

Each module here is an ordinary plugin: it implements hooks with
``@provenance.hookimpl`` and is registered through the ``provenance.plugins``
entry-point group in pyproject.toml, exactly as a third-party plugin is.
"""
