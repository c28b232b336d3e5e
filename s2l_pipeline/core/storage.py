"""Artifact and input locations: a local folder or an ``s3://`` prefix, behind one small interface.

S3 objects are downloaded into a local cache (checked by ETag) so readers always get a real
file path; writes go to a local temporary file first and are uploaded whole, so a crash never
leaves half an object behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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

    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))


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
        head = client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:  # botocore raises ClientError subclasses per status code
        raise FileNotFoundError(f"{uri}: cannot read object ({exc})") from exc
    etag = head["ETag"].strip('"')
    local = (cache_dir or default_cache_dir()) / "s3" / bucket / key
    tag_file = local.with_name(local.name + ".etag")
    if local.exists() and tag_file.exists() and tag_file.read_text() == etag:
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".part")
    client.download_file(bucket, key, str(tmp))
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
    uris: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        uris.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    return sorted(uris)


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
                yield local
                bucket, obj = split_s3(target)
                s3_client(self.endpoint_url).upload_file(str(local), bucket, obj)
            return
        final = Path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        yield part
        part.replace(final)

    def put_dir(self, local_dir: Path, key: str) -> str:
        """Copy a directory (e.g. a checkpoint) into the store; returns its uri."""
        target = self.uri(key)
        if is_s3(target):
            bucket, prefix = split_s3(target)
            client = s3_client(self.endpoint_url)
            for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
                client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_dir)}")
            return target
        if Path(target).exists():
            shutil.rmtree(target)
        shutil.copytree(local_dir, target)
        return target

    def exists(self, key: str) -> bool:
        target = self.uri(key)
        if not is_s3(target):
            return Path(target).exists()
        bucket, obj = split_s3(target)
        resp = s3_client(self.endpoint_url).list_objects_v2(Bucket=bucket, Prefix=obj, MaxKeys=1)
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
