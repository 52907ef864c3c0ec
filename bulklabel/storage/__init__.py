"""Where bytes come from and where results go.

A ``Storage`` is rooted at a location (a local folder, later ``s3://bucket/prefix``) and
addresses objects by keys relative to that root. Keys never escape the root: ``..``
segments, absolute keys and empty segments are refused (``safe_key``). Writes are atomic:
an object appears whole under its key or not at all, and writing a key again replaces it.

``SourceReader`` reads an image given its absolute location (a path or an ``s3://`` URI);
the engine only ever sees ``read(location) -> bytes``.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from ..errors import ConfigError


class Storage(Protocol):
    def read(self, key: str) -> bytes: ...

    def write(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

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


def open_storage(url: str) -> Storage:
    """A storage rooted at ``url``: a local folder (created on first write) or ``memory://``."""
    if url.startswith("memory://"):
        from .memory import MemoryStorage

        return MemoryStorage.named(url)
    if "://" in url:
        raise ConfigError(f"unsupported storage location {url!r}: use a local folder path")
    from .local import LocalStorage

    return LocalStorage(url)


def open_reader() -> SourceReader:
    """The reader for image locations given on the command line."""
    from .local import LocalReader

    return LocalReader()
