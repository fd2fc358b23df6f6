"""Object storage: `ingest s3://...` read as a stream from a real S3-compatible server (moto's) on 127.0.0.1.

The CLI runs in a subprocess with the endpoint from AWS_ENDPOINT_URL or from the URI's query (both documented
ways), test keys and instance metadata off: nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import gzip
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
import pytest
from s3server import s3  # noqa: F401  (the fixture)
from test_warc import build_sample

from provenance import exitcodes, objectstore
from provenance.store import Store


def documents(store_dir) -> list[dict]:
    rows = []
    for path in Store.open(store_dir).snapshot().paths("documents"):
        rows.extend(pq.read_table(path, columns=["url", "doc_id", "source", "source_file", "source_line",
                                                 "warc_filename", "warc_offset", "text"]).to_pylist())
    return rows


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def test_ingest_a_warc_from_a_bucket_records_the_uri_and_stores_nothing_twice(s3, cli, tmp_path):  # noqa: F811
    bucket = s3.bucket("crawl-warc")
    sample = tmp_path / "sample.warc.gz"
    build_sample(sample)
    s3.put("crawl-warc/2020/sample.warc.gz", sample.read_bytes())
    local = tmp_path / "local"
    cli("ingest", sample, "--store", local, check=exitcodes.PARTIAL)  # the sample holds one bad revisit

    uri = f"{bucket}/2020/sample.warc.gz"
    first = cli("ingest", uri, "--store", tmp_path / "s", env=s3.env)
    assert first.returncode == exitcodes.PARTIAL, first.stderr
    assert "Traceback" not in first.stderr
    docs = documents(tmp_path / "s")
    assert {d["source_file"] for d in docs} == {uri}, first.stdout + first.stderr  # the URI, no endpoint in it
    assert {d["warc_filename"] for d in docs} == {"sample.warc.gz"}
    # The same documents, offsets and texts as from the local copy (the URL-agnostic revisit re-read its original
    # from the bucket by offset).
    strip = [{k: v for k, v in d.items() if k != "source_file"} for d in docs]
    assert sorted(strip, key=lambda d: d["doc_id"]) == sorted(
        ({k: v for k, v in d.items() if k != "source_file"} for d in documents(local)), key=lambda d: d["doc_id"])
    assert len(docs) == 3
    assert s3.gets("/crawl-warc/2020/sample.warc.gz")  # read from the server

    again = cli("ingest", uri, "--store", tmp_path / "s", env=s3.env)
    assert "0 stored, 4 already stored" in again.stdout, again.stdout  # 3 documents and the revisit of one
    assert len(documents(tmp_path / "s")) == 3
    runs = [json.loads(p.read_text()) for p in (tmp_path / "s" / "runs").glob("*.json")]
    assert all(r["config"]["inputs"] == [uri] for r in runs)


def test_ingest_a_prefix_and_a_glob_of_jsonl_and_parquet_with_the_endpoint_in_the_uri(s3, cli, tmp_path):  # noqa: F811
    bucket = s3.bucket("crawl-files")
    s3.put("crawl-files/in/a.jsonl", jsonl([{"url": "https://a.example/1", "text": "First page text."},
                                            {"url": "https://a.example/2", "text": "Second page text."}]))
    s3.put("crawl-files/in/sub/b.jsonl.gz", gzip.compress(jsonl([{"url": "https://b.example/1", "text": "B one."}])))
    sink = io.BytesIO()
    pq.write_table(pa.table({"url": ["https://c.example/1", "https://c.example/2"], "text": ["C one.", "C two."]}), sink)
    s3.put("crawl-files/in/c.parquet", sink.getvalue())
    s3.put("crawl-files/in/notes.txt", b"not an input")
    env = {k: v for k, v in s3.env.items() if k != "AWS_ENDPOINT_URL"}  # the endpoint only in the URI

    proc = cli("ingest", f"{bucket}/in/{s3.query()}", "--store", tmp_path / "s", env=env)
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert "5 records in 3 file(s): 5 stored" in proc.stdout and "notes.txt" in proc.stdout
    sources = {d["url"]: (d["source_file"], d["source_line"]) for d in documents(tmp_path / "s")}
    assert sources["https://a.example/2"] == ("s3://crawl-files/in/a.jsonl", 2)
    assert sources["https://b.example/1"] == ("s3://crawl-files/in/sub/b.jsonl.gz", 1)
    assert sources["https://c.example/2"] == ("s3://crawl-files/in/c.parquet", 2)

    # A glob: `*` stays within one level of the key.
    glob = cli("ingest", f"{bucket}/in/*.jsonl*{s3.query()}", "--store", tmp_path / "g", env=env, check=exitcodes.OK)
    assert "2 records in 1 file(s)" in glob.stdout
    deep = cli("ingest", f"{bucket}/in/**.jsonl*{s3.query()}", "--store", tmp_path / "g", env=env, check=exitcodes.OK)
    assert "3 records in 2 file(s): 1 stored, 2 already stored" in deep.stdout


def test_a_large_object_is_read_in_ranged_gets_not_whole(s3, cli, tmp_path):  # noqa: F811
    s3.bucket("crawl-big")
    rng = random.Random(3)
    records = [{"url": f"https://big.example/{i}", "text": " ".join(f"{rng.getrandbits(64):x}" for _ in range(500))}
               for i in range(1200)]
    data = gzip.compress(jsonl(records), compresslevel=1)
    assert len(data) > objectstore.READ_BUFFER
    s3.put("crawl-big/big.jsonl.gz", data)
    s3.requests.clear()
    proc = cli("ingest", "s3://crawl-big/big.jsonl.gz", "--store", tmp_path / "s", env=s3.env, check=exitcodes.OK)
    assert "1200 stored" in proc.stdout
    reads = [r for r in s3.ranges if r[0] == "/crawl-big/big.jsonl.gz"]
    assert len(reads) >= 2  # several GETs ...
    assert all(rng_ and int(rng_.split("-")[1]) - int(rng_.split("=")[1].split("-")[0]) < objectstore.READ_BUFFER
               for _path, rng_ in reads)  # ... each a byte range of at most the read buffer
    assert sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1 for _p, r in reads) >= len(data)


@pytest.mark.parametrize("uri, code, words", [
    ("gs://bucket/a.jsonl", exitcodes.USAGE, ("unsupported URI scheme 'gs'", "s3://BUCKET/KEY")),
    ("s3://crawl-x/a.jsonl?access_key=AKIA", exitcodes.USAGE, ("unknown query parameter 'access_key'", "environment")),
    ("s3:///a.jsonl", exitcodes.USAGE, ("no bucket",)),
    ("s3://crawl-x/nope.jsonl", exitcodes.FAILURE, ("s3://crawl-x/nope.jsonl", "no objects to ingest")),
    ("s3://no-such-bucket/a.jsonl", exitcodes.FAILURE, ("s3://no-such-bucket/a.jsonl",)),
    ("s3://crawl-x/a.jsonl?endpoint_override=127.0.0.1:1&scheme=http", exitcodes.FAILURE,
     ("s3://crawl-x/a.jsonl: cannot list", "endpoint_override")),
])
def test_object_store_mistakes_are_one_line(s3, cli, tmp_path, uri, code, words):  # noqa: F811
    s3.bucket("crawl-x")
    proc = cli("ingest", uri, "--store", tmp_path / "s", env=s3.env)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("provenance: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_reference_add_from_a_bucket_equals_the_local_add(s3, cli, tmp_path):  # noqa: F811
    """`reference add NAME s3://BUCKET/PREFIX/` (JSONL and Parquet) stores the same set as the same files added
    from disk: the same texts, ids and content hash, with the objects' URIs as source files."""
    s3.bucket("refs-x")
    records = [{"id": f"r{i}", "text": f"Reference text number {i} about rivers."} for i in range(40)]
    local = tmp_path / "refs"
    local.mkdir()
    (local / "a.jsonl").write_bytes(jsonl(records[:25]))
    pq.write_table(pa.Table.from_pylist(records[25:]), local / "b.parquet")
    for f in ("a.jsonl", "b.parquet"):
        s3.put(f"refs-x/set/{f}", (local / f).read_bytes())

    def added(store, source):
        proc = cli("reference", "add", "rivers", source, "--store", store, env=s3.env)
        assert proc.returncode == 0, proc.stderr
        snapshot = Store.open(store).snapshot()
        rows = pa.concat_tables(pq.read_table(p) for p in snapshot.paths("references")).to_pylist()
        return sorted((r["ref_id"], r["text"], r["source_file"]) for r in rows), \
            {e.meta["content_sha256"] for e in snapshot.entries("references")}

    from_bucket, bucket_hash = added(tmp_path / "s3store", "s3://refs-x/set/")
    from_disk, disk_hash = added(tmp_path / "localstore", local)
    assert bucket_hash == disk_hash and len(from_bucket) == 40
    assert [r[:2] for r in from_bucket] == [r[:2] for r in from_disk]
    assert {r[2] for r in from_bucket} == {"s3://refs-x/set/a.jsonl", "s3://refs-x/set/b.parquet"}


def test_refused_credentials_are_one_line_and_store_nothing(s3, cli, tmp_path):  # noqa: F811
    """With the server checking signatures (moto's IAM simulation: the test keys belong to no user), an ingest
    and an export are refused with one line naming the URI and the credentials; nothing is stored."""
    from moto.core.authorization import enable_iam_authentication

    s3.bucket("crawl-auth")
    s3.put("crawl-auth/a.jsonl", jsonl([{"url": "https://example.org/a", "text": "A page of words."}]))
    (tmp_path / "a.jsonl").write_bytes(jsonl([{"url": "https://example.org/b", "text": "Another page."}]))
    assert cli("ingest", tmp_path / "a.jsonl", "--store", tmp_path / "local").returncode == 0
    with enable_iam_authentication():
        refused = [cli("ingest", "s3://crawl-auth/a.jsonl", "--store", tmp_path / "s", env=s3.env),
                   cli("export", "--store", tmp_path / "local", "--out", "s3://crawl-auth/out", env=s3.env)]
    for proc, uri in zip(refused, ("s3://crawl-auth/a.jsonl", "s3://crawl-auth/out")):
        assert proc.returncode == exitcodes.FAILURE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("provenance: error: "), proc.stderr
        assert uri in lines[0] and "ACCESS_DENIED" in lines[0] and "AWS_ACCESS_KEY_ID" in lines[0], lines[0]
    assert not (tmp_path / "s").exists() or not Store.open(tmp_path / "s").snapshot().paths("documents")
    assert not s3.filesystem().get_file_info(pafs.FileSelector("crawl-auth/out", allow_not_found=True))


def test_export_to_a_bucket_writes_the_clean_set_and_its_manifest(s3, cli, tmp_path):  # noqa: F811
    import hashlib

    from provenance.testing import make_store

    make_store(tmp_path / "s", [f"Document number {i} about rivers and mills." for i in range(30)])
    s3.bucket("exports")
    out = f"s3://exports/clean/v1{s3.query()}"
    proc = cli("export", "--store", tmp_path / "s", "--out", out, env=s3.env, check=exitcodes.OK)
    assert "kept 30 of 30 documents" in proc.stdout and "-> s3://exports/clean/v1" in proc.stdout
    local = cli("export", "--store", tmp_path / "s", "--out", tmp_path / "local", check=exitcodes.OK)
    assert local.returncode == 0

    fs = s3.filesystem()
    with fs.open_input_file("exports/clean/v1/documents.parquet") as fh:
        data = fh.read()
    assert pq.read_table(io.BytesIO(data)).column("doc_id").to_pylist() == \
        pq.read_table(tmp_path / "local" / "documents.parquet").column("doc_id").to_pylist()
    with fs.open_input_file("exports/clean/v1/manifest.json") as fh:
        manifest = json.loads(fh.read())
    assert manifest["location"] == "s3://exports/clean/v1" and manifest["paths"] == "absolute"
    assert manifest["outputs"][0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["counts"]["kept"] == 30
    with fs.open_input_file("exports/clean/v1/README.md") as fh:
        assert b"30" in fh.read()

    # As with a local --out: an earlier export is replaced only with --overwrite, anything else never.
    again = cli("export", "--store", tmp_path / "s", "--out", out, env=s3.env)
    assert again.returncode == exitcodes.USAGE and "use --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    cli("export", "--store", tmp_path / "s", "--out", out, "--overwrite", "--where", "doc_id < '8'", env=s3.env,
        check=exitcodes.OK)
    s3.put("exports/mine/notes.txt", b"a user's file")
    foreign = cli("export", "--store", tmp_path / "s", "--out", f"s3://exports/mine{s3.query()}", "--overwrite",
                  env=s3.env)
    assert foreign.returncode == exitcodes.USAGE and "notes.txt" in foreign.stderr
    with fs.open_input_file("exports/mine/notes.txt") as fh:
        assert fh.read() == b"a user's file"


def test_a_sharded_export_to_a_bucket_leaves_no_shard_of_the_export_it_replaces(s3, cli, tmp_path):  # noqa: F811
    """Shards are uploaded as a local export writes them; replacing that export with one of fewer shards deletes
    the earlier export's others (its manifest first, so a prefix never claims a whole export it does not hold),
    and the prefix then holds exactly what the new manifest lists."""
    import hashlib

    from provenance.testing import make_store

    make_store(tmp_path / "s", [f"Ledger line {i}: grain, salt and wool." for i in range(45)])
    s3.bucket("exports")
    out = f"s3://exports/sharded{s3.query()}"
    cli("export", "--store", tmp_path / "s", "--out", out, "--shard-rows", "10", env=s3.env, check=exitcodes.OK)
    fs = s3.filesystem()

    def listed() -> list[str]:
        return sorted(f.path.rsplit("/", 1)[1] for f in fs.get_file_info(pafs.FileSelector("exports/sharded")))

    def manifest() -> dict:
        with fs.open_input_file("exports/sharded/manifest.json") as fh:
            return json.loads(fh.read())

    shards = [f"documents-0000{i}-of-00005.parquet" for i in range(5)]
    assert listed() == sorted([*shards, "README.md", "manifest.json"])
    first = manifest()
    assert [o["path"] for o in first["outputs"]] == shards
    for o in first["outputs"]:
        with fs.open_input_file(f"exports/sharded/{o['path']}") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == o["sha256"]

    cli("export", "--store", tmp_path / "s", "--out", out, "--shard-rows", "20", "--overwrite", env=s3.env,
        check=exitcodes.OK)
    second = manifest()
    assert [o["path"] for o in second["outputs"]] == [f"documents-0000{i}-of-00003.parquet" for i in range(3)]
    assert listed() == sorted([*(o["path"] for o in second["outputs"]), "README.md", "manifest.json"])
    assert sum(o["rows"] for o in second["outputs"]) == 45
