"""In-memory storage: the reference implementation the storage tests run against."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import ClassVar

from . import folder_prefix, safe_key


class MemoryStorage:
    _named: ClassVar[dict[str, MemoryStorage]] = {}

    def __init__(self, name: str = "memory://"):
        self.name = name
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def named(cls, url: str) -> MemoryStorage:
        return cls._named.setdefault(url, cls(url))

    def read(self, key: str) -> bytes:
        with self._lock:
            try:
                return self._objects[safe_key(key)]
            except KeyError:
                raise FileNotFoundError(key) from None

    def write(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[safe_key(key)] = bytes(data)

    def exists(self, key: str) -> bool:
        with self._lock:
            return safe_key(key) in self._objects

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        yield from keys

    def children(self, prefix: str = "") -> Iterator[str]:
        """The immediate sub-folders of folder ``prefix``: names that some key has a ``/`` after."""
        base = folder_prefix(prefix)
        with self._lock:
            names = {k[len(base):].split("/", 1)[0] for k in self._objects
                     if k.startswith(base) and "/" in k[len(base):]}
        yield from sorted(names)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(safe_key(key), None)

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [k for k in self._objects if k.startswith(prefix)]
            for key in doomed:
                del self._objects[key]
        return len(doomed)

    def url(self, key: str) -> str:
        return self.name.rstrip("/") + "/" + safe_key(key)
