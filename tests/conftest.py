"""Fixtures shared by the whole suite: the ../shared data folder and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROVENANCE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly when it is absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


def run_cli(*args, cwd=None, env=None, timeout=300, check=None) -> subprocess.CompletedProcess:
    """Run the real `provenance` command in a subprocess; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", "from provenance.cli import main; main()", *map(str, args)],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture
def cli():
    return run_cli


# ----- the built-ins, read from what is installed: listings tests need not change with each new built-in ---------
def builtin_plugins() -> list[str]:
    """Names of the built-in plugins (the ``provenance.plugins`` entry points of this package), sorted as
    ``provenance plugins`` lists them."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="provenance.plugins")
                  if ep.value.startswith("provenance.plugins."))


def builtin_detectors() -> set[str]:
    """Names of the detectors the built-in plugins register that a plain ``provenance tag`` runs (opt-in ones,
    such as llm_lm, which needs a model folder, only run when configured)."""
    from provenance.pluginmanager import get_plugin_manager

    pm = get_plugin_manager()
    return {name for name, spec in pm.detectors().items()
            if spec.plugin.name in builtin_plugins() and not spec.cls.opt_in}
