"""Versioned schemas of everything the store holds (installed as ``provenance.schemas``).

Each Parquet kind (documents, tags, errors, fetches, references) is described once, in
``<kind>.v<N>.json`` beside this file; this module turns those descriptions
into pyarrow schemas and checks tables against them before they are written.
Every Parquet file carries ``provenance.schema`` and
``provenance.schema_version`` in its key-value metadata.

The export manifest is described by ``manifest.v2.json`` (a JSON Schema; ``manifest.v1.json`` for older ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_DIR = Path(__file__).resolve().parent
KINDS = ("documents", "tags", "errors", "fetches", "references")
# A new version adds nullable columns only: readers see older files with those columns null (sql.py).
CURRENT_VERSION = {**{kind: 1 for kind in KINDS}, "fetches": 3}
MANIFEST_SCHEMA_PATH = SCHEMA_DIR / "manifest.v2.json"  # v1: manifests written before paths were relative

HEADERS_TYPE = pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))

_TYPES = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.large_binary(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
    "headers": HEADERS_TYPE,
}


class SchemaError(ValueError):
    """A table does not fit its schema: names the kind and the offending column."""


@dataclass(frozen=True)
class Schema:
    kind: str
    version: int
    arrow: pa.Schema
    docs: dict[str, str]

    @property
    def names(self) -> list[str]:
        return self.arrow.names

    def metadata(self) -> dict[bytes, bytes]:
        return {
            b"provenance.schema": self.kind.encode(),
            b"provenance.schema_version": str(self.version).encode(),
        }


@lru_cache(maxsize=None)
def load(kind: str, version: int | None = None) -> Schema:
    """The schema of ``kind`` (documents, tags, errors, fetches, references), current version by default."""
    if kind not in KINDS:
        raise SchemaError(f"unknown schema kind {kind!r}; known: {', '.join(KINDS)}")
    version = version or CURRENT_VERSION[kind]
    spec = json.loads((SCHEMA_DIR / f"{kind}.v{version}.json").read_text())
    fields, docs = [], {}
    for f in spec["fields"]:
        fields.append(pa.field(f["name"], _TYPES[f["type"]], nullable=f.get("nullable", True)))
        docs[f["name"]] = f.get("doc", "")
    return Schema(kind, version, pa.schema(fields), docs)


def conform(table: pa.Table | pa.RecordBatch, kind: str) -> pa.Table:
    """Return ``table`` with exactly the columns of ``kind``'s schema, in order.

    Missing nullable columns are filled with nulls; columns are cast to the
    schema's types where the cast is safe. Raises SchemaError on an unknown
    column, a failed cast, or a null in a non-nullable column, so nothing that
    breaks the schema ever reaches the store.
    """
    schema = load(kind)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    unknown = set(table.column_names) - set(schema.names)
    if unknown:
        raise SchemaError(f"{kind}: unknown column(s) {sorted(unknown)}")
    columns = []
    for field in schema.arrow:
        if field.name in table.column_names:
            column = table.column(field.name)
            if not column.type.equals(field.type):
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(
                        f"{kind}.{field.name}: cannot store {column.type} as {field.type}: {exc}"
                    ) from None
        else:
            column = pa.nulls(table.num_rows, type=field.type)
        if not field.nullable and column.null_count:
            raise SchemaError(f"{kind}.{field.name}: {column.null_count} null value(s) in a required column")
        columns.append(column)
    out = pa.Table.from_arrays(columns, schema=schema.arrow)
    if kind == "tags" and out.num_rows:
        _check_scores(out)
    return out


def _check_scores(tags: pa.Table) -> None:
    score = tags.column("score")
    bad = pc.or_(pc.less(score, 0.0), pc.greater(score, 1.0))
    if pc.any(pc.fill_null(bad, False)).as_py() or pc.any(pc.is_nan(score)).as_py():
        raise SchemaError("tags.score: scores must lie in [0, 1] (or be null)")
