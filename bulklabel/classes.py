"""Class names as folder and file names, and back.

A training dataset names each class by a folder (``DATA/<class>/``) or a list file
(``DATA/lists/<class>.txt``). Any class name a model or a reviewer uses must survive that
trip, so the few characters a name on disk cannot hold are percent-encoded: ``%`` itself,
``/`` and ``\\`` (path separators), NUL and other control characters, and a leading ``.``
(so that no class is ``.``, ``..`` or a hidden file). Everything else is kept as it is, so
ordinary names read the same on disk. Decoding undoes exactly these escapes and leaves any
other ``%`` sequence alone, so folders made by hand keep their names.
"""

from __future__ import annotations

import re

_ESCAPED = re.compile(r"%(25|2F|5C|2E|[01][0-9A-F]|7F)")


def _escape(ch: str) -> str:
    return f"%{ord(ch):02X}"


def to_path_name(name: str) -> str:
    """``name`` as one path component (non-empty, no separator, not hidden)."""
    if not name:
        raise ValueError("a class name cannot be empty")
    out = "".join(_escape(c) if c in "%/\\" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    return _escape(".") + out[1:] if out.startswith(".") else out


def from_path_name(component: str) -> str:
    """The class name a folder or list file called ``component`` stands for."""
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), component)
