"""Local filesystem storage and reader."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator

from ..errors import ConfigError, ImageError
from ..names import local_path
from ..settings import DEFAULT_MAX_BYTES
from . import folder_prefix, safe_key, too_large


def write_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same folder
    (created if missing), synced, then renamed over ``path``. ``mode``: its permissions."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

_KINDS = ((stat.S_ISDIR, "is a folder, not an image file"),
          (stat.S_ISFIFO, "not a regular file (a FIFO)"),
          (stat.S_ISCHR, "not a regular file (a character device)"),
          (stat.S_ISBLK, "not a regular file (a block device)"),
          (stat.S_ISSOCK, "not a regular file (a socket)"))


def _mode(location: str | bytes) -> int | None:
    try:
        return os.stat(location).st_mode
    except OSError:
        return None


def _not_regular(mode: int | None) -> str | None:
    """Why a file of ``mode`` is not read, or None for a regular file (or an unknown mode)."""
    if mode is None or stat.S_ISREG(mode):
        return None
    return next((reason for test, reason in _KINDS if test(mode)), "not a regular file")


class LocalReader:
    """Reads absolute local paths and ``file://`` URIs (``bulklabel.names``: how a path that
    is not valid UTF-8 is written): regular files only, at most ``max_bytes``; anything else
    (missing, unreadable, a FIFO or device, too large, a URI naming no local file) is an
    ``ImageError``.

    The file is opened without blocking (a FIFO would otherwise wait for a writer forever)
    and checked with ``fstat`` on that same descriptor before anything is read."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes

    def read(self, location: str) -> bytes:
        try:
            location = local_path(location)
        except ValueError as exc:
            raise ImageError(str(exc)) from None
        try:
            fd = os.open(location, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise ImageError("file not found") from None
        except PermissionError:
            raise ImageError("permission denied") from None
        except ValueError:  # a NUL byte, or a surrogate no file name decodes to
            raise ImageError("not a valid file name") from None
        except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
            raise ImageError(_not_regular(_mode(location)) or f"cannot read file: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            refused = _not_regular(info.st_mode)
            if refused:
                raise ImageError(refused)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb", buffering=0) as f:
            if info.st_size > self.max_bytes:
                raise ImageError(too_large(info.st_size, self.max_bytes, "file"))
            try:
                data = f.read(self.max_bytes + 1)  # never more than the cap, even if it grew
            except OSError as exc:
                raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
            if len(data) > self.max_bytes:
                raise ImageError(f"file grew past the limit of {self.max_bytes} bytes while being read")
            return data



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
        write_atomic(self._path(key), data)

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

    def children(self, prefix: str = "") -> Iterator[str]:
        """The immediate sub-folders of folder ``prefix``, sorted (symlinked folders left out,
        as ``list`` does not follow them). Unlike S3, an empty folder is one too."""
        base = folder_prefix(prefix)
        try:
            with os.scandir(self._path(base.rstrip("/")) if base else self.root) as it:
                names = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def delete(self, key: str) -> None:
        """Remove one file (its folder stays, so a concurrent write into it cannot fail)."""
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        """Delete every file whose key starts with ``prefix`` (and the folders left empty)."""
        removed = 0
        for key in list(self.list(prefix)):
            os.unlink(self._path(key))
            removed += 1
            folder = os.path.dirname(self._path(key))
            while folder != self.root and folder.startswith(self.root + os.sep):
                try:
                    os.rmdir(folder)  # only succeeds when empty
                except OSError:
                    break
                folder = os.path.dirname(folder)
        return removed

    def url(self, key: str) -> str:
        return self._path(key)
