"""Every source as valid UTF-8 text, losslessly: file names that are not UTF-8.

On Linux a file name is any bytes but NUL and ``/``; Python hands a name that is not valid
UTF-8 to us as a ``str`` holding lone surrogates (U+DC80..U+DCFF, one per undecodable byte,
PEP 383 ``surrogateescape``). Such a string cannot be written as UTF-8 (JSONL, CSV,
Parquet, a chunk message), so a source is turned into text like this:

* a local path whose name is valid UTF-8 stays exactly what it is: ``/photos/été.jpg``;
* a local path that is not valid UTF-8 becomes an RFC 8089 ``file://`` URI of its absolute
  path, every byte outside the unreserved set ``A-Z a-z 0-9 - . _ ~`` and ``/``
  percent-encoded with upper-case hex: ``b"/photos/caf\\xe9.jpg"`` is written
  ``file:///photos/caf%E9.jpg``. The URI is ASCII, and decoding it gives the same bytes back;
* ``s3://`` URIs are left as they are (S3 keys are UTF-8 text).

``local_path`` goes the other way, and any ``file://`` URI is accepted as a source:
``file:///abs/path``, ``file://localhost/abs/path`` and ``file:/abs/path``, percent escapes
decoded to bytes. ``?`` and ``#`` are part of the name (there is no query or fragment);
another host or an escaped NUL byte is refused. A file URI names one file or folder: it is
never expanded as a glob.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

FILE_SCHEME = "file:"
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_text(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8 (it holds no lone surrogate)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_file_uri(s: str) -> bool:
    """Whether ``s`` is a ``file:`` URI with an absolute path (``file:/...``, ``file:///...``)."""
    return s[:5].lower() == FILE_SCHEME and s[5:6] == "/"


def _raw(path: str) -> bytes:
    """The bytes of a name as the file system has them."""
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate no file name decodes to (from JSON, say): keep it visible
        return path.encode("utf-8", "surrogatepass")


def file_uri(path: str | bytes) -> str:
    """The ``file://`` URI of a local path, percent-encoded, ASCII. A relative path is taken
    from the current directory; nothing else is changed (no ``..`` folded away)."""
    raw = path if isinstance(path, bytes) else _raw(path)
    if not raw.startswith(b"/"):
        raw = os.path.join(os.getcwdb(), raw)
    return "file://" + quote_from_bytes(raw, safe="/")


def as_text(s: str) -> str:
    """``s`` as valid UTF-8 text for a message: undecodable bytes shown as ``\\xNN``."""
    return s if is_text(s) else _raw(s).decode("utf-8", "backslashreplace")


def source_text(location: str) -> str:
    """``location`` (a local path or a URI) as valid UTF-8 text, unchanged when it already is."""
    if is_text(location):
        return location
    if _URI.match(location):  # not from a listing (S3 keys are text): never fail a record on it
        return as_text(location)
    return file_uri(location)


def local_path(source: str) -> str | bytes:
    """The path to open for a local source: ``source`` itself, or the path a ``file:`` URI
    names (``str`` when it is UTF-8, else ``bytes``). ``ValueError`` for a file URI that names
    no local file (another host, a NUL byte)."""
    if not is_file_uri(source):
        return source
    rest = source[5:]
    if rest.startswith("//"):
        host, _, path = rest[2:].partition("/")
        if host.lower() not in ("", "localhost"):
            raise ValueError(f"a file:// URI on another host ({host!r}) is not a local file")
        rest = "/" + path
    raw = unquote_to_bytes(rest.encode("utf-8", "surrogateescape"))
    if b"\x00" in raw:
        raise ValueError("a file:// URI with a NUL byte (%00) names no file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def local_str(source: str) -> str:
    """``local_path`` as a ``str`` (undecodable bytes as surrogates), for ``os.path`` and globbing."""
    path = local_path(source)
    return os.fsdecode(path) if isinstance(path, bytes) else path
