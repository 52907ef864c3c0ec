"""Where bytes come from and where results go.

A ``Storage`` is rooted at a location (a local folder or ``s3://bucket/prefix``) and
addresses objects by keys relative to that root. Keys never escape the root: ``..``
segments, absolute keys and empty segments are refused (``safe_key``). Writes are atomic:
an object appears whole under its key or not at all, and writing a key again replaces it.
``list`` yields keys by prefix, ``children`` the names of a folder's immediate sub-folders,
and ``delete`` removes one object (a missing one is not an error).

``SourceReader`` reads an image given its absolute location (a path, a ``file://`` URI —
how a path that is not valid UTF-8 is written, see ``bulklabel.names`` — or an ``s3://``
URI); the engine only ever sees ``read(location) -> bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..errors import ConfigError
from ..settings import DEFAULT_MAX_BYTES


class Storage(Protocol):
    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def children(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...


class SourceReader(Protocol):
    def read(self, location: str) -> bytes: ...


def safe_key(key: str) -> str:
    """Normalise a relative key, refusing anything that could leave the storage root."""
    norm = key.replace("\\", "/")
    parts = norm.split("/")
    if norm.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in norm:
        raise ConfigError(
            f"refusing a storage key that is absolute, empty or leaves its root. Received: {key!r}"
        )
    return norm


def folder_prefix(prefix: str) -> str:
    """A folder named by ``prefix`` (``""`` for the root; a trailing ``/`` optional) as a key
    prefix ending in ``/``, or ``""`` for the root; checked like any key."""
    prefix = prefix.replace("\\", "/").rstrip("/")
    return safe_key(prefix) + "/" if prefix else ""


def too_large(size: int, limit: int, what: str) -> str:
    """The error reason for an image file or object over ``--max-bytes``."""
    return (f"{what} too large: {size} bytes is over the limit of {limit} bytes "
            "(raise it with --max-bytes)")


def open_storage(url: str) -> Storage:
    """A storage rooted at ``url``: a local folder, ``s3://bucket/prefix`` or ``memory://name``."""
    if url.startswith("s3://"):
        from .s3 import S3Storage

        return S3Storage(url)
    if url.startswith("memory://"):
        from .memory import MemoryStorage

        return MemoryStorage.named(url)
    if "://" in url:
        raise ConfigError(f"unsupported storage location {url!r}: use a local folder or s3://bucket/prefix")
    from .local import LocalStorage

    return LocalStorage(url)


class AnyReader:
    """Reads local paths, ``file://`` and ``s3://`` URIs; tells the engine how many reads to overlap."""

    def __init__(self, io_threads: int = 0, max_bytes: int = DEFAULT_MAX_BYTES):
        from .local import LocalReader

        self._local = LocalReader(max_bytes)
        self._s3 = None
        self._io_threads = io_threads
        self._max_bytes = max_bytes

    def _reader(self, location: str):
        if location.startswith("s3://"):
            if self._s3 is None:
                from .s3 import S3Reader

                self._s3 = S3Reader(self._io_threads, self._max_bytes)
            return self._s3
        return self._local

    def read(self, location: str) -> bytes:
        return self._reader(location).read(location)

    def io_threads_for(self, location: str) -> int:
        """Reads to keep in flight: 0 (read in the decode threads) for local files, many for S3."""
        return getattr(self._reader(location), "io_threads", 0)


def open_reader(io_threads: int = 0, max_bytes: int = DEFAULT_MAX_BYTES) -> AnyReader:
    """The reader for image locations: local paths, file:// and s3:// URIs (``io_threads`` reads in
    flight for S3, 0 for the default; nothing larger than ``max_bytes`` is read)."""
    return AnyReader(io_threads, max_bytes)


def s3_lister(with_fingerprints: bool = False):
    """The lister for ``s3://bucket/prefix`` sources (imports boto3 only when called); with
    ``with_fingerprints`` it yields (URI, fingerprint) pairs (``bulklabel.sources.iter_entries``)."""
    def list_images(uri: str):
        from .s3 import list_images as _list

        return _list(uri, with_fingerprints)

    return list_images
