"""A fresh, throw-away Python environment to pip-install plugins into, offline and in about a second.

``python -m venv --without-pip`` makes the environment; a ``.pth`` file in its
site-packages runs ``site.addsitedir(<this venv's site-packages>)``, so the
new environment sees Provenance Guard (and pyarrow, duckdb, pytest, ...)
exactly as installed here, editable install included, without copying them.
Plugins are then installed into it for real with this environment's pip
(``pip --python NEW``), ``--no-deps --no-build-isolation --no-index``: no
network, and nothing is installed into the project's own venv. A plugin
installed there is discovered only by processes running the new
environment's interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _can_build_wheels_offline() -> str | None:
    """None when setuptools can build a wheel without downloading anything; else the reason."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major_minor = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
    if major_minor >= (70, 1) or importlib.util.find_spec("wheel") is not None:
        return None
    return (f"setuptools {setuptools.__version__} needs the 'wheel' package to build wheels offline "
            "(pip install wheel, or setuptools>=70.1)")


def clean_env(**extra) -> dict:
    """os.environ without PROVENANCE_* settings (and pytest's own), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PROVENANCE_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


class PluginVenv:
    def __init__(self, path: Path):
        reason = _can_build_wheels_offline()
        if reason:
            pytest.skip(reason)
        self.path = Path(path)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.path)], check=True,
                       capture_output=True, text=True, timeout=120)
        self.python = self.path / "bin" / "python"
        purelib = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        self.site_packages = Path(purelib)
        ours = sysconfig.get_paths()["purelib"]
        (self.site_packages / "_provenance_host.pth").write_text(f"import site; site.addsitedir({ours!r})\n")

    def pip_install(self, source: Path, copy_to: Path | None = None) -> subprocess.CompletedProcess:
        """Install a plugin source tree (copied first, so the build leaves nothing in the checkout)."""
        if copy_to is not None:
            shutil.copytree(source, copy_to, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            source = copy_to
        proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "--no-deps",
                               "--no-build-isolation", "--no-index", "--quiet", str(source)],
                              capture_output=True, text=True, timeout=300, env=clean_env())
        assert proc.returncode == 0, f"pip install {source} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def run(self, *args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *map(str, args)], cwd=cwd, env=clean_env(**(env or {})),
                              capture_output=True, text=True, timeout=timeout)

    def provenance(self, *args, cwd=None, env=None, check: int | None = 0, timeout=120) -> subprocess.CompletedProcess:
        """The real `provenance` command, run by this environment's interpreter."""
        proc = self.run("-m", "provenance.cli", *args, cwd=cwd, env=env, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, (f"provenance {' '.join(map(str, args))}: exit {proc.returncode}\n"
                                              f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc
