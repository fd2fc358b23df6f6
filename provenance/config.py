"""Settings: built-in defaults < provenance.toml < command-line flags.

The file is ``./provenance.toml`` unless ``--config FILE`` or the
``PROVENANCE_CONFIG`` environment variable names another. Example::

    [store]
    path = "/data/provenance-store"

    [crawl]
    max_pages = 5000
    allow_private = false

    [tag]
    batch_size = 1000
    time_budget_s = 300        # per detector call; a hung detector is stopped after this
    commit_rows = 10000        # commit tags every N document rows ...
    commit_seconds = 60        # ... or every N seconds: a killed run loses at most that
    worker_memory_mb = 4096    # memory a detector's worker may allocate; 0: unlimited
    enable = ["exact_duplicate"]   # detectors or plugins to run (default: all)
    disable = []

    [detectors.exact_duplicate]  # options of one detector, validated by it
    min_chars = 1
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_STORE = "./provenance-store"
CONFIG_FILE = "provenance.toml"

DEFAULTS: dict = {
    "store": {"path": DEFAULT_STORE},
    "crawl": {
        "max_pages": 10_000,
        "max_depth": 20,
        "allow_private": False,
        "obey_robots": True,
        "concurrency": 16,  # requests in flight in all
        "concurrency_per_host": 4,
        "autothrottle": True,
        "download_timeout_s": 30,
        "max_size_bytes": 32 * 1024 * 1024,
        "warn_size_bytes": 8 * 1024 * 1024,
        "max_redirects": 10,
        # None: "provenance-guard/<version> (+https://github.com/provenance-guard/provenance-guard)"
        "user_agent": None,
        "jobdir": True,  # keep resumable state under STORE/_jobs/<crawl_id>/
        "store_non_html": True,  # False: non-HTML bodies are only recorded in fetches (outcome non_html)
        "extract_workers": None,  # text-extraction processes; None: one per CPU (at most 4); 0: inline
        "flush_rows": 500,  # fetches per commit: bounds what a kill can lose
    },
    "ingest": {"flush_rows": 500},
    "tag": {
        "batch_size": 1000,
        "time_budget_s": 300.0,
        "isolation": "process",
        # A tag run commits every commit_rows document rows or commit_seconds, whichever comes first
        # (and at the end of each document file): what a kill can lose. 0 turns that limit off.
        "commit_rows": 10_000,
        "commit_seconds": 60.0,
        # What one detector's worker process may allocate, in MB (RLIMIT_DATA); 0: unlimited.
        "worker_memory_mb": 4096,
        "enable": None,
        "disable": [],
    },
    "detectors": {},
}


class ConfigError(ValueError):
    """A settings file or value that cannot be used; names the file and key."""


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    env = os.environ.get("PROVENANCE_CONFIG")
    if env:
        return config_path(env)
    local = Path.cwd() / CONFIG_FILE
    return local if local.is_file() else None


def load(explicit: str | os.PathLike | None = None) -> dict:
    """The effective settings: defaults merged with the config file, if any."""
    path = config_path(explicit)
    if path is None:
        return copy.deepcopy(DEFAULTS)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    for section, values in data.items():
        if section == "detectors":
            continue  # each detector validates its own options
        bad = set(values) - set(DEFAULTS[section])
        if bad:
            raise ConfigError(f"{path}: unknown key(s) in [{section}]: {sorted(bad)}")
    merged = _merge(DEFAULTS, data)
    merged["_path"] = str(path)
    return merged


def resolve_store(cli_value: str | None, settings: dict) -> Path:
    return Path(cli_value or os.environ.get("PROVENANCE_STORE") or settings["store"]["path"])
