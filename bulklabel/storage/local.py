"""Local filesystem storage and reader."""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from ..errors import ImageError
from . import safe_key


class LocalReader:
    """Reads absolute local paths; a missing or unreadable file is an ``ImageError``."""

    def read(self, location: str) -> bytes:
        try:
            with open(location, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except IsADirectoryError:
            raise ImageError("is a folder, not an image file") from None
        except PermissionError:
            raise ImageError("permission denied") from None
        except OSError as exc:
            raise ImageError(f"cannot read file: {exc.strerror or exc}") from None


class LocalStorage:
    def __init__(self, root: str | os.PathLike):
        self.root = os.path.abspath(os.fspath(root))

    def _path(self, key: str) -> str:
        path = os.path.join(self.root, *safe_key(key).split("/"))
        # Belt and braces: the resolved path must stay under the resolved root.
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise ValueError(f"key {key!r} resolves outside {self.root!r}")
        return path

    def read(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not os.path.isdir(base):
            return
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(".tmp-"):
                    continue
                rel = os.path.relpath(os.path.join(folder, name), self.root)
                yield rel.replace(os.sep, "/")

    def url(self, key: str) -> str:
        return self._path(key)
