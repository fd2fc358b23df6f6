"""The human reference texts in ../shared that the evaluations and benchmarks read: where, how, and their dates."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "human_reference.jsonl.gz"


def read_reference(path: Path, who: str) -> list[dict] | None:
    """Every record of a ``.jsonl.gz`` reference file; None (with one line on stderr) when it is absent."""
    if not path.exists():
        import sys

        print(f"{who}: {path} not found (needs ../shared)", file=sys.stderr)
        return None
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def iso_date(value: str | None) -> str | None:
    """Reuters dates look like '26-FEB-1987 15:01:01.79'; other sources give only '<=2015'."""
    try:
        return datetime.strptime(value, "%d-%b-%Y %H:%M:%S.%f").isoformat() + "Z"
    except (TypeError, ValueError):
        return None
