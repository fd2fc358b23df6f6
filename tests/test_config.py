"""provenance.toml: every key typed and validated in one place (provenance/config.py).

A mistake in the file or in a flag that overrides it is exit 2 with one line naming the file, the key,
what was expected and the known names; never a traceback, and never a silently different behaviour
(``allow_private = "false"`` used to switch the SSRF guard off). docs/CONFIG.md is generated from the
same model and must match it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance import config, exitcodes
from provenance.crawlers import CrawlError, CrawlRequest
from provenance.crawlers.run import plan_crawl
from provenance.sites import generate_site, serve
from provenance.plugins.exact_duplicate import ExactDuplicate
from provenance.testing import DEFAULT_DOCS, make_store, run_detector, run_detectors

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9/index.html"  # never contacted: the config is refused first


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cfg") / "store", DEFAULT_DOCS).root


def one_error_line(proc) -> str:
    """The command failed with exactly one `provenance: error:` line and no traceback."""
    assert proc.returncode == exitcodes.USAGE, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("provenance: error: "), proc.stderr
    return lines[0]


# (id, command, provenance.toml text, words the one error line must contain)
MISTAKES = [
    ("max_pages_string", "crawl", '[crawl]\nmax_pages = "lots"\n',
     ["[crawl] max_pages", "expected integer >= 1", '"lots" (a string)']),
    ("section_not_a_table", "crawl", "crawl = 5\n",
     ["[crawl]", "expected a table", "5 (an integer)"]),
    ("string_where_list", "tag", '[tag]\nenable = "exact_duplicate"\n',
     ["[tag] enable", "expected list of strings", 'enable = ["exact_duplicate"]']),
    ("comma_separated_string", "tag", '[tag]\ndisable = "exact_duplicate, other"\n',
     ["[tag] disable", "expected list of strings", 'disable = ["exact_duplicate", "other"]']),
    ("bool_as_string", "crawl", '[crawl]\nallow_private = "false"\n',
     ["[crawl] allow_private", "expected boolean", '"false" (a string)', "without quotes: allow_private = false"]),
    ("bool_as_integer", "crawl", "[crawl]\nobey_robots = 1\n",
     ["[crawl] obey_robots", "expected boolean", "1 (an integer)"]),
    ("number_as_string", "tag", '[tag]\nbatch_size = "10"\n',
     ["[tag] batch_size", "expected integer >= 1", "without quotes: batch_size = 10"]),
    ("float_for_integer", "crawl", "[crawl]\nmax_pages = 5.5\n",
     ["[crawl] max_pages", "expected integer", "5.5 (a float)"]),
    ("zero_max_size", "crawl", "[crawl]\nmax_size_bytes = 0\n",
     ["[crawl] max_size_bytes", "expected integer >= 1", "got 0"]),
    ("negative_concurrency", "crawl", "[crawl]\nconcurrency_per_host = -4\n",
     ["[crawl] concurrency_per_host", ">= 1", "got -4"]),
    ("zero_timeout", "crawl", "[crawl]\ndownload_timeout_s = 0\n",
     ["[crawl] download_timeout_s", "expected number > 0"]),
    ("negative_redirects", "crawl", "[crawl]\nmax_redirects = -1\n",
     ["[crawl] max_redirects", ">= 0"]),
    ("negative_extract_workers", "crawl", "[crawl]\nextract_workers = -1\n",
     ["[crawl] extract_workers", ">= 0"]),
    ("empty_user_agent", "crawl", '[crawl]\nuser_agent = ""\n',
     ["[crawl] user_agent", "non-empty string"]),
    ("zero_batch_size", "tag", "[tag]\nbatch_size = 0\n",
     ["[tag] batch_size", "expected integer >= 1", "got 0"]),
    ("negative_time_budget", "tag", "[tag]\ntime_budget_s = -1\n",
     ["[tag] time_budget_s", "expected number > 0"]),
    ("zero_ingest_flush", "ingest", "[ingest]\nflush_rows = 0\n",
     ["[ingest] flush_rows", ">= 1"]),
    ("unknown_extractor", "ingest", '[ingest]\nextractor = "boilerpipe"\n',
     ["[ingest] extractor", 'expected "trafilatura" or "resiliparse"', '"boilerpipe"']),
    ("ray_stage_not_s3", "tag", '[tag]\nray_stage = "gs://bucket/stage"\n',
     ["[tag] ray_stage", "s3://", '"gs://bucket/stage"']),
    ("isolation_choice", "tag", '[tag]\nisolation = "thread"\n',
     ["[tag] isolation", 'expected "process" or "inline"', '"thread"']),
    ("unknown_key", "crawl", "[crawl]\nmax_pagse = 3\n",
     ["[crawl] max_pagse", "unknown key", "did you mean 'max_pages'", "known keys of [crawl]", "max_depth"]),
    ("unknown_section", "tag", "[crawll]\nmax_pages = 3\n",
     ["unknown section [crawll]", "did you mean 'crawl'", "known sections: [store], [crawl]"]),
    ("list_element", "tag", '[tag]\nenable = ["exact_duplicate", 3]\n',
     ["[tag] enable[1]", "expected string", "3 (an integer)"]),
    ("detector_table_not_a_table", "tag", "[detectors]\nexact_duplicate = 5\n",
     ["[detectors.exact_duplicate]", "expected a table"]),
    ("unknown_detector", "tag", "[detectors.nope]\nx = 1\n",
     ["[detectors.nope]", "no detector named 'nope'", "known detectors: ", "exact_duplicate, "]),
    ("misspelt_detector", "tag", "[detectors.exact_duplicat]\nmin_chars = 2\n",
     ["[detectors.exact_duplicat]", "did you mean 'exact_duplicate'"]),
    ("store_path_type", "tag", "[store]\npath = 5\n",
     ["[store] path", "expected non-empty string"]),
    ("ingest_is_a_list", "ingest", "ingest = []\n",
     ["[ingest]", "expected a table", "[] (a list)"]),
    ("toml_syntax", "tag", "[tag]\nbatch_size = = 3\n",
     ["not valid TOML", "line 2"]),
    ("two_mistakes_one_line", "crawl", '[crawl]\nmax_pages = 0\nallow_private = "yes"\n',
     ["[crawl] max_pages", "[crawl] allow_private"]),
]


def _command(kind: str, tmp_path: Path, store: Path) -> list:
    if kind == "crawl":
        return ["crawl", UNREACHABLE, "--store", tmp_path / "new-store"]
    if kind == "ingest":
        docs = tmp_path / "docs.jsonl"
        docs.write_text(json.dumps({"url": "https://example.org/a", "text": "hello"}) + "\n")
        return ["ingest", docs, "--store", tmp_path / "new-store"]
    return ["tag", "--store", store]


@pytest.mark.parametrize("kind, toml, words", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_config_mistake_is_one_clear_line_and_exit_2(cli, tmp_path, store, kind, toml, words):
    path = tmp_path / "provenance.toml"
    path.write_text(toml)
    line = one_error_line(cli(*_command(kind, tmp_path, store), "--config", path))
    assert str(path) in line
    for word in words:
        assert word in line
    assert not (tmp_path / "new-store").exists()  # refused before the store is created


FLAG_MISTAKES = [
    ("tag", ["--batch-size", "0"], ["--batch-size ([tag] batch_size)", "expected integer >= 1", "got 0"]),
    ("tag", ["--time-budget", "0"], ["--time-budget ([tag] time_budget_s)", "expected number > 0"]),
    ("tag", ["--time-budget", "-2.5"], ["--time-budget", "got -2.5"]),
    ("tag", ["--engine", "ray", "--stage", "/mnt/stage"], ["--stage ([tag] ray_stage)", "s3://"]),
    ("crawl", ["--max-pages", "0"], ["--max-pages ([crawl] max_pages)", "expected integer >= 1"]),
    ("crawl", ["--max-depth", "-1"], ["--max-depth ([crawl] max_depth)", "expected integer >= 0"]),
]


@pytest.mark.parametrize("kind, flags, words", FLAG_MISTAKES, ids=[" ".join(f[1]) for f in FLAG_MISTAKES])
def test_flags_that_override_the_config_are_validated_alike(cli, tmp_path, store, kind, flags, words):
    line = one_error_line(cli(*_command(kind, tmp_path, store), *flags))
    for word in words:
        assert word in line
    assert not (tmp_path / "new-store").exists()


def test_a_missing_or_unreadable_file_is_one_clear_line(cli, tmp_path, store):
    line = one_error_line(cli("tag", "--store", store, "--config", tmp_path / "nope.toml"))
    assert "nope.toml: config file not found" in line
    line = one_error_line(cli("tag", "--store", store, env={"PROVENANCE_CONFIG": str(tmp_path / "gone.toml")}))
    assert "gone.toml: config file not found (named by PROVENANCE_CONFIG)" in line
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[crawl]\nuser_agent = "caf\u00e9"\n'.encode("latin-1"))
    assert "not UTF-8 text" in one_error_line(cli("tag", "--store", store, "--config", latin1))


def test_allow_private_as_a_string_does_not_switch_the_guard_off(cli, tmp_path):
    """The bug: `allow_private = "false"` was truthy, so a loopback crawl went ahead. Now: exit 2, no request."""
    site = tmp_path / "site"
    generate_site(site, pages=2)
    (tmp_path / "provenance.toml").write_text('[crawl]\nallow_private = "false"\nautothrottle = false\n')
    log: list = []
    with serve(site, request_log=log) as base:
        proc = cli("crawl", base + "index.html", "--store", tmp_path / "store", cwd=tmp_path)
    line = one_error_line(proc)
    assert "provenance.toml: [crawl] allow_private: expected boolean" in line
    assert log == []  # not one request reached the server


def test_the_python_api_validates_crawl_settings_too():
    """CrawlRequest.settings go through the same model as the file (a usage error, exit 2)."""
    with pytest.raises(CrawlError, match=r"\[crawl\] allow_private: expected boolean") as caught:
        plan_crawl(CrawlRequest(start_urls=[UNREACHABLE], settings={"allow_private": "false"}))
    assert caught.value.exit_code == exitcodes.USAGE
    with pytest.raises(CrawlError, match=r"\[crawl\] max_pagse: unknown key"):
        plan_crawl(CrawlRequest(start_urls=[UNREACHABLE], settings={"max_pagse": 3}))
    plan = plan_crawl(CrawlRequest(start_urls=[UNREACHABLE], settings={"max_pages": 7, "extract_workers": None}))
    assert plan["settings"] == {**config.DEFAULTS["crawl"], "max_pages": 7}


def test_the_tag_runner_validates_tag_settings_from_python():
    with pytest.raises(config.ConfigError, match=r"\[tag\] batch_size: expected integer >= 1, got 0"):
        run_detector(ExactDuplicate, DEFAULT_DOCS, batch_size=0, isolation="inline")
    with pytest.raises(config.ConfigError, match=r"\[detectors.exact_duplicat\]: no detector named"):
        run_detectors([ExactDuplicate], DEFAULT_DOCS, options={"exact_duplicat": {}}, isolation="inline")


# ----- valid configurations ---------------------------------------------------------------------------
FULL = """\
[store]
path = "elsewhere"

[crawl]
max_pages = 5
max_depth = 0
allow_private = true
obey_robots = false
concurrency = 2
concurrency_per_host = 1
autothrottle = false
download_timeout_s = 2.5
max_size_bytes = 1000000
warn_size_bytes = 0
max_redirects = 0
user_agent = "test-agent/1"
jobdir = false
store_non_html = false
extract_workers = 0
flush_rows = 7
extractor = "resiliparse"
ai_agents = ["TestBot"]
confirm_after_s = 90

[ingest]
flush_rows = 3
extractor = "resiliparse"

[tag]
batch_size = 2
time_budget_s = 30
isolation = "inline"
commit_rows = 50
commit_seconds = 5.5
worker_memory_mb = 512
finish_budget_s = 120
workers = 3
enable = ["exact_duplicate"]
disable = ["another_plugin"]
engine = "ray"
ray_address = "auto"
ray_stage = "s3://stage-bucket/runs"

[export]
respect_opt_out = true
shard_rows = 100000

[detectors.exact_duplicate]
min_chars = 2
"""


def test_every_key_can_be_set_and_is_read_with_its_type(tmp_path):
    path = tmp_path / "provenance.toml"
    path.write_text(FULL)
    settings = config.load(path)
    assert settings["_path"] == str(path)
    assert settings["crawl"]["max_pages"] == 5 and settings["crawl"]["allow_private"] is True
    assert settings["crawl"]["download_timeout_s"] == 2.5 and settings["crawl"]["user_agent"] == "test-agent/1"
    assert settings["tag"]["time_budget_s"] == 30.0 and isinstance(settings["tag"]["time_budget_s"], float)
    assert settings["tag"]["enable"] == ["exact_duplicate"] and settings["ingest"]["flush_rows"] == 3
    assert settings["detectors"] == {"exact_duplicate": {"min_chars": 2}}
    assert settings["tag"]["ray_stage"] == "s3://stage-bucket/runs"
    # The file sets every key of every section: the model and the example cannot drift apart.
    for name in config.SECTIONS:
        assert set(settings[name]) == set(config.DEFAULTS[name])
        assert all(settings[name][k] != v for k, v in config.DEFAULTS[name].items()), name
    assert set(config.DEFAULTS) == {"store", "crawl", "ingest", "tag", "export", "detectors"}


def test_no_file_gives_the_defaults_and_an_empty_file_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROVENANCE_CONFIG", raising=False)
    assert config.load() == config.DEFAULTS
    (tmp_path / "provenance.toml").write_text("# nothing set\n[crawl]\n")
    assert {k: v for k, v in config.load().items() if k != "_path"} == config.DEFAULTS


def test_a_valid_config_runs_tag_with_its_settings(cli, tmp_path):
    store = make_store(tmp_path / "store", DEFAULT_DOCS).root
    path = tmp_path / "provenance.toml"
    path.write_text('[tag]\nbatch_size = 2\ntime_budget_s = 30\nisolation = "inline"\n'
                    '[detectors.exact_duplicate]\nmin_chars = 2\n')
    proc = cli("tag", "--store", store, "--config", path, "--json", check=exitcodes.OK)
    summary = json.loads(proc.stdout)
    assert summary["detectors"]["exact_duplicate"]["options"] == {"min_chars": 2}
    (record,) = [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")
                 if not p.name.endswith(".stats.json") and json.loads(p.read_text())["command"] == "tag"]
    assert (record["config"]["batch_size"], record["config"]["time_budget_s"], record["config"]["isolation"]) == \
        (2, 30.0, "inline")
    # A flag wins over the file, and is validated like it.
    cli("tag", "--store", store, "--config", path, "--batch-size", "3", check=exitcodes.OK)


# ----- docs/CONFIG.md ---------------------------------------------------------------------------------
def test_config_md_is_generated_from_the_model():
    doc = (REPO / "docs" / "CONFIG.md").read_text()
    assert doc == config.markdown(), (
        "docs/CONFIG.md is stale: run `python -m provenance.config --markdown > docs/CONFIG.md`")


def test_config_md_lists_every_key_with_type_default_and_meaning():
    doc = config.markdown()
    for name, model in config.SECTIONS.items():
        assert f"## [{name}]" in doc
        for key, field in model.model_fields.items():
            assert field.description, f"[{name}] {key} needs a description (it is the documentation)"
            assert f"| `{key}` | {config._type_text(field.annotation, field.metadata)} |" in doc
    assert "## [detectors.<name>]" in doc
    assert "docs/CONFIG.md" in (REPO / "README.md").read_text()


def test_python_m_provenance_config_markdown_prints_the_page():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "provenance.config", "--markdown"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == config.markdown()
