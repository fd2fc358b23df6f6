"""Object storage (``s3://``) for inputs, Ray staging and exports, through ``pyarrow.fs.S3FileSystem``.

The store itself stays a local directory (its commit log needs POSIX locks, renames and hard links); what
lives in a bucket is what is read or written whole, once: ``ingest`` inputs (read as a stream of ranged GETs,
never downloaded whole), the document files a ``tag --engine ray --stage s3://...`` run copies there for
clusters without a shared filesystem, and ``export --out s3://...``.

Where the bucket is, in this order:

* the URI's query: ``s3://bucket/key?endpoint_override=HOST:PORT&scheme=http&region=R&anonymous=true``
  (pyarrow's own names; the query is never recorded as provenance: ``canonical`` drops it);
* the environment: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``http://HOST:PORT``), ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION``;
* else AWS itself, in the bucket's own region (looked up once per bucket).

Credentials are the AWS SDK's default chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
(/``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` and ``~/.aws``, then instance metadata (set
``AWS_EC2_METADATA_DISABLED=true`` off EC2). Keys are never taken from the URI, so they never reach a log.

Every failure is an ``ObjectStoreError`` with one line that names the URI: a malformed URI or an unknown
query parameter (exit 2), a missing bucket or key, refused credentials or an unreachable endpoint (exit 1).
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from provenance import exitcodes

SCHEME = "s3://"
QUERY_KEYS = ("endpoint_override", "scheme", "region", "anonymous")
READ_BUFFER = 4 << 20  # bytes per ranged GET when a file is read as a stream
GLOB_CHARS = "*?["


class ObjectStoreError(Exception):
    """A URI that cannot be used (exit 2) or an object store that refuses or cannot be reached (exit 1)."""

    def __init__(self, message: str, exit_code: int = exitcodes.FAILURE):
        super().__init__(message)
        self.exit_code = exit_code


def is_uri(value) -> bool:
    """True for an object-store URI (``s3://...``); any other ``scheme://`` is refused by ``parse``."""
    return isinstance(value, str) and "://" in value


def parse(uri: str) -> tuple[str, str, dict[str, str]]:
    """(bucket, key, query) of an ``s3://bucket/key?...`` URI; ObjectStoreError (exit 2) when malformed."""
    if not uri.startswith(SCHEME):
        scheme = uri.split("://", 1)[0]
        raise ObjectStoreError(f"{uri}: unsupported URI scheme {scheme!r}: give a local path or s3://BUCKET/KEY",
                               exitcodes.USAGE)
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket:
        raise ObjectStoreError(f"{uri}: no bucket: give s3://BUCKET/KEY", exitcodes.USAGE)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise ObjectStoreError(f"{uri}: unknown query parameter {unknown[0]!r} (known: {', '.join(QUERY_KEYS)}; "
                               "credentials come from the environment, never the URI)", exitcodes.USAGE)
    if query.get("scheme", "https") not in ("http", "https"):
        raise ObjectStoreError(f"{uri}: scheme must be http or https, not {query['scheme']!r}", exitcodes.USAGE)
    if query.get("anonymous", "false") not in ("true", "false"):
        raise ObjectStoreError(f"{uri}: anonymous must be true or false", exitcodes.USAGE)
    return bucket, key, query


def canonical(uri: str) -> str:
    """``s3://bucket/key`` without the query: what provenance records (endpoints are configuration)."""
    bucket, key, _query = parse(uri)
    key = key.rstrip("/")  # a prefix given as PREFIX/ is PREFIX
    return f"{SCHEME}{bucket}/{key}" if key else f"{SCHEME}{bucket}"


def query_of(uri: str) -> str:
    """The ``?...`` part of a URI ('' when none), to carry onto URIs derived from it."""
    return "?" + uri.split("?", 1)[1] if "?" in uri else ""


def join(uri: str, *names: str) -> str:
    """``uri`` (a prefix) with ``names`` appended to its key, the query kept."""
    base = uri.split("?", 1)[0].rstrip("/")
    return "/".join([base, *(n.strip("/") for n in names)]) + query_of(uri)


def _endpoint(query: dict[str, str]) -> tuple[str | None, str]:
    """(endpoint_override, scheme): the query's, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else None (AWS)."""
    if query.get("endpoint_override"):
        return query["endpoint_override"], query.get("scheme", "https")
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        return parts.netloc, query.get("scheme", parts.scheme or "https")
    return None, query.get("scheme", "https")


def filesystem(uri: str):
    """(pyarrow S3FileSystem, "bucket/key") for ``uri``."""
    bucket, key, query = parse(uri)
    endpoint, scheme = _endpoint(query)
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    fs = _filesystem(endpoint, scheme, region, query.get("anonymous") == "true", None if endpoint or region else bucket)
    return fs, f"{bucket}/{key}".rstrip("/")


@functools.lru_cache(maxsize=32)
def _filesystem(endpoint: str | None, scheme: str, region: str | None, anonymous: bool, bucket: str | None):
    from pyarrow import fs as pafs

    if region is None and bucket is not None:  # AWS itself: the bucket's region
        try:
            region = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError) as exc:
            raise ObjectStoreError(f"s3://{bucket}: cannot find the bucket's region: {_line(exc)}; set AWS_REGION, "
                                   "or AWS_ENDPOINT_URL for an S3-compatible server") from None
    kwargs = {"scheme": scheme, "anonymous": anonymous, "connect_timeout": 10, "request_timeout": 60}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def failure(uri: str, exc: BaseException, doing: str = "read") -> ObjectStoreError:
    """One line for an error pyarrow raised about ``uri``."""
    if isinstance(exc, ObjectStoreError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ObjectStoreError(f"{canonical(uri)}: no such object (or bucket)")
    text = _line(exc)
    hint = ""
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "InvalidAccessKeyId" in text or "403" in text:
        hint = " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    elif "NETWORK_CONNECTION" in text or "resolve" in text.lower():
        hint = " (check AWS_ENDPOINT_URL or the URI's endpoint_override)"
    elif "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text:
        return ObjectStoreError(f"{canonical(uri)}: no such bucket")
    return ObjectStoreError(f"{canonical(uri)}: cannot {doing}: {text}{hint}")


def info(uri: str):
    """pyarrow FileInfo of ``uri``."""
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path)
    except Exception as exc:
        raise failure(uri, exc) from None


def size(uri: str) -> int:
    from pyarrow import fs as pafs

    found = info(uri)
    if found.type != pafs.FileType.File:
        raise ObjectStoreError(f"{canonical(uri)}: no such object")
    return found.size


def list_files(uri: str) -> list[str]:
    """The objects ``uri`` names, as URIs (its query kept): the object itself, every object under it as a
    prefix (recursively), or those whose key matches a glob (``*``, ``?``, ``[...]``; ``*`` does not cross
    ``/``, ``**`` does). Sorted; empty when nothing matches."""
    from pyarrow import fs as pafs

    bucket, key, _query = parse(uri)
    query = query_of(uri)
    fs, path = filesystem(uri)
    if any(c in key for c in GLOB_CHARS):
        static = key[:min(key.index(c) for c in GLOB_CHARS if c in key)]
        base = f"{bucket}/{static.rsplit('/', 1)[0]}" if "/" in static else bucket
        pattern = f"{bucket}/{key}"
        try:
            found = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except Exception as exc:
            raise failure(uri, exc, "list") from None
        keys = [f.path for f in found if f.type == pafs.FileType.File and _glob_match(f.path, pattern)]
        return [f"{SCHEME}{p}{query}" for p in sorted(keys)]
    try:
        found = fs.get_file_info(path)
        if found.type == pafs.FileType.File:
            return [uri]
        listed = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except Exception as exc:
        raise failure(uri, exc, "list") from None
    return [f"{SCHEME}{f.path}{query}" for f in sorted(listed, key=lambda f: f.path) if f.type == pafs.FileType.File]


def _glob_match(path: str, pattern: str) -> bool:
    """fnmatch where ``*`` stays within one path segment and ``**`` crosses segments."""
    import re

    regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace("\0", ".*")
    regex = regex.replace(r"\?", "[^/]")
    if "[" in pattern:  # character classes: leave them to fnmatch, segment by segment
        return len(path.split("/")) == len(pattern.split("/")) and all(
            fnmatch.fnmatchcase(a, b) for a, b in zip(path.split("/"), pattern.split("/")))
    return re.fullmatch(regex, path) is not None


class _RawInput(io.RawIOBase):
    """A pyarrow random-access file as a raw Python stream (each read one ranged GET)."""

    def __init__(self, native, name: str):
        self._f, self.name = native, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def open_input(uri: str, buffer_size: int = READ_BUFFER) -> io.BufferedReader:
    """A seekable binary stream over the object: buffered ranged GETs, never the whole object in memory."""
    native = open_random_access(uri)
    return io.BufferedReader(_RawInput(native, canonical(uri)), buffer_size=buffer_size)


def open_random_access(uri: str):
    """A pyarrow random-access file over the object (``pq.ParquetFile`` reads only the byte ranges it needs)."""
    fs, path = filesystem(uri)
    try:
        return fs.open_input_file(path)
    except Exception as exc:
        raise failure(uri, exc) from None


def upload(local: Path, uri: str) -> None:
    """Copy a local file to ``uri`` (a multipart upload for large files; visible only once complete)."""
    from pyarrow import fs as pafs

    fs, path = filesystem(uri)
    try:
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except Exception as exc:
        raise failure(uri, exc, "write") from None


def delete(uri: str) -> None:
    """Delete the object ``uri``."""
    fs, path = filesystem(uri)
    try:
        fs.delete_file(path)
    except Exception as exc:
        raise failure(uri, exc, "delete") from None


def check_bucket(uri: str) -> None:
    """ObjectStoreError unless the bucket of ``uri`` exists and answers (the credentials are accepted)."""
    from pyarrow import fs as pafs

    bucket, _key, _query = parse(uri)
    fs, _path = filesystem(uri)
    try:
        found = fs.get_file_info(bucket)
    except Exception as exc:
        raise failure(uri, exc) from None
    if found.type == pafs.FileType.NotFound:
        raise ObjectStoreError(f"{SCHEME}{bucket}: no such bucket (create it first; nothing creates buckets)")


def fsspec_filesystem(uri: str):
    """An fsspec view of ``uri``'s filesystem under the protocol ``s3``, for DuckDB's ``register_filesystem``
    (DuckDB then reads ``s3://`` paths through pyarrow, with the same endpoint and credentials)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class _S3(ArrowFSWrapper):
        protocol = "s3"

    fs, _path = filesystem(uri)
    return _S3(fs)


# ----- a local path or a URI, alike -------------------------------------------------------------
def label(path) -> str:
    """What provenance records for an input: the local path as given, or the canonical URI."""
    return canonical(path) if is_uri(path) else str(path)


def name_of(path) -> str:
    """The file name: the last part of the key (no query) or of the local path."""
    return canonical(path).rsplit("/", 1)[-1] if is_uri(path) else Path(path).name


def open_any(path):
    """A seekable binary stream over a local file or an object."""
    return open_input(path) if is_uri(path) else open(path, "rb")


def size_of(path, fh=None) -> int:
    if is_uri(path):
        return size(path)
    return os.fstat(fh.fileno()).st_size if fh is not None else os.path.getsize(path)
