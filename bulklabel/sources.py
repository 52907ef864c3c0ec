"""Turning SOURCE arguments into a lazy stream of image locations.

A SOURCE is a file, a directory (walked recursively), a glob (``**`` recurses), an
``s3://bucket/prefix``, or ``@list.txt`` (one source per line; blank lines and ``#``
comments skipped, relative paths taken from the current directory). Directories, globs
and prefixes yield only files with an image extension; a file named explicitly, on the
command line or in a list, is always yielded, so a non-image there gets an error record.
Entries whose name starts with a dot are skipped inside directories.

Nothing is materialised: ``iter_sources`` is a generator, memory stays flat whatever
the size of the archive.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator

from .errors import SourceError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
GLOB_CHARS = frozenset("*?[")

# Lister for s3:// sources, installed by the storage layer when S3 support is available:
# (uri) -> iterator of s3:// URIs of image keys.
S3Lister = Callable[[str], Iterator[str]]


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_glob(spec: str) -> bool:
    return any(c in GLOB_CHARS for c in spec) and not os.path.exists(spec)


def check_sources(specs: Iterable[str]) -> None:
    """Fail fast, before any work, on a source that names nothing."""
    specs = list(specs)
    if not specs:
        raise SourceError("no SOURCE given: name image files, folders, globs, @lists or s3:// URIs")
    for spec in specs:
        if spec.startswith("s3://"):
            continue
        spec = os.path.expanduser(spec)
        if spec.startswith("@"):
            if not os.path.isfile(os.path.expanduser(spec[1:])):
                raise SourceError(f"list file not found: {spec[1:]!r} (from {spec!r})")
        elif is_glob(spec):
            if next(glob.iglob(os.path.expanduser(spec), recursive=True), None) is None:
                raise SourceError(f"the glob {spec!r} matches no file")
        elif not os.path.exists(spec):
            raise SourceError(f"source not found: {spec!r} (a file, folder, glob, @list or s3:// URI)")


def iter_sources(specs: Iterable[str], s3_lister: S3Lister | None = None) -> Iterator[str]:
    """Yield every image location named by ``specs``: absolute paths or s3:// URIs."""
    for spec in specs:
        yield from _expand(spec, s3_lister, explicit=True)


def _expand(spec: str, s3_lister: S3Lister | None, explicit: bool) -> Iterator[str]:
    if spec.startswith("s3://"):
        if s3_lister is None:
            raise SourceError(f"S3 sources are not supported by this command. Received: {spec!r}")
        if has_image_extension(spec) and explicit:
            yield spec  # one object named explicitly
        else:
            yield from s3_lister(spec)
    elif spec.startswith("@"):
        yield from _from_list(spec[1:], s3_lister)
    elif os.path.isdir(spec := os.path.expanduser(spec)):
        yield from walk_images(spec)
    elif is_glob(spec):
        # A folder matched is walked whole; with ``**`` the glob also matches everything
        # inside it, which must not be yielded a second time.
        walked: set[str] = set()
        for match in glob.iglob(os.path.expanduser(spec), recursive=True):
            path = os.path.abspath(match)
            if _under_any(path, walked):
                continue
            if os.path.isdir(path):
                walked.add(path)
                yield from walk_images(path)
            elif has_image_extension(path):
                yield path
    else:
        yield os.path.abspath(os.path.expanduser(spec))


def _under_any(path: str, folders: set[str]) -> bool:
    parent = os.path.dirname(path)
    while folders and parent:
        if parent in folders:
            return True
        up = os.path.dirname(parent)
        if up == parent:
            return False
        parent = up
    return False


def _from_list(path: str, s3_lister: S3Lister | None) -> Iterator[str]:
    try:
        f = open(os.path.expanduser(path), encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read list file {path!r}: {exc.strerror or exc}") from None
    with f:
        for line in f:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("@"):
                raise SourceError(f"a list file cannot name another list. Received: {entry!r} in {path!r}")
            if entry.startswith("s3://") or os.path.isdir(entry) or is_glob(entry):
                yield from _expand(entry, s3_lister, explicit=True)
            else:
                # A missing file in a list is data, not configuration: it gets an error record.
                yield os.path.abspath(os.path.expanduser(entry))


def walk_images(root: str) -> Iterator[str]:
    """Image files under ``root``, depth first, without building the listing in memory."""
    root = os.path.abspath(root)
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:  # symlink loop
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = os.scandir(folder)
        except OSError as exc:
            raise SourceError(f"cannot list folder {folder!r}: {exc.strerror or exc}") from None
        subdirs = []
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        subdirs.append(entry.path)
                    elif has_image_extension(entry.name) and entry.is_file():
                        yield entry.path
                except OSError:
                    continue
        stack.extend(reversed(subdirs))
