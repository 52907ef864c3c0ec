"""S3 (and S3-compatible: MinIO, moto) storage, reader and lister.

Configuration is boto3's own: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, profiles, instance roles.
Credentials are never printed: errors name the bucket and key, not the identity.

Reads are meant to run concurrently (the engine keeps many in flight to hide per-object
latency), so the client's connection pool is sized to the concurrency; throttling and
5xx answers are retried by botocore with exponential backoff (adaptive mode).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import ConfigError, ImageError
from ..settings import DEFAULT_MAX_BYTES
from ..sources import has_image_extension
from . import folder_prefix, safe_key, too_large

# Reads in flight per process: ~1,000 images/s at 100-150 ms per GET needs this many (Little's law).
DEFAULT_CONCURRENCY = 128
_clients: dict[int, object] = {}
_lock = threading.Lock()


def parse_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an S3 URI (s3://bucket/key). Received: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ConfigError(f"S3 URI without a bucket. Received: {uri!r}")
    return bucket, key


def client(pool: int = DEFAULT_CONCURRENCY):
    """A shared, thread-safe boto3 S3 client whose pool holds ``pool`` connections."""
    with _lock:
        if pool not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                max_pool_connections=pool + 8,
                retries={"max_attempts": 10, "mode": "adaptive"},
                connect_timeout=10,
                read_timeout=60,
                tcp_keepalive=True,
            )
            _clients[pool] = boto3.session.Session().client("s3", config=config)
        return _clients[pool]


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


class S3Reader:
    """Reads ``s3://bucket/key`` objects; a missing or unreadable one is an ImageError."""

    def __init__(self, io_threads: int = 0, max_bytes: int = DEFAULT_MAX_BYTES):
        self.io_threads = io_threads or DEFAULT_CONCURRENCY
        self.max_bytes = max_bytes

    def read(self, location: str) -> bytes:
        bucket, key = parse_uri(location)
        try:
            response = client(self.io_threads).get_object(Bucket=bucket, Key=key)
            body, size = response["Body"], response.get("ContentLength")
            if size is not None and size > self.max_bytes:
                body.close()
                raise ImageError(too_large(size, self.max_bytes, "object"))
            data = body.read(self.max_bytes + 1)  # never more than the cap, whatever it says
            body.close()
            if len(data) > self.max_bytes:
                raise ImageError(f"object is larger than the limit of {self.max_bytes} bytes "
                                 "(raise it with --max-bytes)")
            return data
        except ImageError:
            raise
        except Exception as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ImageError("object not found") from None
            if code == "NoSuchBucket":
                raise ImageError(f"bucket {bucket!r} not found") from None
            if code in ("AccessDenied", "403", "Forbidden"):
                raise ImageError("access denied (the credentials cannot read this object)") from None
            raise ImageError(f"cannot read object ({code}: {exc})") from None


def list_images(uri: str, with_fingerprints: bool = False) -> Iterator[str] | Iterator[tuple[str, str | None]]:
    """Every image-extension key under ``s3://bucket/prefix``, page by page (never all at once);
    with ``with_fingerprints``, (URI, ``<ETag>:<size>``) pairs taken from the listing itself."""
    from ..fingerprints import s3 as fingerprint

    bucket, prefix = parse_uri(uri)
    paginator = client().get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if has_image_extension(key) and not key.endswith("/"):
                    if with_fingerprints:
                        yield f"s3://{bucket}/{key}", fingerprint(obj.get("ETag"), obj.get("Size"))
                    else:
                        yield f"s3://{bucket}/{key}"
    except Exception as exc:
        from ..errors import SourceError

        raise SourceError(f"cannot list {uri}: {_code(exc)} ({exc})") from None


class S3Storage:
    """Objects under ``s3://bucket/prefix``; keys can never leave the prefix."""

    page_size = 1000  # entries per listing request (S3's most)

    def __init__(self, url: str):
        self.bucket, prefix = parse_uri(url)
        self.prefix = prefix.strip("/")
        if self.prefix:
            safe_key(self.prefix)

    def _key(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> bytes:
        try:
            return client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.url(key)) from None
            raise

    def write(self, key: str, data: bytes) -> None:
        client().put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))  # atomic in S3

    def exists(self, key: str) -> bool:
        try:
            client().head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"][len(base):]

    def children(self, prefix: str = "") -> Iterator[str]:
        """The immediate sub-folders of folder ``prefix`` (common prefixes at the next ``/``), page by page."""
        base = (f"{self.prefix}/" if self.prefix else "") + folder_prefix(prefix)
        paginator = client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/",
                                   PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(base):].rstrip("/")
                if name and name not in (".", ".."):  # "a//b" or "a/../b" cannot be addressed as keys
                    yield name

    def delete(self, key: str) -> None:
        client().delete_object(Bucket=self.bucket, Key=self._key(key))  # a missing key is no error in S3

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix``; returns how many."""
        removed = 0
        batch: list[str] = []
        for key in [*self.list(prefix), None]:
            if key is not None:
                batch.append(key)
            if batch and (key is None or len(batch) == 1000):  # DeleteObjects takes 1000 at most
                answer = client().delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise OSError(f"cannot delete {self.url(batch[0])} and others: {first.get('Code')} "
                                  f"{first.get('Message')}")
                removed, batch = removed + len(batch), []
        return removed

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
