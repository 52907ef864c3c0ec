"""Digests of labeled (source, fingerprint) pairs, and sets of them kept as sorted runs.

A digest is the 16-byte BLAKE2b of ``source + NUL + fingerprint`` (UTF-8); an array of
digests is numpy ``S16``, whose order is the bytes' order (``memcmp``), so sorted arrays
answer membership with ``np.searchsorted``. ``DigestSet`` holds a growing set as a few
sorted, disjoint runs, each more than twice the size of the next (size-tiered, like a
binary counter): adding k digests costs O(k log n) amortized, and there are never more
than log2(n) + 1 runs to search. Lookups sort the probes first and search each run's first
8 bytes as integers (``high_words``), checking the whole digest after: several times faster
than searching 16-byte strings in random order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

DIGEST = np.dtype("S16")
DIGEST_SIZE = 16


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # never fails; valid text encodes as plain UTF-8


def digest_pairs(sources: Sequence[str], fingerprints: Sequence[str]) -> np.ndarray:
    """The digests of ``zip(sources, fingerprints)``, in the same order (not sorted)."""
    if len(sources) != len(fingerprints):
        raise ValueError(f"{len(sources)} sources but {len(fingerprints)} fingerprints")
    blake = hashlib.blake2b
    raw = b"".join([blake(_utf8(s) + b"\0" + _utf8(f), digest_size=DIGEST_SIZE).digest()
                    for s, f in zip(sources, fingerprints)])
    return np.frombuffer(bytearray(raw), DIGEST)


def as_digests(digests) -> np.ndarray:
    """``digests`` as a 1-D ``S16`` array: an S16 array as is, raw bytes (16 per digest),
    an (n, 16) uint8 array, or a sequence of 16-byte strings."""
    if isinstance(digests, np.ndarray) and digests.dtype == DIGEST:
        return digests if digests.ndim == 1 else digests.reshape(-1)
    if isinstance(digests, (bytes, bytearray, memoryview)):
        if len(digests) % DIGEST_SIZE:
            raise ValueError(f"{len(digests)} bytes is not a whole number of {DIGEST_SIZE}-byte digests")
        return np.frombuffer(digests, DIGEST)
    if isinstance(digests, np.ndarray) and digests.dtype == np.uint8 and digests.ndim == 2 \
            and digests.shape[1] == DIGEST_SIZE:
        return np.ascontiguousarray(digests).view(DIGEST).reshape(-1)
    return np.asarray(list(digests), DIGEST).reshape(-1)


def is_sorted_unique(digests: np.ndarray) -> bool:
    return len(digests) < 2 or bool(np.all(digests[1:] > digests[:-1]))


def sorted_unique(digests) -> np.ndarray:
    """The distinct digests in order (the array itself when it is already so: no copy)."""
    digests = as_digests(digests)
    if is_sorted_unique(digests):
        return digests
    ordered = np.sort(digests)
    keep = np.empty(len(ordered), bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def merge_disjoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sorted arrays with no digest in common, merged into one sorted array in O(n + m log n)."""
    if not len(a):
        return b
    if not len(b):
        return a
    where = np.searchsorted(a, b) + np.arange(len(b))  # b's places in the merged array
    out = np.empty(len(a) + len(b), DIGEST)
    from_a = np.ones(len(out), bool)
    from_a[where] = False
    out[where] = b
    out[from_a] = a
    return out


def member(run: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Which of ``digests`` are in the sorted array ``run`` (bool mask)."""
    if not len(run) or not len(digests):
        return np.zeros(len(digests), bool)
    at = np.searchsorted(run, digests)
    np.minimum(at, len(run) - 1, out=at)
    return run[at] == digests


def high_words(digests: np.ndarray) -> np.ndarray:
    """Each digest's first 8 bytes as an unsigned integer: sorted digests give sorted words."""
    return np.ascontiguousarray(digests).view(">u8")[::2].astype(np.uint64)


def _member_fast(run: np.ndarray, run_high: np.ndarray, digests: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``member``, searching integers (several times faster than 16-byte strings): the first
    entry whose high word is the digest's is the digest, unless entries share that high word
    (a 64-bit tie, practically never): those few are searched again, exactly."""
    if not len(run) or not len(digests):
        return np.zeros(len(digests), bool)
    at = np.searchsorted(run_high, high)
    np.minimum(at, len(run) - 1, out=at)
    hit = run[at] == digests
    tied = ~hit & (run_high[at] == high)
    if tied.any():
        hit[tied] = member(run, digests[tied])
    return hit


class DigestSet:
    """A set of digests as sorted, disjoint runs: ``add`` arrays, ask ``contains``."""

    def __init__(self, arrays: Iterable = ()):
        self._runs: list[np.ndarray] = []  # each more than twice as long as the next
        self._highs: list[np.ndarray] = []  # high_words of each run
        self._size = 0
        for digests in arrays:
            self.add(digests)

    def add(self, digests) -> int:
        """Add ``digests`` (any order, repeats allowed); returns how many were new."""
        new = sorted_unique(digests)
        if self._runs and len(new):
            new = new[~self.contains(new)]
        if not len(new):
            return 0
        added = len(new)
        self._size += added
        while self._runs and len(self._runs[-1]) <= 2 * len(new):
            new = merge_disjoint(self._runs.pop(), new)
            self._highs.pop()
        self._runs.append(new)
        self._highs.append(high_words(new))
        return added

    def contains(self, digests) -> np.ndarray:
        """A bool mask: which of ``digests`` are in the set."""
        digests = as_digests(digests)
        found = np.zeros(len(digests), bool)
        if not self._runs or not len(digests):
            return found
        high = high_words(digests)
        order = np.argsort(high)  # searching in order: each search starts where the last ended
        high, ordered = high[order], digests[order]
        hit = np.zeros(len(digests), bool)
        for run, run_high in zip(self._runs, self._highs):
            hit |= _member_fast(run, run_high, ordered, high)
        found[order] = hit
        return found

    def __contains__(self, digest) -> bool:
        return bool(self.contains(as_digests([digest]))[0])

    def __len__(self) -> int:
        return self._size

    @property
    def runs(self) -> tuple[np.ndarray, ...]:
        return tuple(self._runs)

    def to_array(self) -> np.ndarray:
        """Every digest, sorted (one array)."""
        out = np.empty(0, DIGEST)
        for run in self._runs:
            out = merge_disjoint(out, run)
        return out
