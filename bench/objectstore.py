"""Ingest from object storage against the same file on local disk: python bench/objectstore.py [--docs N] [--rounds R]

A generated JSONL.gz of N text records (about 2 KB each) is written to a local directory and to a bucket on
moto's S3 server, started on 127.0.0.1 in this process (nothing leaves the machine). Each round ingests it into a
fresh store from the local path, then from s3:// (interleaved; medians reported), and reports docs/s, the ratio,
and the GETs the object-store ingest made (ranged, READ_BUFFER bytes each). The figure measures our reader's
overhead over a loopback server that answers from memory, not a network: for a real bucket, add the
network's time per 4 MiB GET.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from provenance import objectstore  # noqa: E402
from provenance.ingest import run_ingest  # noqa: E402
from provenance.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from s3server import ENV, S3Server

    os.environ.update(ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app, gets = DomainDispatcherApplication(create_backend_app), []

    def logged(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and "list-type" not in environ.get("QUERY_STRING", ""):
            gets.append(environ.get("HTTP_RANGE", ""))
        return app(environ, start_response)

    httpd = make_server("127.0.0.1", 0, logged, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = S3Server(httpd.server_port)
    os.environ["AWS_ENDPOINT_URL"] = server.endpoint

    rng = random.Random(7)
    words = [f"w{i}" for i in range(5000)]
    lines = (json.dumps({"url": f"https://bench{i % 500}.example/p/{i}",
                         "text": " ".join(rng.choice(words) for _ in range(330))}) + "\n" for i in range(args.docs))
    data = gzip.compress("".join(lines).encode(), compresslevel=6)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "bench.jsonl.gz"
        local.write_bytes(data)
        server.bucket("bench")
        server.put("bench/bench.jsonl.gz", data)
        times: dict[str, list[float]] = {"local": [], "s3": []}
        for r in range(args.rounds):
            for mode, source in (("local", local), ("s3", "s3://bench/bench.jsonl.gz")):
                gets.clear()
                store = Store.open(Path(tmp) / f"store-{mode}-{r}", create=True)
                start = time.perf_counter()
                result = run_ingest(store, [source], flush_rows=5000)
                times[mode].append(time.perf_counter() - start)
                assert result.stored == args.docs, result.to_json()
                if mode == "s3":
                    s3_gets = len(gets)
    httpd.shutdown()
    local_s, s3_s = statistics.median(times["local"]), statistics.median(times["s3"])
    print(f"{args.docs} documents, {len(data) / 2**20:.1f} MiB gzipped JSONL, {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"local file : {local_s:6.2f} s  {args.docs / local_s:8.0f} docs/s")
    print(f"s3:// (moto): {s3_s:6.2f} s  {args.docs / s3_s:8.0f} docs/s  ({s3_s / local_s:.2f}x the local time; "
          f"{s3_gets} GETs of at most {objectstore.READ_BUFFER >> 20} MiB)")


if __name__ == "__main__":
    main()
