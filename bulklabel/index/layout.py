"""Where the label index lives: ``DEST/_index/<model_key>/seg-<time_ns>-<hex>-<entries>.bin``.

One folder per model id; its name (``model_key``) is filename-safe on every backend and
stable across hosts and versions. A segment's name is unique (time and randomness) and
carries its entry count, so compaction can plan from a listing without reading anything.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

INDEX_DIR = "_index"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")
_MAX_KEY = 96
SEGMENT_NAME = re.compile(r"seg-(\d{20})-([0-9a-f]{16})-(\d{1,12})\.bin")


def model_key(model_id: str) -> str:
    """A folder name for ``model_id``: its safe characters kept, the rest ``_``, and an
    8-hex hash of the whole id appended whenever anything was replaced or cut, so two ids
    never share a key by accident. Never starts with ``_``, ``.`` or ``-``."""
    key = _UNSAFE.sub("_", model_id)
    changed = key != model_id
    if not key or key[0] in "_.-":
        key, changed = "m" + key, True
    if len(key) > _MAX_KEY:
        key, changed = key[:_MAX_KEY], True
    if changed:
        key += "-" + hashlib.sha256(model_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return key


def model_prefix(model_id: str) -> str:
    """The folder holding ``model_id``'s segments, with its trailing slash."""
    return f"{INDEX_DIR}/{model_key(model_id)}/"


def new_segment_name(entries: int) -> str:
    """A unique name for a segment of ``entries`` digests (later names sort after earlier ones)."""
    return f"seg-{time.time_ns():020d}-{secrets.token_hex(8)}-{entries}.bin"


def segment_entries(name: str) -> int | None:
    """The entry count a segment's name declares, or None when it is not a segment name."""
    match = SEGMENT_NAME.fullmatch(name)
    return int(match.group(3)) if match else None
