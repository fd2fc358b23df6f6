"""Campaign: the disk fills up during ingest, tag and crawl.

The store lives on a 12 MiB tmpfs mounted in a private mount namespace (``unshare -rm``: nothing
outside this test sees it, no root needed where user namespaces are allowed). A filler file takes
all but a little of it, the command runs out of space part-way, and then the contract is checked:
one clear ``provenance: error:`` line and no traceback, a store that still answers queries, and,
once the filler is deleted, a re-run that completes with every record exactly once.

Everything on the tmpfs happens inside one shell script run under unshare (the mount ends with it);
each step's exit code, stdout and stderr, and a copy of the final store, are written outside it.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from campaigns import CLI, TAGGER_PLUGIN, query
from provenance.sites import serve

pytestmark = pytest.mark.slow

TMPFS_SIZE = "12m"

# $1 mount point, $2 results dir, $3 KiB left free by the filler, $4 a JSONL file to ingest first
# (or ""), then the provenance arguments of the command that is to run out of space ('@STORE@' in
# them becomes the store on the tmpfs). $PY and $PYCODE run the CLI.
SCRIPT = r"""
set -u
MNT=$1 OUT=$2 FREE_KB=$3 SETUP=$4
shift 4
mount -t tmpfs -o size=__SIZE__ tmpfs "$MNT" || exit 97
STORE=$MNT/store
args=()
for a in "$@"; do args+=("${a//@STORE@/$STORE}"); done
step() {  # step NAME ARGS...: run the CLI, keeping its exit code and output
    name=$1; shift
    "$PY" -c "$PYCODE" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
    echo $? >"$OUT/$name.rc"
}
if [ -n "$SETUP" ]; then
    step setup ingest "$SETUP" --store "$STORE"
fi
# Fill the file system, then give back FREE_KB: the command gets that much room.
dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null
truncate -s "-${FREE_KB}K" "$MNT/filler"
step full "${args[@]}"
step query_full query "select count(*) AS n from documents" --store "$STORE" --format json
rm "$MNT/filler"  # space is freed
step rerun "${args[@]}"
cp -a "$STORE" "$OUT/store"
"""


def _namespaces_usable(mount_point: Path) -> str | None:
    """None when `unshare -rm` and a tmpfs mount work here; else why not."""
    try:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{mount_point}'"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not available: {exc}"
    if proc.returncode != 0:
        return f"unshare -rm / mount -t tmpfs not permitted here: {proc.stderr.strip()[:200]}"
    return None


def _input(path: Path, n: int) -> list[str]:
    """n text records of hard-to-compress words (so they fill the disk); returns their URLs."""
    rng = random.Random(12)
    letters = "abcdefghijklmnopqrstuvwxyz"
    urls = [f"https://full.example/{i}" for i in range(n)]
    with open(path, "w") as fh:
        for url in urls:
            words = ("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(900))
            fh.write(json.dumps({"url": url, "text": " ".join(words)}) + "\n")
    return urls


def _run_out_of_space(tmp_path: Path, free_kb: int, setup: Path | None, command: list,
                      env: dict | None = None) -> dict:
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    reason = _namespaces_usable(mount_point)
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(["unshare", "-rm", "bash", "-c", SCRIPT.replace("__SIZE__", TMPFS_SIZE),
                           "bash", str(mount_point), str(out), str(free_kb), str(setup or ""), *map(str, command)],
                          env={**os.environ, "PY": CLI[0], "PYCODE": CLI[2], **(env or {})},
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = {}
    for rc in out.glob("*.rc"):
        name = rc.stem
        steps[name] = subprocess.CompletedProcess(name, int(rc.read_text()), (out / f"{name}.out").read_text(),
                                                  (out / f"{name}.err").read_text())
    steps["store"] = out / "store"
    return steps


def _assert_one_clear_line(step: subprocess.CompletedProcess) -> None:
    assert step.returncode in (1, 3), f"exit {step.returncode}: {step.stderr}"  # a failure, not a usage error
    assert "Traceback" not in step.stderr, step.stderr
    lines = [line for line in step.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("provenance: error:"), step.stderr
    assert re.search(r"space|full", lines[0], re.I), lines[0]  # says what is wrong: the disk is full


def test_disk_full_during_ingest_then_rerun_stores_every_record_once(tmp_path):
    urls = _input(tmp_path / "input.jsonl", 700)  # ~4.4 MB of text: the store needs more than the 1 MiB left
    (tmp_path / "provenance.toml").write_text("[ingest]\nflush_rows = 50\n")
    steps = _run_out_of_space(tmp_path, 1024, None, ["ingest", tmp_path / "input.jsonl", "--store", "@STORE@"])
    _assert_one_clear_line(steps["full"])
    assert steps["query_full"].returncode == 0, steps["query_full"].stderr  # readable while still full
    committed = json.loads(steps["query_full"].stdout)[0]["n"]
    assert committed < len(urls)
    rerun = steps["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(rf"\b{len(urls) - committed} stored\b", rerun.stdout), rerun.stdout  # what was missing
    assert re.search(rf"\b{committed} already stored\b", rerun.stdout), rerun.stdout
    rows = query(steps["store"], "SELECT url, count(*) FROM documents GROUP BY url")
    assert sorted(rows) == sorted((url, 1) for url in urls)  # every record exactly once
    print(f"\ningest: {committed} of {len(urls)} documents committed before the disk was full")


def test_disk_full_during_tag_then_rerun_tags_every_document_once(tmp_path):
    urls = _input(tmp_path / "input.jsonl", 400)
    (tmp_path / "provenance.toml").write_text("[ingest]\nflush_rows = 40\n")  # ten document files
    env = {"CAMPAIGN_TAGGER_EVIDENCE_BYTES": "4000"}  # ~1.6 MB of evidence: more than the 256 KiB left
    steps = _run_out_of_space(tmp_path, 256, tmp_path / "input.jsonl",
                              ["tag", "--store", "@STORE@", "--plugin-module", TAGGER_PLUGIN,
                               "--plugins", "campaign_tagger", "--batch-size", "20"], env=env)
    assert steps["setup"].returncode == 0, steps["setup"].stderr
    _assert_one_clear_line(steps["full"])
    assert steps["query_full"].returncode == 0, steps["query_full"].stderr
    assert json.loads(steps["query_full"].stdout)[0]["n"] == len(urls)
    rerun = steps["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    rows = query(steps["store"], "SELECT doc_id, count(*) FROM tags WHERE detector = 'campaign_tagger' GROUP BY 1")
    docs = query(steps["store"], "SELECT doc_id FROM documents")
    assert sorted(rows) == sorted((d, 1) for (d,) in docs)  # every document tagged exactly once


def _site(root: Path, n: int) -> list[str]:
    """An index linking n pages of ~21 KB of hard-to-compress words; returns their paths."""
    rng = random.Random(3)
    root.mkdir()
    names = [f"p{i}.html" for i in range(n)]
    (root / "index.html").write_text("<html><body>" + " ".join(f"<a href='/{m}'>{m}</a>" for m in names)
                                     + "</body></html>")
    for name in names:
        words = " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
                         for _ in range(3000))
        (root / name).write_text(f"<html><head><title>{name}</title></head><body><article><p>{words}</p>"
                                 f"</article></body></html>")
    return ["index.html", *names]


@pytest.mark.parametrize("flush_rows", [100_000, 5], ids=["final_commit", "chunk_commit"])
def test_disk_full_during_crawl_fails_the_run_and_the_rerun_stores_every_page_once(tmp_path, flush_rows):
    """The crawl's commit fails: the final one (in the pipeline's close_spider: Scrapy would only log it) or a
    chunk's mid-crawl (from process_item). The run fails with one line, keeps what it committed, and the rerun
    (same crawl id: the resume journal) fetches and stores exactly the pages that were lost, each once."""
    paths = _site(tmp_path / "site", 30)  # ~0.75 MB to store: more than the 400 KiB left
    (tmp_path / "provenance.toml").write_text(f"[crawl]\nflush_rows = {flush_rows}\nautothrottle = false\n"
                                              "extract_workers = 0\n")
    with serve(tmp_path / "site") as base:
        steps = _run_out_of_space(tmp_path, 400, None, ["crawl", base + "index.html", "--store", "@STORE@",
                                                        "--crawl-id", "full", "--allow-private"])
    full = steps["full"]
    _assert_one_clear_line(full)
    assert full.returncode == 1, full.stderr
    assert steps["query_full"].returncode == 0, steps["query_full"].stderr
    committed = json.loads(steps["query_full"].stdout)[0]["n"]
    if flush_rows > len(paths):
        assert committed == 0  # the final commit was the only one, and it failed
    else:
        assert 0 < committed < len(paths)  # chunks before the failure stay
    rerun = steps["rerun"]
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(rf"\b{len(paths) - committed} stored\b", rerun.stdout), rerun.stdout
    urls = sorted(base + p for p in paths)
    rows = query(steps["store"], "SELECT url, count(*) FROM documents GROUP BY url")
    assert sorted(rows) == [(u, 1) for u in urls]  # every page stored exactly once
    # ... and fetched once: pages committed before the failure were not fetched again, none of it twice
    fetches = query(steps["store"], "SELECT url, count(*), min(outcome) FROM fetches WHERE url LIKE '%.html' "
                                    "GROUP BY url")
    assert sorted(fetches) == [(u, 1, "new") for u in urls]
    failed = query(steps["store"], "SELECT status, error FROM runs WHERE status <> 'succeeded'")
    assert len(failed) == 1 and failed[0][0] == "failed", failed
    print(f"\ncrawl (flush_rows {flush_rows}): {committed} of {len(paths)} pages committed before the disk was full")
