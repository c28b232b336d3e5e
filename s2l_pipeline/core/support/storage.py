"""Artifact and input locations: a local folder or an ``s3://`` prefix, behind one small interface.

S3 objects are downloaded into a local cache (checked by ETag) so readers always get a real
file path; writes go to a local temporary file first and are uploaded whole, so a crash never
leaves half an object behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long an S3 call keeps retrying a server that does not answer (or answers 5xx) before it
# fails: long enough to ride out a restart or a short network outage.
RETRY_ENV = "S2L_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 180.0


class StorageError(OSError):
    """A storage call failed for good; the message names the uri or path."""


def backoff_delays(budget_s: float) -> list[float]:
    """1, 2, 4, 8, 16, 30, 30, ... seconds, until they add up to ``budget_s``."""
    delays: list[float] = []
    while sum(delays) < budget_s:
        delays.append(min(30.0, 2.0 ** len(delays), budget_s - sum(delays)))
    return delays


def _transient(exc: BaseException) -> bool:
    """A connection failure, a timeout, throttling or a 5xx: worth waiting for."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout")
    if isinstance(exc, S3UploadFailedError):  # boto3 wraps the cause in its message only
        text = str(exc)
        return any(s in text for s in ("Could not connect", "Connection", "timed out", " 50"))
    return False


def s3_retry(uri: str, what: str, call: Callable[[], T]) -> T:
    """Run an S3 call, retrying transient failures with backoff (``S2L_STORAGE_RETRY_S``)."""
    delays = backoff_delays(float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)))
    for attempt in range(len(delays) + 1):
        try:
            return call()
        except Exception as exc:  # sorted into transient or not just below
            if not _transient(exc) or attempt == len(delays):
                waited = f" after {attempt} retries" if attempt else ""
                raise StorageError(f"{uri}: {what} failed{waited} ({exc})") from exc
            log.warning(
                "%s: %s failed (%s); retry %d in %.0f s",
                uri,
                what,
                exc,
                attempt + 1,
                delays[attempt],
            )
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: not an s3://bucket/key address")
    return bucket, key


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; credentials come from the environment (AWS_ACCESS_KEY_ID, ...)."""
    import boto3
    from botocore.config import Config

    # Few quick retries inside botocore; the long wait for an outage is s3_retry's.
    cfg = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2})
    return boto3.client(
        "s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), config=cfg
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("S2L_CACHE_DIR", Path.home() / ".cache" / "s2l_pipeline"))


def fetch(uri: str, endpoint_url: str | None = None, cache_dir: Path | None = None) -> Path:
    """A local path holding the object at ``uri`` (a local path is returned as it is)."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{uri}: no such file")
        return path
    bucket, key = split_s3(uri)
    client = s3_client(endpoint_url)
    try:
        head = s3_retry(uri, "reading", lambda: client.head_object(Bucket=bucket, Key=key))
    except StorageError as exc:
        if isinstance(exc.__cause__, Exception) and not _transient(exc.__cause__):
            raise FileNotFoundError(f"{uri}: cannot read object ({exc.__cause__})") from exc
        raise
    etag = head["ETag"].strip('"')
    local = (cache_dir or default_cache_dir()) / "s3" / bucket / key
    tag_file = local.with_name(local.name + ".etag")
    if local.exists() and tag_file.exists() and tag_file.read_text() == etag:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    s3_retry(uri, "download", lambda: client.download_file(bucket, key, str(tmp)))
    tmp.replace(local)
    tag_file.write_text(etag)
    return local


def list_uris(prefix: str, endpoint_url: str | None = None) -> list[str]:
    """Every object (S3) or file (local, recursive) under a prefix, sorted."""
    if not is_s3(prefix):
        root = Path(prefix).expanduser()
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    bucket, key = split_s3(prefix)
    client = s3_client(endpoint_url)

    def listing() -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        return [f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]

    return sorted(s3_retry(prefix, "listing", listing))


class ArtifactStore:
    """Where the pipeline keeps what it makes: tables, checkpoints, manifests."""

    def __init__(self, root: str, endpoint_url: str | None = None, cache_dir: Path | None = None):
        self.root = root.rstrip("/") if is_s3(root) else str(Path(root).expanduser().resolve())
        self.endpoint_url = endpoint_url
        self.cache_dir = cache_dir

    def uri(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    @contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """Yield a local path to write; on success it becomes the artifact at ``key``."""
        target = self.uri(key)
        if is_s3(target):
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(key).name
                try:
                    yield local
                except OSError as exc:
                    msg = f"{target}: cannot write the local copy {local} ({exc})"
                    raise StorageError(msg) from exc
                bucket, obj = split_s3(target)
                client = s3_client(self.endpoint_url)
                s3_retry(target, "upload", lambda: client.upload_file(str(local), bucket, obj))
            return
        final = Path(target)
        part = final.with_name(final.name + ".part")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            yield part
            part.replace(final)
        except OSError as exc:  # disk full, read-only disk, ...: say where
            part.unlink(missing_ok=True)
            raise StorageError(exc.errno, f"cannot write {final}: {exc.strerror or exc}") from exc

    def put_dir(self, local_dir: Path, key: str) -> str:
        """Copy a directory (e.g. a checkpoint) into the store; returns its uri."""
        target = self.uri(key)
        if is_s3(target):
            bucket, prefix = split_s3(target)
            client = s3_client(self.endpoint_url)
            for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
                obj = f"{prefix}/{path.relative_to(local_dir)}"
                s3_retry(
                    f"s3://{bucket}/{obj}",
                    "upload",
                    lambda path=path, obj=obj: client.upload_file(str(path), bucket, obj),
                )
            return target
        try:
            if Path(target).exists():
                shutil.rmtree(target)
            shutil.copytree(local_dir, target)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc}") from exc
        return target

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder), sorted; none when it does not exist."""
        root = self.uri(prefix)
        if not is_s3(root) and not Path(root).exists():
            return []
        start = len(self.root) + 1
        return [uri[start:] for uri in list_uris(root.rstrip("/") + "/", self.endpoint_url)]

    def exists(self, key: str) -> bool:
        target = self.uri(key)
        if not is_s3(target):
            return Path(target).exists()
        bucket, obj = split_s3(target)
        client = s3_client(self.endpoint_url)
        resp = s3_retry(
            target, "lookup", lambda: client.list_objects_v2(Bucket=bucket, Prefix=obj, MaxKeys=1)
        )
        return resp.get("KeyCount", 0) > 0

    def fetch(self, uri: str) -> Path:
        return fetch(uri, self.endpoint_url, self.cache_dir)

    def fetch_dir(self, uri: str) -> Path:
        """A local folder with every object under ``uri`` (a checkpoint, say)."""
        if not is_s3(uri):
            path = Path(uri)
            if not path.is_dir():
                raise FileNotFoundError(f"{uri}: no such folder")
            return path
        files = list_uris(uri.rstrip("/") + "/", self.endpoint_url)
        if not files:
            raise FileNotFoundError(f"{uri}: no objects under this prefix")
        local = [self.fetch(f) for f in files]
        return local[0].parent if local else Path()

    def read_text(self, key: str) -> str:
        return self.fetch(self.uri(key)).read_text()

    def write_text(self, key: str, text: str) -> str:
        with self.writing(key) as path:
            path.write_text(text)
        return self.uri(key)
