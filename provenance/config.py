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
    enable = ["exact_duplicate"]   # detectors or plugins to run (default: all)
    disable = []

    [detectors.exact_duplicate]  # options of one detector, validated by it
    min_chars = 1

One home for every key: the pydantic models below give each key its type,
default, bounds and meaning. ``load()`` checks a file against them,
``override()`` checks command-line flags against them, and docs/CONFIG.md is
generated from them (``python -m provenance.config --markdown``). Validation is
strict: TOML already has typed values, so ``allow_private = "false"`` (a
string) is an error, never a truthy value.

Callers get plain nested dicts (``settings["crawl"]["max_pages"]``), so the
models stay here; ``settings["_path"]`` names the file the settings came from.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_STORE = "./provenance-store"
CONFIG_FILE = "provenance.toml"
DEFAULT_USER_AGENT_TEXT = "provenance-guard/<version> (+https://github.com/provenance-guard/provenance-guard)"


# Well-known AI-training and AI-answer crawlers: the one list. The crawl records, per fetch, which of them robots.txt
# disallows ([crawl] ai_agents); the consent detector reads their crawler-specific <meta> robots tags; and
# eval/consent_robots.py measures them on real robots.txt files.
AI_AGENTS = ("GPTBot", "ChatGPT-User", "OAI-SearchBot", "CCBot", "Google-Extended", "ClaudeBot", "Claude-Web",
             "anthropic-ai", "Applebot-Extended", "PerplexityBot", "Bytespider", "meta-externalagent", "cohere-ai")


class ConfigError(ValueError):
    """A settings file or value that cannot be used; names the file and key (the CLI exits 2)."""


# ----- the model: every key, its type, default, bounds and meaning --------------------------------
class _Section(BaseModel):
    # strict: no coercion ("false" is not a bool, 5.0 is not an int); forbid: a typo is an error, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class StoreSettings(_Section):
    """Where the store lives."""

    path: str = Field(DEFAULT_STORE, min_length=1,
                      description="Store directory. `--store DIR` and `PROVENANCE_STORE` win over it.")


# The names of provenance/extract.py's EXTRACTORS (a test keeps the two equal).
ExtractorName = Literal["trafilatura", "resiliparse"]
EXTRACTOR_HELP = ("Main-text extractor: `trafilatura` (quality path) or `resiliparse` (fast path, about 6x "
                  "less CPU, more boilerplate kept); see docs/CRAWLING.md. Recorded per document.")


class CrawlSettings(_Section):
    """`provenance crawl`: limits, politeness and safety. Each key maps to one Scrapy setting or to a
    `PROVENANCE_*` setting (see docs/CRAWLING.md)."""

    max_pages: int = Field(10_000, ge=1, description="Stop requesting after this many pages (site, sitemap and "
                                                     "URL-list crawls).")
    max_depth: int = Field(20, ge=0, description="Site crawls: follow links at most this deep (0: the start "
                                                 "pages only).")
    allow_private: bool = Field(False, description="Allow private, loopback and link-local addresses (refused "
                                                   "by default: the SSRF guard).")
    obey_robots: bool = Field(True, description="Obey robots.txt (parsed by Protego).")
    concurrency: int = Field(16, ge=1, description="Requests in flight in all.")
    concurrency_per_host: int = Field(4, ge=1, description="Requests in flight to one host.")
    autothrottle: bool = Field(True, description="Scrapy AutoThrottle: adapt the delay to the server's latency.")
    download_timeout_s: float = Field(30.0, gt=0, description="Seconds before a request is given up "
                                                              "(DOWNLOAD_TIMEOUT).")
    max_size_bytes: int = Field(32 * 1024 * 1024, ge=1,
                                description="Largest body kept, also after decompression, which stops "
                                            "decompression bombs (DOWNLOAD_MAXSIZE).")
    warn_size_bytes: int = Field(8 * 1024 * 1024, ge=0, description="Log a warning for bodies larger than this "
                                                                    "(DOWNLOAD_WARNSIZE; 0: never).")
    max_redirects: int = Field(10, ge=0, description="Redirects followed per request (REDIRECT_MAX_TIMES).")
    user_agent: str | None = Field(None, min_length=1, description="The User-Agent header. Not set: "
                                   f"`{DEFAULT_USER_AGENT_TEXT}`.")
    jobdir: bool = Field(True, description="Keep resumable state under STORE/_jobs/<crawl_id>/ so an "
                                           "interrupted crawl resumes.")
    store_non_html: bool = Field(True, description="Store non-HTML bodies (PDF, images, ...) as documents; "
                                                   "false: only record them in `fetches`.")
    extract_workers: int | None = Field(None, ge=0, description="Text-extraction processes; 0: extract in the "
                                        "crawl's own process. Not set: chosen for the extractor (measured, see "
                                        "docs/CRAWLING.md): 1 for `resiliparse`, one per CPU (at most 4) for "
                                        "`trafilatura`.")
    flush_rows: int = Field(2000, ge=1, description="Fetches per commit (also every 60 s and 64 MB): bounds what a "
                            "kill can lose, and fewer, bigger files are faster to read.")
    extractor: ExtractorName = Field("trafilatura", description=EXTRACTOR_HELP)
    confirm_after_s: float = Field(0.0, ge=0, le=86_400, description="Confirmation fetch (frontrunning): fetch "
                                   "every page this crawl found changed once more, in the same run, without "
                                   "conditional headers, after a delay drawn at random between half this many "
                                   "seconds and this many; a page whose edit was undone meanwhile shows the revert "
                                   "(`transient_edit`). 0: off. See docs/CRAWLING.md.")
    ai_agents: list[str] = Field(
        list(AI_AGENTS), description="AI crawlers (user-agent names) for which every fetch records whether the host's "
                                     "robots.txt would allow them this URL (`fetches.ai_agents_disallowed`, the "
                                     "`consent` view); [] records nothing. See docs/DATA.md.")


class IngestSettings(_Section):
    """`provenance ingest`."""

    flush_rows: int = Field(5000, ge=1, description="Documents per commit (also every 64 MB of raw bytes): bounds "
                            "memory and what a kill can lose, and fewer, bigger files are faster to read.")
    extractor: ExtractorName = Field("trafilatura", description=EXTRACTOR_HELP + " Used for HTML in WARC, "
                                     "JSONL and Parquet input.")


class TagSettings(_Section):
    """`provenance tag`: batches, the time budget and which detectors run."""

    batch_size: int = Field(1000, ge=1, description="Documents per batch handed to a detector.")
    time_budget_s: float = Field(300.0, gt=0, description="Seconds a detector may spend on one call (one batch, "
                                                          "or its start); after that it is stopped.")
    workers: int = Field(1, ge=1, le=256, description="Worker processes per per-document or state-keeping "
                                                      "detector; each batch is split between them, so they use "
                                                      "that many cores (and that many times the memory).")
    finish_budget_s: float = Field(3600.0, gt=0, description="Seconds a corpus-level detector's `finish` may "
                                                             "take, all its streamed parts together; after that "
                                                             "it is stopped and its earlier tags stay live.")
    isolation: Literal["process", "inline"] = Field("process", description="`process`: each detector in its own "
                                                    "worker (enforces the time budget); `inline`: in the command's "
                                                    "process, for debugging.")
    commit_rows: int = Field(10_000, ge=0, description="Commit tags every this many document rows (and at the end "
                                                       "of each document file): what a kill can lose. 0: no row limit.")
    commit_seconds: float = Field(60.0, ge=0, description="Commit tags at least this often, in seconds, "
                                                          "whichever of the two limits comes first. 0: no time limit.")
    worker_memory_mb: int = Field(4096, ge=0, description="What one detector's worker process may allocate, in MB "
                                                          "(RLIMIT_DATA); over it, an `errors` row of kind `memory`. "
                                                          "0: unlimited.")
    enable: list[str] | None = Field(None, description="Detector or plugin names to run. Not set: all.")
    disable: list[str] = Field([], description="Detector or plugin names not to run (added to `--disable`).")
    engine: Literal["local", "ray"] = Field("local", description="`local`: this machine's worker processes; "
                                            "`ray`: per-document and state-keeping detectors run on a Ray cluster "
                                            "through Ray Data, and this machine commits (needs "
                                            "`pip install 'provenance-guard[ray]'`; see docs/SCALE.md).")
    ray_address: str | None = Field(None, min_length=1, description="With `engine = \"ray\"`: the cluster to "
                                    "join, `auto` (a cluster started with `ray start` on this machine) or "
                                    "`ray://HOST:10001`. Not set: start a local Ray instance for the run.")
    ray_stage: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^?]*)?(\?.*)?$",
                                  description="With `engine = \"ray\"`, for a cluster without a shared filesystem: "
                                  "an `s3://BUCKET/PREFIX` the driver copies the document files of the run's work to "
                                  "(once: a file already there with the same size is not copied again), and Ray's "
                                  "workers read them from. Endpoint and credentials: `AWS_ENDPOINT_URL`, "
                                  "`AWS_ACCESS_KEY_ID`, ... or the URI's `?endpoint_override=HOST:PORT&scheme=http` "
                                  "(see docs/SCALE.md). Not set: workers read the store's own path.")


class ExportSettings(_Section):
    """`provenance export`."""

    respect_opt_out: bool = Field(False, description="Leave out documents whose publisher reserved text-and-data "
                                  "mining (a TDMRep `tdm-reservation: 1` or a `noai` robots directive, as the "
                                  "`consent` detector tagged them); the manifest and dataset card say which "
                                  "signals were honoured and how many documents each excluded.")
    shard_rows: int | None = Field(None, ge=1, description="Cut the exported documents into files of at most this "
                                   "many rows, `documents-00000-of-00012.parquet` ..., in doc_id order one after "
                                   "another (Hugging Face's names for a split's files), each listed in the "
                                   "manifest with its sha256. Not set: one `documents.parquet`.")


class Settings(_Section):
    """The whole of provenance.toml."""

    store: StoreSettings = Field(default_factory=StoreSettings)
    crawl: CrawlSettings = Field(default_factory=CrawlSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    tag: TagSettings = Field(default_factory=TagSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    # Each detector validates its own options (Detector.validate_options); here only: a table per detector.
    detectors: dict[str, dict[str, Any]] = Field({}, description="`[detectors.<name>]`: options of one detector.")


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation for name, field in Settings.model_fields.items() if name != "detectors"}

# The command-line flags that override a key (named in error messages and in docs/CONFIG.md).
FLAGS: dict[tuple[str, str], str] = {
    ("store", "path"): "--store",
    ("crawl", "max_pages"): "--max-pages",
    ("crawl", "max_depth"): "--max-depth",
    ("crawl", "allow_private"): "--allow-private",
    ("crawl", "obey_robots"): "--ignore-robots",
    ("crawl", "confirm_after_s"): "--confirm-after",
    ("tag", "batch_size"): "--batch-size",
    ("tag", "time_budget_s"): "--time-budget",
    ("tag", "isolation"): "--isolation",
    ("tag", "workers"): "--workers",
    ("tag", "enable"): "--plugins",
    ("tag", "disable"): "--disable",
    ("tag", "engine"): "--engine",
    ("tag", "ray_address"): "--address",
    ("tag", "ray_stage"): "--stage",
    ("export", "respect_opt_out"): "--respect-opt-out",
    ("export", "shard_rows"): "--shard-rows",
}

# What a key with a ``pattern`` must look like, in words (pydantic's message would show the regular expression).
PATTERN_TEXT = {("tag", "ray_stage"): "an s3://BUCKET/PREFIX URI"}

DEFAULTS: dict = Settings().model_dump()


# ----- loading and overriding -----------------------------------------------------------------------
def config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    env = os.environ.get("PROVENANCE_CONFIG")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"{env}: config file not found (named by PROVENANCE_CONFIG)")
        return Path(env)
    local = Path.cwd() / CONFIG_FILE
    return local if local.is_file() else None


def load(explicit: str | os.PathLike | None = None) -> dict:
    """The effective settings: defaults merged with the config file, if any, every key validated."""
    path = config_path(explicit)
    if path is None:
        return copy.deepcopy(DEFAULTS)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a TOML file must be UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        settings = Settings.model_validate(data).model_dump()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None
    settings["_path"] = str(path)
    return settings


def section(name: str, values: dict | None, source: str | None = None) -> dict:
    """One section (``crawl``, ``tag``, ...) with its defaults filled in, validated like the file.

    For settings that come from Python rather than a file (a CrawlRequest, the test kit).
    """
    try:
        return SECTIONS[name].model_validate(dict(values or {})).model_dump()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, prefix=(name,))) from None


def override(settings: dict, section_name: str, **values) -> dict:
    """``settings`` with command-line values in one section (None: flag not given), validated like the file.

    A bad value is a ConfigError naming the flag, e.g. ``--batch-size: expected integer >= 1, got 0``.
    """
    given = {k: v for k, v in values.items() if v is not None}
    merged = {**settings[section_name], **given}
    try:
        checked = SECTIONS[section_name].model_validate(merged).model_dump()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, None, prefix=(section_name,), flags=True)) from None
    return {**settings, section_name: checked}


def check_detector_tables(settings: dict, known: Iterable[str]) -> None:
    """Every ``[detectors.<name>]`` table names a detector that exists (a typo would silently do nothing).

    Called where the detectors are known: the tag runner, after plugins are loaded.
    """
    known = sorted(known)
    for name in settings.get("detectors", {}):
        if name not in known:
            where = settings.get("_path") or "settings"
            raise ConfigError(f"{where}: [detectors.{name}]: no detector named {name!r}{_did_you_mean(name, known)}; "
                              f"known detectors: {', '.join(known) or 'none'}")


def resolve_store(cli_value: str | None, settings: dict) -> Path:
    return Path(cli_value or os.environ.get("PROVENANCE_STORE") or settings["store"]["path"])


# ----- one clear line per mistake ---------------------------------------------------------------------
def _describe(exc: ValidationError, source: str | None, prefix: tuple = (), flags: bool = False) -> str:
    """Every problem pydantic found, as ``source: [section] key: what is wrong`` on one line."""
    problems = [_problem(prefix + tuple(err["loc"]), err, flags) for err in exc.errors()]
    return (f"{source}: " if source else "") + "; ".join(problems)


def _problem(loc: tuple, err: dict, flags: bool) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":  # an unknown name
        if len(loc) == 1:
            return (f"unknown section [{loc[0]}]{_did_you_mean(loc[0], Settings.model_fields)}; "
                    f"known sections: {', '.join(f'[{s}]' for s in Settings.model_fields)}")
        known = SECTIONS[loc[0]].model_fields
        return (f"[{loc[0]}] {loc[1]}: unknown key{_did_you_mean(loc[1], known)}; "
                f"known keys of [{loc[0]}]: {', '.join(known)}")
    if len(loc) == 1:  # a section that is not a table, e.g. `crawl = 5`
        return f"[{loc[0]}]: expected a table (a [{loc[0]}] section), got {_shown(value)}"
    if loc[0] == "detectors":
        return f"[detectors.{loc[1]}]: expected a table of the detector's options, got {_shown(value)}"
    field = SECTIONS[loc[0]].model_fields[loc[1]]
    where = f"[{loc[0]}] {loc[1]}" + "".join(f"[{i}]" for i in loc[2:])
    if len(loc) > 2:  # an element of a list, e.g. [tag] enable[1]
        expected = _type_text(typing.get_args(_without_none(field.annotation))[0], [])
    else:
        expected = _type_text(field.annotation, field.metadata)
    if flags and (loc[0], loc[1]) in FLAGS:
        where = f"{FLAGS[loc[0], loc[1]]} ({where})"
    if kind == "string_pattern_mismatch" and (loc[0], loc[1]) in PATTERN_TEXT:
        expected = PATTERN_TEXT[loc[0], loc[1]]
    return f"{where}: expected {expected}, got {_shown(value)}{_hint(loc, field, value)}"


def _hint(loc: tuple, field, value) -> str:
    """What to write instead, for the two classic slips: quotes around a value, a string for a list."""
    if not isinstance(value, str) or len(loc) > 2:
        return ""
    if typing.get_origin(_without_none(field.annotation)) is list:
        items = [item.strip() for item in value.split(",") if item.strip()]
        return f" (a list is written {loc[1]} = {json.dumps(items)})"
    try:
        unquoted = tomllib.loads(f"v = {value}")["v"]
    except (tomllib.TOMLDecodeError, KeyError):
        return ""
    if isinstance(unquoted, (bool, int, float)):
        return f" (write it without quotes: {loc[1]} = {value})"
    return ""


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(value) -> str:
    """A value as TOML spells it, and what kind of value it is."""
    if isinstance(value, dict):
        return "a table"
    if value is None:  # only from Python callers: TOML has no null
        return "None"
    kind = ("a boolean" if isinstance(value, bool) else "an integer" if isinstance(value, int)
            else "a float" if isinstance(value, float) else "a string" if isinstance(value, str)
            else "a list" if isinstance(value, list) else f"a {type(value).__name__}")
    return f"{_toml(value)} ({kind})"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _without_none(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _type_text(annotation, metadata) -> str:
    """The type of a key in words, with its bounds: ``integer >= 1``, ``list of strings``, ``"a" or "b"``."""
    annotation = _without_none(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_text(typing.get_args(annotation)[0], [])}s"
    words = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation, str(annotation))
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            words += f" >= {m.ge}"
        elif isinstance(m, annotated_types.Gt):
            words += f" > {m.gt:g}"
        elif isinstance(m, annotated_types.Le):
            words += f" and <= {m.le:_}".replace("_", ",")
        elif isinstance(m, annotated_types.MinLen) and m.min_length == 1:
            words = f"non-empty {words}"
    return words


# ----- docs/CONFIG.md ---------------------------------------------------------------------------------
def markdown() -> str:
    """docs/CONFIG.md: every key, its type, default, flag and meaning, from the model above."""
    lines = [
        "# Configuration: provenance.toml",
        "",
        "<!-- Generated from provenance/config.py by `python -m provenance.config --markdown > docs/CONFIG.md`;",
        "     tests/test_config.py fails when this file is stale. Edit the model, not this file. -->",
        "",
        "Settings come from built-in defaults, then `provenance.toml`, then command-line flags (flags win).",
        "The file is `./provenance.toml` unless `--config FILE` or the `PROVENANCE_CONFIG` environment",
        "variable names another.",
        "",
        "Every key is typed and checked before anything runs. A wrong type (`allow_private = \"false\"` is a",
        "string, not a boolean), a value out of range, an unknown key or section, or a `[detectors.<name>]`",
        "table for a detector that is not installed stops the command with exit code 2 and one line naming",
        "the file, the key, what was expected and the known names, e.g.",
        "",
        "```",
        "provenance: error: provenance.toml: [crawl] allow_private: expected boolean, got \"false\" (a string) "
        "(write it without quotes: allow_private = false)",
        "```",
        "",
        "Flags that override a key are checked the same way (`--batch-size 0` is exit 2).",
    ]
    for name, model in SECTIONS.items():
        lines += ["", f"## [{name}]", "", " ".join(model.__doc__.split()), "",
                  "| key | type | default | flag | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, field in model.model_fields.items():
            default = "not set" if field.default is None else f"`{_toml(field.default)}`"
            if isinstance(field.default, int) and not isinstance(field.default, bool) and field.default >= 1 << 20:
                default += f" ({field.default / (1 << 20):g} MiB)"
            flag = f"`{FLAGS[name, key]}`" if (name, key) in FLAGS else ""
            lines.append(f"| `{key}` | {_type_text(field.annotation, field.metadata)} | {default} | {flag} | "
                         f"{field.description} |")
    lines += [
        "", "## [detectors.<name>]", "",
        "One table per detector, named by the detector (`provenance plugins` lists them), holding its options:",
        "",
        "```toml",
        "[detectors.exact_duplicate]",
        "min_chars = 1",
        "```",
        "",
        "Which options exist, and their types, is the detector's own (`Detector.options`, checked by",
        "`Detector.validate_options`; see [PLUGINS.md](PLUGINS.md)). The options are folded into the",
        "detector's config hash, so changing one re-tags. A table for an unknown detector is an error",
        "when `provenance tag` runs, naming the known detectors.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        print("usage: python -m provenance.config --markdown   (prints docs/CONFIG.md)", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
