"""A real S3-compatible server on 127.0.0.1 for the object-store tests: moto's server app under werkzeug.

``s3`` (a fixture) starts it on a free loopback port, once per module, with every request logged (method, path,
query), and gives the environment a CLI needs to reach it: the endpoint, test keys, and instance metadata
off, so nothing the AWS SDK does can send a packet anywhere but 127.0.0.1. Skips cleanly without moto
(`pip install 'moto[s3,server]'`, part of the `test` extra).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class S3Server:
    port: int
    # (method, path, query, Range header or '') of every request, as the server saw them
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a CLI subprocess needs: the endpoint from AWS_ENDPOINT_URL, keys, no instance metadata."""
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def query(self) -> str:
        """The same endpoint as URI query parameters (pyarrow's names)."""
        return f"?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def filesystem(self):
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", access_key="testing",
                                 secret_key="testing", region="us-east-1")

    def bucket(self, name: str) -> str:
        """Create a bucket (if new); returns ``s3://name``."""
        fs = self.filesystem()
        from pyarrow import fs as pafs

        if fs.get_file_info(name).type == pafs.FileType.NotFound:
            pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", access_key="testing",
                              secret_key="testing", region="us-east-1", allow_bucket_creation=True).create_dir(name)
        return f"s3://{name}"

    def put(self, key: str, data: bytes) -> None:
        """Write ``bucket/key``."""
        with self.filesystem().open_output_stream(key, compression=None) as out:  # bytes as given, .gz or not
            out.write(data)

    def gets(self, prefix: str = "") -> list[str]:
        """Paths of the object GETs seen (listings, which GET the bucket with a query, left out)."""
        return [path for method, path, query, _range in self.requests
                if method == "GET" and path.startswith(prefix) and "list-type" not in query]

    @property
    def ranges(self) -> list[tuple[str, str]]:
        """(path, Range header) of every object GET."""
        return [(path, byte_range) for method, path, query, byte_range in self.requests
                if method == "GET" and "list-type" not in query]


@pytest.fixture(scope="module")
def s3():
    try:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server
    except ImportError:
        pytest.skip("moto is not installed: pip install 'moto[s3,server]' (the test extra)")
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # this process's pyarrow too (the test's own reads and writes)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    server_box: list[S3Server] = []

    def logged(environ, start_response):
        server_box[0].requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                       environ.get("QUERY_STRING", ""), environ.get("HTTP_RANGE", "")))
        return app(environ, start_response)

    httpd = make_server("127.0.0.1", 0, logged, threaded=True)
    server_box.append(S3Server(httpd.server_port))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_box[0]
    finally:
        httpd.shutdown()
        thread.join(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
