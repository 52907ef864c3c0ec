"""Glob matching with symlink loops cut (SOURCE arguments and list-file entries).

``glob.iglob(recursive=True)`` follows symlinks into directories under ``**`` with no
memory of where it has been: a link to a parent folder makes it list the same images
until the path is too long (tens of thousands of times). This is the same matching
(fnmatch per path segment, ``*`` and ``**`` skip names starting with a dot unless the
segment does, ``**`` matches zero or more folders, a trailing ``/`` matches folders
only, each folder listed lazily in the order the file system gives), but each ``**``
visits a folder (by ``st_dev``, ``st_ino``) once, and never one of the folders above it
on its own path (a link back up is a loop).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

GLOB_CHARS = frozenset("*?[")
DirKey = tuple[int, int]  # (st_dev, st_ino) of a directory


def has_magic(s: str) -> bool:
    return any(c in GLOB_CHARS for c in s)


def iglob(pattern: str) -> Iterator[str]:
    """Paths matching ``pattern``, as ``glob.iglob(pattern, recursive=True)`` gives them but
    with symlink loops cut (see above). A folder matched by a final ``**`` is yielded once,
    itself, in place of everything under it."""
    for match, _ in iglob_with_parents(pattern):
        yield match


def _dir_key(path: str) -> DirKey | None:
    try:
        st = os.stat(path or os.curdir)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name) if folder else name


def iglob_with_parents(pattern: str) -> Iterator[tuple[str, tuple[DirKey, ...]]]:
    """(match, the folders the glob came through to its parent), lazily."""
    parts = pattern.split("/")
    dir_only = len(parts) > 1 and parts[-1] == ""
    folder = "/" if pattern.startswith("/") else ""
    parts = [p for p in parts if p]
    while parts and not has_magic(parts[0]):  # the literal folder the glob starts from
        folder = _join(folder, parts.pop(0))
    if not parts:  # nothing to match: the path itself
        if os.path.isdir(folder) if dir_only else os.path.lexists(folder):
            yield folder, ()
        return
    key = _dir_key(folder)
    if key is not None:
        yield from _match(folder, parts, (key,), dir_only, {})


def _match(folder: str, parts: list[str], above: tuple[DirKey, ...], dir_only: bool,
           visited: dict[int, set[DirKey]]) -> Iterator[tuple[str, tuple[DirKey, ...]]]:
    """Matches of ``parts`` inside ``folder`` ('' for the current one). ``above`` ends with
    ``folder``'s own key; ``visited`` holds, per ``**`` (by how many parts follow it), the
    folders it has visited: the rest of the pattern matches the same names in a folder
    however it was reached, so a second visit could only repeat images."""
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # everything under folder: the folder itself, walked by the caller
            yield (folder or os.curdir), above[:-1]
            return
        seen = visited.setdefault(len(rest), set())
        for sub, sub_above in _walk_folders(folder, above, seen):
            yield from _match(sub, rest, sub_above, dir_only, visited)
    elif not has_magic(head):
        path = _join(folder, head)
        if rest:
            key = _dir_key(path) if os.path.isdir(path) else None
            if key is not None:  # after "..", the glob starts again from where it went up to
                yield from _match(path, rest, (key,) if head == ".." else (*above, key), dir_only, visited)
        elif os.path.isdir(path) if dir_only else os.path.lexists(path):
            yield path, above
    else:
        for name, key in _names(folder, head, dirs=bool(rest) or dir_only):
            path = _join(folder, name)
            if not rest:
                yield path, above
            elif key not in above:  # else a link back up to a folder the glob came through: a loop
                yield from _match(path, rest, (*above, key), dir_only, visited)


def _names(folder: str, pattern: str, dirs: bool) -> list[tuple[str, DirKey | None]]:
    """Names in ``folder`` matching ``pattern`` (with the folder's key when ``dirs``, which
    keeps folders only); one folder's listing at a time, like glob."""
    hidden = pattern.startswith(".")
    found = []
    try:
        with os.scandir(folder or os.curdir) as it:
            for entry in it:
                if (not hidden and entry.name.startswith(".")) or not fnmatch.fnmatchcase(entry.name, pattern):
                    continue
                if not dirs:
                    found.append((entry.name, None))
                    continue
                try:
                    if entry.is_dir():
                        st = entry.stat()
                        found.append((entry.name, (st.st_dev, st.st_ino)))
                except OSError:
                    continue
    except OSError:
        return []
    return found


def _walk_folders(folder: str, above: tuple[DirKey, ...],
                  seen: set[DirKey]) -> Iterator[tuple[str, tuple[DirKey, ...]]]:
    """What ``**`` matches in ``folder``: the folder itself, then every folder under it, depth
    first in listing order, names starting with a dot skipped; a folder in ``seen`` (updated)
    or above itself on its path (by ``st_dev``, ``st_ino``) is not visited, so a symlink loop
    is cut."""
    stack = [(folder, above)]
    while stack:
        path, path_above = stack.pop()
        if path_above[-1] in seen:  # reached before, by another path
            continue
        seen.add(path_above[-1])
        yield path, path_above
        subs = _names(path, "*", dirs=True)
        stack.extend((_join(path, name), (*path_above, key)) for name, key in reversed(subs)
                     if key not in path_above)  # else a link back up: a loop
