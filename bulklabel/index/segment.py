"""The segment file: one immutable, self-checking piece of a model's label index.

Layout: the magic line ``BLIDX1\\n``, a little-endian u32 header length, a JSON header
(``model``, ``jobs`` covered, ``replaces``: the segments merged into this one, ``entries``,
``created_at``, ``checksum``: BLAKE2b of the digests), then ``entries`` × 16 bytes of
sorted, distinct digests. ``decode`` checks all of it and says what is wrong
(``SegmentError``); the caller ignores such a segment, so its jobs count as not indexed.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .digests import DIGEST, DIGEST_SIZE, is_sorted_unique, sorted_unique

MAGIC = b"BLIDX1\n"
_LENGTH = struct.Struct("<I")
MAX_HEADER = 64 << 20


class SegmentError(ValueError):
    """Bytes that are not a valid segment; the message says why."""


@dataclass(frozen=True)
class Segment:
    name: str
    model: str
    jobs: tuple[str, ...]
    replaces: tuple[str, ...]
    digests: np.ndarray = field(repr=False)
    created_at: float = 0.0

    @property
    def entries(self) -> int:
        return len(self.digests)


def _checksum(body: bytes | memoryview) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def encode(model: str, jobs: Iterable[str], digests, replaces: Iterable[str] = ()) -> bytes:
    """A segment's bytes; ``digests`` are sorted and made distinct first."""
    digests = np.ascontiguousarray(sorted_unique(digests))
    body = digests.tobytes()
    header = {"model": model, "jobs": sorted(set(jobs)), "replaces": sorted(set(replaces)),
              "entries": len(digests), "created_at": time.time(), "checksum": _checksum(body)}
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, _LENGTH.pack(len(head)), head, body))


def _strings(header: dict, name: str) -> tuple[str, ...]:
    value = header.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SegmentError(f"header field {name!r} is not a list of strings")
    return tuple(value)


def decode(name: str, data: bytes) -> Segment:
    """The segment in ``data`` (named ``name``), checked whole, or ``SegmentError``."""
    view = memoryview(data)
    if bytes(view[:len(MAGIC)]) != MAGIC:
        raise SegmentError(f"not a label index segment (its first bytes are {bytes(view[:8])!r})")
    start = len(MAGIC) + _LENGTH.size
    if len(view) < start:
        raise SegmentError("truncated before its header")
    (length,) = _LENGTH.unpack(view[len(MAGIC):start])
    if length > MAX_HEADER or start + length > len(view):
        raise SegmentError(f"header length {length} runs past the end ({len(view)} bytes)")
    try:
        header = json.loads(bytes(view[start:start + length]))
    except ValueError as exc:
        raise SegmentError(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SegmentError("header is not a JSON object")
    model, entries = header.get("model"), header.get("entries")
    if not isinstance(model, str):
        raise SegmentError("header has no model")
    if type(entries) is not int or entries < 0:
        raise SegmentError(f"header has no valid entry count ({entries!r})")
    body = view[start + length:]
    if len(body) != entries * DIGEST_SIZE:
        raise SegmentError(f"header says {entries} entries ({entries * DIGEST_SIZE} bytes) "
                           f"but {len(body)} bytes follow it")
    if header.get("checksum") != _checksum(body):
        raise SegmentError("checksum mismatch: the digests are damaged")
    digests = np.frombuffer(body, DIGEST)
    if not is_sorted_unique(digests):
        raise SegmentError("digests are not sorted and distinct")
    created = header.get("created_at", 0.0)
    return Segment(name, model, _strings(header, "jobs"), _strings(header, "replaces"), digests,
                   float(created) if isinstance(created, (int, float)) else 0.0)
