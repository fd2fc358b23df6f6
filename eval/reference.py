"""The reference texts in ../shared that the evaluations and benchmarks read: where, how, their dates, and
edited copies of them (near duplicates with a known share of word edits); and the labelled LLM-detection
data."""

from __future__ import annotations

import gzip
import json
import random
from datetime import datetime
from pathlib import Path

TEXT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
DATA = TEXT_DATA / "human_reference.jsonl.gz"
LLM_DATA = TEXT_DATA / "llm_reference.jsonl.gz"
# dataset, source, subset, label (1 = LLM), generator, domain, attack, group, text
LABELLED_DEV = TEXT_DATA.parent / "detect" / "labelled-dev.parquet"


def read_reference(path: Path, who: str) -> list[dict] | None:
    """Every record of a ``.jsonl.gz`` reference file; None (with one line on stderr) when it is absent."""
    if not path.exists():
        import sys

        print(f"{who}: {path} not found (needs ../shared)", file=sys.stderr)
        return None
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def read_labelled(path: Path, who: str, columns=("dataset", "label", "generator", "domain", "group", "text")
                  ) -> list[dict] | None:
    """Rows of a labelled Parquet file (by default the columns the LLM evaluations use); None (with one line
    on stderr) when it is absent."""
    if not Path(path).is_file():
        import sys

        print(f"{who}: {path} not found (needs ../shared)", file=sys.stderr)
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=list(columns)).to_pylist()


def shuffled_texts(rng: random.Random, who: str) -> list[str] | None:
    """The human reference texts in an order drawn from ``rng`` (None, with one line on stderr, when absent)."""
    records = read_reference(DATA, who)
    if records is None:
        return None
    texts = [r["text"] for r in records]
    rng.shuffle(texts)
    return texts


def iso_date(value: str | None) -> str | None:
    """Reuters dates look like '26-FEB-1987 15:01:01.79'; other sources give only '<=2015'."""
    try:
        return datetime.strptime(value, "%d-%b-%Y %H:%M:%S.%f").isoformat() + "Z"
    except (TypeError, ValueError):
        return None


def edited(rng: random.Random, text: str, rate: float, vocabulary: list[str]) -> str:
    """``text`` with round(rate * words) random word edits (at least one): replace, delete or insert a word."""
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        op, i = rng.choice("rdi"), rng.randrange(max(1, len(words)))
        if op == "r" and words:
            words[i] = rng.choice(vocabulary)
        elif op == "d" and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocabulary))
    return " ".join(words)


def ingest_records(records, workdir: Path):
    """``records`` (dicts with url, text, fetched_at, ref_id) through the real ingest into a new store under
    ``workdir``; the store. A record that fails to ingest ends the script with one line: the figures would be off."""
    import sys

    from provenance.ingest import run_ingest
    from provenance.store import Store

    src = workdir / "texts.jsonl"
    with open(src, "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    store = Store.open(workdir / "store", create=True)
    ingested = run_ingest(store, [src], crawl_id="eval")
    if ingested.problems:
        sys.exit(f"eval: {len(ingested.problems)} texts failed to ingest, e.g. {ingested.problems[0]}")
    return store


def tag_with(store, detectors: list[str], options: dict | None = None):
    """``provenance tag`` of the named detectors over ``store`` through the real runner (``options``: detector ->
    its options); the run summary. Faults end the script with one line: the figures would be off."""
    import sys

    from provenance.config import DEFAULTS
    from provenance.pluginmanager import get_plugin_manager
    from provenance.runner import run_tag

    summary = run_tag(store, get_plugin_manager(), {**DEFAULTS, "detectors": options or {}}, enable=detectors)
    if summary.errors:
        sys.exit(f"eval: the tag run recorded {summary.errors} fault(s); see the errors view")
    return summary
