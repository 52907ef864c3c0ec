"""Turning SOURCE arguments into a lazy stream of image locations.

A SOURCE is a file, a directory (walked recursively), a glob (``**`` recurses), an
``s3://bucket/prefix``, a ``file://`` URI, or ``@list.txt`` (one source per line; blank
lines and ``#`` comments skipped, relative paths taken from the current directory).
Directories, globs and prefixes yield only files with an image extension; a file named
explicitly, on the command line or in a list, is always yielded, so a non-image there gets
an error record. Entries whose name starts with a dot are skipped inside directories.

Every location is valid UTF-8 text (``bulklabel.names``): a path that is not valid UTF-8
comes out as a percent-encoded ``file://`` URI, so records, outputs, ``--resume`` and chunk
messages can carry it. List files are read as bytes, so they can hold such paths too
(docs/sources.md).

Symlink loops are cut: the folder walk, and each ``**`` of a glob, visit a directory (by
``st_dev``, ``st_ino``) at most once; a folder matched by a glob is walked like a folder
source, without going back up into the folders the glob came through.

Nothing is materialised: ``iter_sources`` is a generator, memory stays flat whatever
the size of the archive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator

from . import fingerprints
from .errors import SourceError
from .globs import DirKey, has_magic, iglob, iglob_with_parents
from .names import is_file_uri, is_text, local_str, source_text

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"})

# Lister for s3:// sources, installed by the storage layer when S3 support is available:
# (uri) -> iterator of s3:// URIs of image keys, or of (URI, fingerprint) pairs.
S3Lister = Callable[[str], Iterator["str | tuple[str, str | None]"]]

def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_glob(spec: str) -> bool:
    return has_magic(spec) and not os.path.exists(spec)


def check_sources(specs: Iterable[str]) -> None:
    """Fail fast, before any work, on a source that names nothing."""
    specs = list(specs)
    if not specs:
        raise SourceError("no SOURCE given: name image files, folders, globs, @lists or s3:// URIs")
    for spec in specs:
        if spec.startswith("s3://"):
            if not is_text(spec):
                raise SourceError(f"an s3:// URI must be valid UTF-8 (S3 keys are). Received: {spec!r}")
            continue
        if is_file_uri(spec):
            if not os.path.exists(_file_uri_path(spec)):
                raise SourceError(f"source not found: {spec!r} (a file:// URI of a file or folder)")
            continue
        spec = os.path.expanduser(spec)
        if spec.startswith("@"):
            if not os.path.isfile(os.path.expanduser(spec[1:])):
                raise SourceError(f"list file not found: {spec[1:]!r} (from {spec!r})")
        elif is_glob(spec):
            if next(iglob(os.path.expanduser(spec)), None) is None:
                raise SourceError(f"the glob {spec!r} matches no file")
        elif not os.path.exists(spec):
            raise SourceError(f"source not found: {spec!r} (a file, folder, glob, @list or s3:// URI)")


def _file_uri_path(uri: str) -> str:
    try:
        return local_str(uri)
    except ValueError as exc:
        raise SourceError(f"{exc}. Received: {uri!r}") from None


def iter_sources(specs: Iterable[str], s3_lister: S3Lister | None = None) -> Iterator[str]:
    """Yield every image location named by ``specs``: absolute paths, ``s3://`` URIs, and
    ``file://`` URIs for paths that are not valid UTF-8 — always valid UTF-8 text."""
    for spec in specs:
        for item in _expand(spec, s3_lister, explicit=True):
            yield source_text(item[0] if isinstance(item, tuple) else item)


def iter_entries(specs: Iterable[str], s3_lister: S3Lister | None = None) -> Iterator[tuple[str, str | None]]:
    """``iter_sources`` with each location's content fingerprint (``bulklabel.fingerprints``):
    from the listing for S3 keys, from ``os.stat`` for local files; None when unknown."""
    for spec in specs:
        for item in _expand(spec, s3_lister, explicit=True):
            if isinstance(item, tuple):
                yield source_text(item[0]), item[1]
            elif item.startswith("s3://") or is_file_uri(item):
                yield source_text(item), None  # an object named alone (not listed), a URI naming nothing
            else:
                yield source_text(item), fingerprints.local(item)


def _expand(spec: str, s3_lister: S3Lister | None, explicit: bool) -> Iterator[str]:
    if spec.startswith("s3://"):
        if s3_lister is None:
            raise SourceError(f"S3 sources are not supported by this command. Received: {spec!r}")
        if not is_text(spec):
            raise SourceError(f"an s3:// URI must be valid UTF-8 (S3 keys are). Received: {spec!r}")
        if has_image_extension(spec) and explicit:
            yield spec  # one object named explicitly
        else:
            yield from s3_lister(spec)
    elif is_file_uri(spec):  # one file or folder, never a glob
        try:
            path = local_str(spec)
        except ValueError:
            yield spec  # names nothing here: the reader gives it an error record
            return
        if os.path.isdir(path):
            yield from walk_images(path)
        else:
            yield os.path.abspath(path)
    elif spec.startswith("@"):
        yield from _from_list(spec[1:], s3_lister)
    elif os.path.isdir(spec := os.path.expanduser(spec)):
        yield from walk_images(spec)
    elif is_glob(spec):
        yield from _expand_glob(spec)
    else:
        yield os.path.abspath(spec)


def _expand_glob(pattern: str) -> Iterator[str]:
    # A folder matched is walked whole; with ``**`` the glob also matches everything
    # inside it, which must not be yielded a second time.
    walked: set[str] = set()
    listed: set[DirKey] = set()  # folders whose images are out already (through any path)
    for match, above in iglob_with_parents(pattern):
        path = os.path.abspath(match)
        if _under_any(path, walked):
            continue
        if os.path.isdir(path):
            walked.add(path)
            yield from walk_images(path, seen=listed, avoid=above)
        elif has_image_extension(path):
            yield path


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
    """The sources of a list file, read as bytes: a line that is not valid UTF-8 is a path
    whose name is not (it comes out as a ``file://`` URI)."""
    try:
        f = open(os.path.expanduser(path), "rb")
    except OSError as exc:
        raise SourceError(f"cannot read list file {path!r}: {exc.strerror or exc}") from None
    with f:
        for number, raw in enumerate(f, 1):  # lines end at b"\n" only
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw = raw[3:]
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = os.fsdecode(raw)  # the file name's own bytes, as the file system gives them
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.startswith("@"):
                raise SourceError(f"a list file cannot name another list. Received: {entry!r} in {path!r}")
            if entry.startswith("s3://") and not is_text(entry):
                raise SourceError(f"line {number} of {path!r} is an s3:// URI that is not valid UTF-8 "
                                  f"(S3 keys are). Received: {entry!r}")
            if entry.startswith("s3://") or is_file_uri(entry) or os.path.isdir(entry) or is_glob(entry):
                yield from _expand(entry, s3_lister, explicit=True)
            else:
                # A missing file in a list is data, not configuration: it gets an error record.
                yield os.path.abspath(os.path.expanduser(entry))


def walk_images(root: str, *, seen: set[DirKey] | None = None, avoid: Collection[DirKey] = ()) -> Iterator[str]:
    """Image files under ``root``, depth first, without building the listing in memory.

    Each directory is listed once (by ``st_dev``, ``st_ino``), so a symlink loop is cut.
    ``seen`` (updated) holds directories already listed, ``avoid`` directories not to enter
    (a glob's folders above ``root``)."""
    root = os.path.abspath(root)
    seen_dirs: set[DirKey] = set() if seen is None else seen
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs or key in avoid:  # symlink loop, or listed already
                continue
            seen_dirs.add(key)
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
