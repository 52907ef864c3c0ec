"""Local filesystem storage and reader."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from ..errors import ConfigError, ImageError
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
            raise ConfigError(
                f"refusing a storage key that resolves outside {self.root!r}. Received: {key!r}"
            )
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
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys that start with ``prefix`` (a plain string prefix, like S3), in sorted order."""
        folder, _, start = prefix.rpartition("/")
        base = self._path(folder) if folder else self.root
        yield from self._list_folder(base, folder + "/" if folder else "", start)

    def _list_folder(self, folder: str, rel: str, start: str = "") -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                # A folder sorts as "name/", so a depth-first walk yields keys in string order.
                entries = sorted(
                    (e.name + "/" if e.is_dir() else e.name, e)
                    for e in it
                    if e.name.startswith(start)
                )
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in entries:
            if name.endswith("/"):
                if not entry.is_symlink():  # like os.walk: symlinked folders are not followed
                    yield from self._list_folder(entry.path, rel + name)
            elif not name.startswith(".tmp-"):  # a write in progress
                yield rel + name

    def url(self, key: str) -> str:
        return self._path(key)
