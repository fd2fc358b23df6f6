"""``provenance export``: a training set chosen by a SQL predicate, with a manifest that defends it.

The predicate is SQL over ``documents`` joined with ``doc_flags`` (e.g.
``NOT flagged``, ``coalesce(llm_score, 0) < 0.5 AND domain = 'example.org'``).
The output directory gets:

  documents.parquet   the selected documents (without the raw body unless asked)
  manifest.json       query, input files and their sha256, counts kept and
                      excluded by category and tag, every detector that vetted
                      the set (plugin, versions, config hash, how many kept
                      documents it covered), tool version and time
  README.md           a short dataset card

It is assembled in a temporary directory and renamed into place, so a failed
export leaves nothing half-written. The manifest follows schemas/manifest.v1.json.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb

import provenance
from provenance.sql import create_views, sql_list
from provenance.store import Store, file_sha256, utcnow

MANIFEST_VERSION = 1
DEFAULT_WHERE = "NOT flagged"


class ExportError(Exception):
    """An export that cannot be made (bad predicate, output exists, ...)."""


def _coverage_table(con, snapshot) -> None:
    rows = []
    for c in snapshot.coverage:
        if c.get("corpus"):
            for f in c["doc_files"]:
                rows.append((c["detector"], c["tag_key"], str(snapshot.root / f), 0, 2**62))
        else:
            for start, end in c["ranges"]:
                rows.append((c["detector"], c["tag_key"], str(snapshot.root / c["doc_file"]), start, end))
    con.execute("CREATE TEMP TABLE coverage (detector VARCHAR, tag_key VARCHAR, file VARCHAR, "
                "row_start BIGINT, row_end BIGINT)")
    if rows:
        con.executemany("INSERT INTO coverage VALUES (?, ?, ?, ?, ?)", rows)


def _detector_descriptions(store: Store) -> dict[tuple[str, str], dict]:
    """(detector, tag_key) -> description recorded by the tag runs that used it."""
    found = {}
    for record in store.runs():
        if record.get("command") != "tag":
            continue
        for d in record.get("config", {}).get("detectors", []):
            found[(d["detector"], d["tag_key"])] = d
    return found


def run_export(store: Store, out_dir: Path, where: str = DEFAULT_WHERE, include_raw: bool = False,
               overwrite: bool = False) -> dict:
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ExportError(f"{out_dir}: exists and is not empty (use --overwrite to replace it)")
    snapshot = store.snapshot()
    con = duckdb.connect()
    create_views(con, store, snapshot)
    doc_paths = snapshot.paths("documents")
    if not doc_paths:
        raise ExportError(f"{store.root}: the store holds no documents")
    con.execute(f"CREATE TEMP VIEW located AS SELECT doc_id, filename AS _file, file_row_number AS _row "
                f"FROM read_parquet({sql_list(doc_paths)}, filename=true, file_row_number=true)")
    selection = f"SELECT doc_id FROM documents JOIN doc_flags USING (doc_id) WHERE ({where})"
    try:
        con.execute(f"CREATE TEMP TABLE selected AS {selection}")
    except duckdb.Error as exc:
        raise ExportError(f"--where {where!r} is not a valid predicate over documents and doc_flags: "
                          f"{str(exc).splitlines()[0]}") from None
    _coverage_table(con, snapshot)

    columns = "*" if include_raw else "* EXCLUDE (raw)"
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        data_path = tmp_dir / "documents.parquet"
        con.execute(f"COPY (SELECT {columns} FROM documents WHERE doc_id IN (SELECT doc_id FROM selected) "
                    f"ORDER BY doc_id) TO '{data_path}' (FORMAT parquet, COMPRESSION zstd)")
        manifest = _manifest(con, store, snapshot, where, selection, data_path)
        (tmp_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (tmp_dir / "README.md").write_text(dataset_card(manifest))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest


def _counts_by(con, sql: str) -> dict[str, int]:
    return {k: v for k, v in con.execute(sql).fetchall()}


def _manifest(con, store: Store, snapshot, where: str, selection: str, data_path: Path) -> dict:
    total = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    kept = con.execute("SELECT count(*) FROM selected").fetchone()[0]
    excluded_tags = "FROM tags WHERE doc_id NOT IN (SELECT doc_id FROM selected)"
    kept_tags = "FROM tags WHERE doc_id IN (SELECT doc_id FROM selected)"
    counts = {
        "documents_in_store": total,
        "kept": kept,
        "excluded": total - kept,
        "excluded_by_category": _counts_by(con, f"SELECT category, count(DISTINCT doc_id) {excluded_tags} "
                                                "GROUP BY 1 ORDER BY 1"),
        "excluded_by_tag": _counts_by(con, f"SELECT category || ':' || tag, count(DISTINCT doc_id) {excluded_tags} "
                                           "GROUP BY 1 ORDER BY 1"),
        "excluded_without_tags": con.execute(
            "SELECT count(*) FROM doc_flags WHERE NOT flagged AND doc_id NOT IN (SELECT doc_id FROM selected)"
        ).fetchone()[0],
        "kept_with_tags_by_tag": _counts_by(con, f"SELECT category || ':' || tag, count(DISTINCT doc_id) {kept_tags} "
                                                 "GROUP BY 1 ORDER BY 1"),
    }
    descriptions = _detector_descriptions(store)
    detectors = []
    for detector, tag_key, covered in con.execute(
        "SELECT c.detector, c.tag_key, count(DISTINCT l.doc_id) FROM coverage c "
        "JOIN located l ON l._file = c.file AND l._row >= c.row_start AND l._row < c.row_end "
        "WHERE l.doc_id IN (SELECT doc_id FROM selected) GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall():
        d = dict(descriptions.get((detector, tag_key), {"detector": detector, "tag_key": tag_key}))
        d["kept_documents_covered"] = covered
        d["covers_all_kept"] = covered == kept
        detectors.append(d)
    inputs = [{"path": e.path, "kind": e.kind, "rows": e.rows, "sha256": e.sha256}
              for kind in ("documents", "tags") for e in snapshot.entries(kind)]
    return {
        "manifest_version": MANIFEST_VERSION,
        "tool": {"name": "provenance-guard", "version": provenance.__version__},
        "created_at": utcnow().isoformat(),
        "store": str(store.root),
        "query": {"where": where, "sql": selection},
        "inputs": inputs,
        "outputs": [{"path": data_path.name, "rows": kept, "bytes": data_path.stat().st_size,
                     "sha256": file_sha256(data_path)}],
        "counts": counts,
        "detectors": detectors,
    }


def dataset_card(m: dict) -> str:
    c = m["counts"]
    lines = [
        "# Dataset card", "",
        f"Exported by {m['tool']['name']} {m['tool']['version']} on {m['created_at']} from `{m['store']}`.", "",
        f"- Selection: `{m['query']['where']}`",
        f"- Kept **{c['kept']}** of {c['documents_in_store']} documents; excluded {c['excluded']}.",
        f"- Data: `documents.parquet` (sha256 `{m['outputs'][0]['sha256'][:16]}…`); full details in `manifest.json`.",
        "", "## Why documents were excluded", "",
    ]
    if c["excluded_by_tag"]:
        lines += ["| category:tag | documents |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in c["excluded_by_tag"].items()]
    else:
        lines.append("No tagged document was excluded.")
    if c["excluded_without_tags"]:
        lines.append(f"\n{c['excluded_without_tags']} untagged documents were excluded by the predicate itself.")
    lines += ["", "## Detectors that vetted it", ""]
    if m["detectors"]:
        lines += ["| detector | version | plugin | config | kept documents covered |", "| --- | --- | --- | --- | --- |"]
        for d in m["detectors"]:
            lines.append(f"| {d['detector']} | {d.get('detector_version', '?')} | {d.get('plugin', '?')} "
                         f"{d.get('plugin_version', '')} | `{d.get('config_hash', d['tag_key'])}` | "
                         f"{d['kept_documents_covered']} of {c['kept']} |")
    else:
        lines.append("No detector has run over these documents: they are unvetted.")
    return "\n".join(lines) + "\n"
