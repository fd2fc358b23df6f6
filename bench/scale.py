"""The whole pipeline at growing corpus sizes: documents/s, peak memory and the cost of each stage.

A deterministic web-like corpus (no ../shared needed): documents of about 2 KB (300 words from a Zipf(1.1)
vocabulary of 50,000 generated words) on 2,000 domains, fetched over two years, with known fractions of
exact copies (``--exact-share``), near copies with a few words changed (``--near-share``) and chat-model
answers carrying an artefact (``--llm-share``). Written as JSONL shards (untimed, like a crawl's output), then,
each stage a fresh process of the real CLI timed by /usr/bin/time (wall seconds, and peak RSS of its largest
process, detector workers included):

1. ``provenance ingest`` of the shards, then ``provenance store compact --target-mb 512`` (ingest commits files
   of 5,000 documents; compacted, a shard's are one file in doc_id order, which the export merges: an export
   merges at most about 110 files of 2 KB documents under its default memory, provenance/export.py);
2. ``provenance tag --plugins D`` for each detector D on its own (the cost of each; with ``--together`` one run
   of them all, the cost and memory of a nightly job), per engine: ``local``,
   ``workers2`` (``--workers 2``), ``ray`` (``--engine ray``, a local Ray instance); each engine on its own
   copy of the ingested store;
3. opening the store (a snapshot of the commit log), in-process, best of three;
4. ``provenance export`` of what nothing flagged.

Prints a table per size and writes the figures as JSON (``--out``, default bench/results/scale.json) and a
plot of documents/s against size (``--plot``, PNG). Throughput that stays flat as the size grows means no
stage is superlinear. Each stage also records its CPU per document in units of a fixed calibration workload
run as it starts and ends (``calibration``): this machine's speed drifts between runs, the ratio does not.

    .venv/bin/python bench/scale.py [--sizes 10000,100000] [--engines local,workers2,ray]
                                    [--detectors all|dup|corpus|perdoc|NAMES]
                                    [--corpus-dir DIR [--generate-only]] [--no-export] [--merge] [--together]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the detectors whose cost or memory can grow with the corpus: the corpus-level ones, and content_drift (its
# previous-version lookup reads the earlier documents of the same URL from the whole store)
CORPUS = ["exact_duplicate", "near_duplicate", "backdoor_trigger", "doorway_pages", "host_takeover",
          "provenance_tier", "transient_edit", "content_drift"]
# the rest, each document on its own
PER_DOC = ["invisible_unicode", "hidden_content", "prompt_injection", "backdoor_tail", "keyword_stuffing",
           "llm_ngram", "llm_markers", "consent", "language", "gopher_quality", "gopher_repetition", "c4_quality",
           "fineweb_quality"]
CPU_BUILTINS = CORPUS + PER_DOC  # every built-in that needs no model download (llm_lm does)
DUP = ["exact_duplicate", "near_duplicate"]
GROUPS = {"all": CPU_BUILTINS, "dup": DUP, "corpus": CORPUS, "perdoc": PER_DOC}
CHAT = ["As an AI language model, I can explain this.", "Sure! Here is the rewritten article:",
        "I hope this helps! Let me know if you have any other questions."]


def vocabulary(rng: np.random.Generator, size: int = 50_000) -> list[str]:
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    weights = np.linspace(2.0, 0.2, len(letters))
    weights /= weights.sum()
    words = {"".join(rng.choice(letters, rng.integers(2, 10), p=weights)) for _ in range(size * 2)}
    return sorted(words)[:size]


def generate(n: int, out: Path, seed: int, exact_share: float, near_share: float, llm_share: float,
             shard_docs: int = 100_000) -> list[Path]:
    """JSONL.gz shards of ``n`` documents; the same arguments give the same bytes."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks ** 1.1
    p /= p.sum()
    # rng.choice(len(vocab), 300, p=p) draws exactly this (the same bytes), but computes the CDF on every call
    cdf = p.cumsum()
    cdf /= cdf[-1]
    start = datetime(2022, 1, 1, tzinfo=timezone.utc)
    shards, recent = [], []
    for s in range(0, n, shard_docs):
        path = out / f"corpus-{s // shard_docs:05d}.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
            for i in range(s, min(n, s + shard_docs)):
                roll = rng.random()
                if recent and roll < exact_share:
                    text = recent[rng.integers(len(recent))]
                elif recent and roll < exact_share + near_share:
                    words = recent[rng.integers(len(recent))].split()
                    for j in rng.integers(0, len(words), 3):
                        words[j] = vocab[rng.integers(len(vocab))]
                    text = " ".join(words)
                else:
                    words = [vocab[k] for k in cdf.searchsorted(rng.random(300), side="right").tolist()]
                    text = " ".join(" ".join(words[k:k + 15]).capitalize() + "." for k in range(0, 300, 15))
                    if roll > 1 - llm_share:
                        text = f"{CHAT[i % len(CHAT)]} {text}"
                recent.append(text)
                if len(recent) > 1000:
                    recent.pop(0)
                when = start + timedelta(seconds=int(rng.integers(0, 2 * 365 * 86400)))
                f.write(json.dumps({"url": f"https://site{i % 2000}.example/{i}", "text": text,
                                    "fetched_at": when.isoformat()}) + "\n")
        shards.append(path)
    return shards


def corpus(n: int, work: Path, args) -> list[Path]:
    """The shards of ``n`` documents: generated into ``work``, or with ``--corpus-dir`` generated there once
    (into ``<dir>/<n>-<seed>-<shares>``) and reused, since the same arguments give the same bytes."""
    if not args.corpus_dir:
        return generate(n, work, args.seed, args.exact_share, args.near_share, args.llm_share)
    where = Path(args.corpus_dir) / f"{n}-{args.seed}-{args.exact_share}-{args.near_share}-{args.llm_share}"
    done = where / "complete"
    if not done.exists():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        generate(n, where, args.seed, args.exact_share, args.near_share, args.llm_share)
        done.touch()
    return sorted(where.glob("corpus-*.jsonl.gz"))


def timed(args: list[str]) -> tuple[float, float, str, float, float]:
    """(wall seconds, peak RSS MB, stdout, user CPU seconds, system CPU seconds) of one CLI process, detector
    workers included; the CPU seconds are the steadier figure on a machine shared with other work."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf.name, sys.executable, "-c",
                               "from provenance.cli import main; main()", *args],
                              capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        # exit 3 (partial) is an ingest that skipped bad records; a tag run with a detector fault measured nothing
        if proc.returncode not in ((0,) if args[0] == "tag" else (0, 3)):
            raise SystemExit(f"bench: provenance {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        wall, rss_kb, user, system = tf.read().split()[-4:]
    return float(wall), int(rss_kb) / 1024, proc.stdout, float(user), float(system)


def load() -> float:
    """The machine's 1-minute load average as a stage ends (other work on the machine slows the stage)."""
    return round(os.getloadavg()[0], 2)


CALIBRATION_DOCS = 3000


def calibration() -> float:
    """CPU seconds of a fixed workload like ingest's (parsing JSON, SHA-256, splitting words, a numpy sort),
    best of three. This VM's speed drifts by 20% or more over minutes with nothing else running (the same 1M
    ingest: 73 us a document one day, 86 and 115 the next), so CPU seconds per document from runs at different
    times compare only as multiples of this, measured as each stage starts and ends: ``cpu_units_per_doc`` is
    a stage's CPU time per document over the calibration's per document of its 3,000 (``CALIBRATION_DOCS``)."""
    import hashlib

    rng = np.random.default_rng(0)
    lines = [json.dumps({"text": " ".join(f"w{int(x)}" for x in rng.zipf(1.1, 300) % 50_000)}) for _ in range(300)]
    values = rng.integers(0, 2**63, 1_000_000)
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        for line in lines * (CALIBRATION_DOCS // len(lines)):
            text = json.loads(line)["text"]
            hashlib.sha256(text.encode()).hexdigest()
            text.split()
        np.sort(values)
        best = min(best, time.process_time() - t)
    return best


def open_seconds(store: Path) -> float:
    code = ("import time; from provenance.store import Store; s = Store.open(%r); best = 1e9\n"
            "for _ in range(3):\n t = time.perf_counter(); s.snapshot(); best = min(best, time.perf_counter() - t)\n"
            "print(best)") % str(store)
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def stage(result: dict, name: str, args: list[str]) -> None:
    """Runs one stage (``timed``) between two calibrations; records and prints its figures, with the load
    average as it ended and its CPU per document in calibration units."""
    n = result["docs"]
    before = calibration()
    wall, rss, _stdout, user, system = timed(args)
    cpu = user + system
    calibration_s = (before + calibration()) / 2
    units = cpu / n / (calibration_s / CALIBRATION_DOCS)
    result["stages"][name] = {"seconds": wall, "peak_mb": rss, "docs_per_s": n / wall, "cpu_s": cpu,
                              "system_s": system, "load": load(), "calibration_s": round(calibration_s, 5),
                              "cpu_units_per_doc": round(units, 3)}
    print(f"  {n:>9,} {name:<40} {wall:8.1f} s  {n / wall:9.0f} docs/s  {rss:7.0f} MB  {cpu:8.1f} CPU s  "
          f"{units:6.2f} units/doc  load {load()}", flush=True)


COMPACT_MB = 512  # files of up to 512 MB: a shard of 100,000 documents of 2 KB is one


def run_size(n: int, engines: list[str], detectors: list[str], work: Path, args) -> dict:
    result: dict = {"docs": n, "stages": {}}
    shards = corpus(n, work, args)
    base = work / "store"
    stage(result, "ingest", ["ingest", "--store", str(base), *map(str, shards)])
    stage(result, "compact", ["store", "compact", "--store", str(base), "--target-mb", str(COMPACT_MB)])
    for engine in engines:
        store = work / f"store-{engine}"
        if len(engines) == 1:
            base.rename(store)  # no copy (at 10M documents it is 15 GB)
        else:
            shutil.copytree(base, store)
        flags = {"local": [], "workers2": ["--workers", "2"], "ray": ["--engine", "ray"]}[engine]
        if args.together:  # one run of them all, as a nightly job runs them: the memory of the whole run
            stage(result, f"tag {args.detectors} together ({engine})",
                  ["tag", "--store", str(store), "--plugins", ",".join(detectors), *flags])
        else:
            for d in detectors:
                stage(result, f"tag {d} ({engine})", ["tag", "--store", str(store), "--plugins", d, *flags])
    store = work / f"store-{engines[0]}" if engines else base
    result["stages"]["store open"] = {"seconds": open_seconds(store)}
    if args.no_export:
        return result
    stage(result, "export", ["export", "--store", str(store), "--out", str(work / "export"),
                             "--where", "NOT flagged"])
    return result


def merged(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` updated with ``new``: a size in both keeps its stages that ``new`` did not measure again."""
    by_size = {r["docs"]: {"docs": r["docs"], "stages": dict(r["stages"])} for r in old}
    for r in new:
        by_size.setdefault(r["docs"], {"docs": r["docs"], "stages": {}})["stages"].update(r["stages"])
    return [by_size[n] for n in sorted(by_size)]


def plot(results: list[dict], path: str) -> None:
    """Documents/s of every stage against size, log-log (flat: linear scaling)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for stage in dict.fromkeys(st for r in results for st in r["stages"]):
        xs = [r["docs"] for r in results if stage in r["stages"] and "docs_per_s" in r["stages"][stage]]
        ys = [r["stages"][stage]["docs_per_s"] for r in results if stage in r["stages"]
              and "docs_per_s" in r["stages"][stage]]
        if len(xs) >= 3:  # a curve, not a point or two (the by-size tables in docs/SCALE.md have the rest)
            ax.plot(xs, ys, marker="o", label=stage)
    ax.set(xscale="log", yscale="log", xlabel="documents", ylabel="documents/s",
           title="Throughput by stage, stages measured at 3 sizes or more (flat = linear scaling)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot -> {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--engines", default="local,workers2,ray")
    ap.add_argument("--detectors", default="all", help="all (the CPU built-ins), dup (exact and near), corpus "
                    "(those whose cost can grow with the corpus), perdoc (the rest), or names")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact-share", type=float, default=0.02)
    ap.add_argument("--near-share", type=float, default=0.05)
    ap.add_argument("--llm-share", type=float, default=0.02)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument("--plot", default=str(ROOT / "bench" / "results" / "scale.png"))
    ap.add_argument("--workdir", default=None, help="where stores go (default: a temporary directory)")
    ap.add_argument("--corpus-dir", default=None, help="keep generated corpora here and reuse them")
    ap.add_argument("--merge", action="store_true", help="keep the figures already in --out that this run does "
                    "not measure again (other sizes, and other stages of the same size)")
    ap.add_argument("--no-export", action="store_true", help="skip the export stage")
    ap.add_argument("--together", action="store_true",
                    help="tag with all the detectors in one run (one stage) instead of each on its own")
    ap.add_argument("--generate-only", action="store_true",
                    help="only generate the corpora into --corpus-dir (untimed), to reuse in later runs")
    args = ap.parse_args(argv)
    if args.generate_only:
        if not args.corpus_dir:
            ap.error("--generate-only needs --corpus-dir")
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"size {n:,}: {len(corpus(n, Path(args.corpus_dir), args))} shards in {args.corpus_dir}", flush=True)
        return 0
    detectors = GROUPS.get(args.detectors) or [d for d in args.detectors.split(",") if d]
    engines = [e for e in args.engines.split(",") if e]
    results = []
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"scale-{n}-", dir=args.workdir) as tmp:
            print(f"size {n:,}: generating, then ingest, tag per detector per engine, store open, export", flush=True)
            res = run_size(n, engines, detectors, Path(tmp), args)
        results.append(res)
        for stage, fig in res["stages"].items():
            rate = f"{fig['docs_per_s']:9.0f} docs/s" if "docs_per_s" in fig else " " * 16
            mem = f"{fig['peak_mb']:7.0f} MB" if "peak_mb" in fig else ""
            print(f"  {n:>9,} {stage:<40} {fig['seconds']:8.2f} s {rate}  {mem}", flush=True)
    if args.merge and Path(args.out).exists():
        results = merged(json.loads(Path(args.out).read_text())["results"], results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{os.cpu_count()} CPUs", "results": results}, indent=1))
    print(f"figures -> {args.out}")
    if len(results) > 1 and args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
