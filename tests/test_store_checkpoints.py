"""Checkpoints of the commit log: opening reads the newest good one and the entries after it, with the same
result as replaying the whole log; a damaged, stale or half-written checkpoint never changes what is read."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import provenance.store
from provenance.store import FileEntry, Store

EVERY = 7  # small, so that short logs have several checkpoints


@pytest.fixture(autouse=True)
def _small_checkpoint_interval(monkeypatch):
    monkeypatch.setattr(provenance.store, "CHECKPOINT_EVERY", EVERY)
    provenance.store._WARNED.clear()


def _state(snapshot) -> tuple:
    return snapshot.files, snapshot.removed, snapshot.coverage, snapshot.log_seq


def _replayed(root: Path):
    return Store(root)._read_log(warn_torn=True, checkpoints=False)


def _checkpoints(root: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in (root / "_log").glob("*.checkpoint.json.gz"))


def _random_history(root: Path, rng: random.Random, commits: int, runs: int = 3) -> None:
    """``commits`` random commits over ``runs`` writing runs: adds, removes, coverage, dropped coverage."""
    store = Store.open(root, create=True)
    live: list[str] = []
    n = 0
    for _ in range(runs):
        with store.run(rng.choice(["ingest", "tag", "crawl"])) as run:
            for _ in range(commits // runs):
                n += 1
                add = [FileEntry(f"{rng.choice(['documents', 'tags'])}/x/f{n}-{k}.parquet", "tags", rng.randint(1, 9),
                                 100, "0" * 64, {"detector": rng.choice("ab"), "n": n}) for k in range(rng.randint(1, 2))]
                remove = rng.sample(live, min(len(live), rng.randint(0, 2))) if rng.random() < 0.3 else []
                coverage = [{"detector": rng.choice("ab"), "tag_key": rng.choice(["k1", "k2"]),
                             "doc_file": f"documents/x/f{n}.parquet", "ranges": [[0, rng.randint(1, 9)]]}
                            for _ in range(rng.randint(0, 2))]
                drop = [{"detector": rng.choice("ab"), "keep_tag_key": "k2"}] if rng.random() < 0.1 else []
                run.commit(add=add, remove=remove, coverage=coverage, drop_coverage=drop)
                live = [p for p in live if p not in remove] + [f.path for f in add]
                if rng.random() < 0.2:
                    # Readers in between: each open equals the full replay up to that commit.
                    assert _state(Store(root).snapshot()) == _state(_replayed(root))


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_read_from_a_checkpoint_equals_the_full_replay(tmp_path, seed):
    root = tmp_path / "s"
    _random_history(root, random.Random(seed), commits=60)
    snapshot = Store(root).snapshot()
    assert snapshot.checkpoint_seq > 0 and snapshot.log_seq - snapshot.checkpoint_seq < EVERY
    assert _state(snapshot) == _state(_replayed(root))
    assert len(_checkpoints(root)) == provenance.store.KEEP_CHECKPOINTS  # older ones are pruned


def test_opening_reads_only_the_entries_after_the_newest_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "s"
    _random_history(root, random.Random(1), commits=60, runs=1)
    parsed = []
    real_parse = provenance.store._parse_entry
    monkeypatch.setattr(provenance.store, "_parse_entry", lambda data: parsed.append(1) or real_parse(data))
    snapshot = Store(root).snapshot()
    assert snapshot.log_seq == 60 and len(parsed) == snapshot.log_seq - _checkpoints(root)[-1] < EVERY


def test_a_store_written_before_checkpoints_gets_one_from_its_next_writer(tmp_path, monkeypatch):
    root = tmp_path / "s"
    monkeypatch.setattr(provenance.store, "CHECKPOINT_EVERY", 10**9)  # as an older tool wrote it: none
    _random_history(root, random.Random(2), commits=30, runs=1)
    assert _checkpoints(root) == []
    monkeypatch.setattr(provenance.store, "CHECKPOINT_EVERY", EVERY)
    with Store(root).run("ingest"):
        pass
    assert _checkpoints(root) == [30]
    assert _state(Store(root).snapshot()) == _state(_replayed(root))


@pytest.mark.parametrize("damage", ["cut_off", "zeros", "not_gzip", "wrong_number", "missing_key"])
def test_a_damaged_checkpoint_falls_back_to_an_older_one_then_the_full_replay(tmp_path, damage, caplog):
    root = tmp_path / "s"
    _random_history(root, random.Random(3), commits=30, runs=1)
    expected = _state(_replayed(root))
    older, newest = _checkpoints(root)

    def spoil(seq):
        path = root / "_log" / f"{seq:020d}.checkpoint.json.gz"
        data = path.read_bytes()
        state = json.loads(gzip.decompress(data))
        path.write_bytes({"cut_off": data[:len(data) // 2], "zeros": b"\0" * len(data), "not_gzip": b"{}",
                          "wrong_number": gzip.compress(json.dumps({**state, "seq": seq - 1}).encode()),
                          "missing_key": gzip.compress(json.dumps({k: v for k, v in state.items() if k != "files"})
                                                       .encode())}[damage])
        return path

    spoiled = spoil(newest)
    snapshot = Store(root).snapshot()
    assert _state(snapshot) == expected and snapshot.checkpoint_seq == older
    assert "checkpoint unusable" in caplog.text and spoiled.name in caplog.text

    spoil(older)
    snapshot = Store(root).snapshot()
    assert _state(snapshot) == expected and snapshot.checkpoint_seq == 0

    # The next writer writes a good one at the end of the log.
    with Store(root).run("ingest"):
        pass
    assert _checkpoints(root)[-1] == 30 and Store(root).snapshot().checkpoint_seq == 30


def test_a_checkpoint_of_a_rolled_back_history_is_never_used(tmp_path, caplog):
    root = tmp_path / "s"
    _random_history(root, random.Random(4), commits=28, runs=1)
    assert _checkpoints(root) == [21, 28]
    log_dir = root / "_log"
    # Roll back to entry 20 (the repair the damage messages offer), then entries 21.. are written anew,
    # different: here entry 21 is put back by hand with other contents, with no writer to prune the old one.
    (log_dir / "_torn").mkdir()
    for seq in range(21, 29):
        (log_dir / f"{seq:020d}.json").rename(log_dir / "_torn" / f"{seq:020d}.json")
    assert _state(Store(root).snapshot()) == _state(_replayed(root))  # 21 and 28 lie beyond the log: unused
    (log_dir / f"{21:020d}.json").write_text(json.dumps({
        "run_id": "r", "command": "tag", "committed_at": "", "committed_at_unix": time.time(),
        "add": [FileEntry("tags/other.parquet", "tags", 1, 1, "0" * 64).to_json()], "remove": [], "coverage": [],
        "drop_coverage": []}))
    snapshot = Store(root).snapshot()
    assert "tags/other.parquet" in snapshot.files and snapshot.checkpoint_seq == 0
    assert _state(snapshot) == _state(_replayed(root)) and "different entry 21" in caplog.text
    with Store(root).run("ingest"):  # the next writer deletes the stale checkpoints and writes a true one
        pass
    assert _checkpoints(root) == [21] and Store(root).snapshot().checkpoint_seq == 21
    assert _state(Store(root).snapshot()) == _state(_replayed(root))


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import provenance.store as store
    from provenance.store import FileEntry, Store

    store.CHECKPOINT_EVERY = 5
    real_write_temp = store._write_temp

    def slow_write_temp(path, text):
        if path.name.endswith(".checkpoint.json.gz") and path.name.startswith("00000000000000000010"):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(text[: len(text) // 2])
                fh.flush()
            print("writing", flush=True)
            time.sleep(60)  # killed here, half of the checkpoint written
        return real_write_temp(path, text)

    store._write_temp = slow_write_temp
    with Store.open(sys.argv[1], create=True).run("ingest") as run:
        for i in range(12):
            run.commit(add=[FileEntry(f"documents/x/{i}.parquet", "documents", 1, 1, "0" * 64)])
""")


def test_a_writer_killed_while_writing_a_checkpoint_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    root = tmp_path / "s"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()
        child.wait()
    log_dir = root / "_log"
    assert [p.name for p in log_dir.glob(".*.tmp")], "the kill should leave the half-written temp file"
    assert _checkpoints(root) == [5]
    snapshot = Store(root).snapshot()
    assert snapshot.log_seq == 10 and snapshot.checkpoint_seq == 5 and len(snapshot.files) == 10
    assert _state(snapshot) == _state(_replayed(root))

    monkeypatch.setattr(provenance.store, "CHECKPOINT_EVERY", 5)
    with Store(root).run("ingest"):  # the next writer drops the temp file and writes the checkpoint
        pass
    assert not list(log_dir.glob(".*.tmp")) and _checkpoints(root) == [5, 10]
    assert Store(root).snapshot().checkpoint_seq == 10


@pytest.mark.slow
def test_ingest_killed_at_random_points_across_checkpoints_then_rerun_stores_every_document_once(tmp_path):
    from campaigns import cli, document_rows, ok, run_killed_when

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"url": f"https://k.example/{i}", "text": f"document {i}"}) + "\n"
                           for i in range(260)))
    (tmp_path / "provenance.toml").write_text("[ingest]\nflush_rows = 1\n")  # 260 commits: checkpoints 100, 200
    ok(cli("ingest", src, "--store", tmp_path / "base", cwd=tmp_path))
    expected = document_rows(tmp_path / "base")
    assert _checkpoints(tmp_path / "base") == [100, 200]
    rng = random.Random(20)
    killed = 0
    for trial in range(9):
        if killed == 3:
            break
        store = tmp_path / f"s{trial}"
        # Killed once the log holds a random number of entries, before, between and after the checkpoints,
        # wherever the next commit then is: the point does not depend on the machine's speed.
        entries = rng.randint(2, 250)
        if not run_killed_when(["ingest", src, "--store", store],
                               lambda: len(list((store / "_log").glob("*.json"))) >= entries, cwd=tmp_path):
            continue
        killed += 1
        ok(cli("store", "check", "--store", store, cwd=tmp_path), 0, 1)  # 1: the orphan of the chunk in flight
        ok(cli("ingest", src, "--store", store, cwd=tmp_path))
        assert document_rows(store) == expected, f"trial {trial}"
        ok(cli("store", "check", "--store", store, cwd=tmp_path))
        snapshot = Store(store).snapshot()
        assert snapshot.checkpoint_seq >= 100 and _state(snapshot) == _state(_replayed(store))
    assert killed == 3
