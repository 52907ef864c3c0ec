"""A model's label index in storage: load it, add a segment, compact it.

The index of model M under DEST is every segment in ``DEST/_index/<model_key(M)>/``.
Segments are immutable and uniquely named, so any number of hosts can write at once:

- adding writes one new segment (``write_segment``), then compacts if that is useful;
- compaction writes the merged segment (naming what it ``replaces``) *before* deleting what
  it merged, and deletes only segments it read whole: a crash or a rival compactor leaves
  duplicates, never a gap;
- loading drops a segment that a live segment replaces (a compaction that crashed before
  deleting), ignores a damaged one with a warning (its jobs then count as unindexed, and
  ``catch_up`` indexes them again from their shards), and lists again when a segment
  vanished between listing and reading (a compaction elsewhere merged it away).

The index is derived data: deleting ``_index/`` loses nothing that the shards do not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from . import compaction
from .digests import DigestSet, sorted_unique
from .layout import model_prefix, new_segment_name, segment_entries
from .segment import Segment, SegmentError, decode, encode

log = logging.getLogger("bulklabel.index")
_ATTEMPTS = 5


class IndexView:
    """What ``LabelIndex.load`` returns: the digests labeled by one model, and the jobs covered."""

    def __init__(self, model: str, digests: DigestSet | None = None, jobs: Iterable[str] = (),
                 segments: Iterable[str] = ()):
        self.model = model
        self.digests = digests if digests is not None else DigestSet()
        self.jobs: set[str] = set(jobs)
        self.segments: tuple[str, ...] = tuple(segments)

    def contains(self, digests: np.ndarray) -> np.ndarray:
        """A bool mask: which of ``digests`` are indexed."""
        return self.digests.contains(digests)

    def add(self, job_ids: Iterable[str], digests) -> None:
        """Take in what was just indexed (``catch_up`` does, so nothing needs loading again)."""
        self.jobs.update(job_ids)
        self.digests.add(digests)

    def __len__(self) -> int:
        return len(self.digests)

    def __repr__(self) -> str:
        return (f"IndexView(model={self.model!r}, entries={len(self)}, jobs={len(self.jobs)}, "
                f"segments={len(self.segments)})")


class LabelIndex:
    """The label index of ``model_id`` in ``storage`` (the job destination's root)."""

    def __init__(self, storage, model_id: str):
        self.storage = storage
        self.model_id = model_id
        self.prefix = model_prefix(model_id)

    # --- reading ----------------------------------------------------------------------

    def _names(self) -> dict[str, int]:
        """Segment name → entry count, from a listing."""
        names = {}
        for key in self.storage.list(self.prefix):
            name = key[len(self.prefix):]
            entries = segment_entries(name)
            if entries is not None:
                names[name] = entries
        return names

    def _read(self, name: str) -> Segment | None:
        """The segment, or None when it is gone; ``SegmentError`` when it is not valid."""
        try:
            data = self.storage.read(self.prefix + name)
        except FileNotFoundError:
            return None
        segment = decode(name, data)
        if segment.model != self.model_id:
            raise SegmentError(f"it belongs to model {segment.model!r}")
        if segment.entries != segment_entries(name):
            raise SegmentError(f"its name says {segment_entries(name)} entries, its header {segment.entries}")
        return segment

    def _warn(self, name: str, exc: Exception) -> None:
        log.warning("label index segment %s is ignored: %s. Its jobs are indexed again from their shards "
                    "by the next incremental submit; delete it to silence this warning",
                    self.storage.url(self.prefix + name), exc)

    def _read_all(self) -> list[Segment]:
        """Every valid segment. When one vanished between listing and reading, list again:
        whoever merged it wrote the merged segment first, so the new listing has its entries."""
        read: dict[str, Segment] = {}
        skipped: set[str] = set()
        for _ in range(_ATTEMPTS):
            vanished = False
            for name in sorted(self._names()):
                if name in read or name in skipped:
                    continue
                try:
                    segment = self._read(name)
                except SegmentError as exc:
                    self._warn(name, exc)
                    skipped.add(name)
                    continue
                if segment is None:
                    vanished = True
                    skipped.add(name)
                else:
                    read[name] = segment
            if not vanished:
                break
        else:
            log.warning("segments of the label index under %s kept vanishing while it was read; it may miss "
                        "some entries (those images are labeled again)", self.storage.url(self.prefix))
        return list(read.values())

    @staticmethod
    def _live(segments: list[Segment]) -> list[Segment]:
        replaced = set().union(*(s.replaces for s in segments))
        return [s for s in segments if s.name not in replaced]

    def load(self) -> IndexView:
        """The index as it is now: the union of its live segments."""
        live = self._live(self._read_all())
        digests = DigestSet()
        for segment in sorted(live, key=lambda s: -s.entries):  # the largest first: fewer merges
            digests.add(segment.digests)
        jobs = set().union(*(s.jobs for s in live))
        return IndexView(self.model_id, digests, jobs, sorted(s.name for s in live))

    # --- writing ----------------------------------------------------------------------

    def write_segment(self, job_ids: list[str], digests: np.ndarray, compact: bool = True) -> str:
        """Write a segment covering ``job_ids`` with ``digests`` (any order; repeats dropped);
        then compact when that is useful (a failure there is logged: the index stays right).
        Returns the key written."""
        digests = sorted_unique(digests)
        key = self.prefix + new_segment_name(len(digests))
        self.storage.write(key, encode(self.model_id, job_ids, digests))
        if compact:
            try:
                self.compact()
            except Exception as exc:
                log.warning("could not compact the label index under %s (%s: %s); it stays correct, "
                            "with more segments", self.storage.url(self.prefix), type(exc).__name__, exc)
        return key

    def compact(self) -> dict:
        """Merge the segments the size-tiered plan picks (``compaction.plan``) into one; then
        delete them. Stats: ``segments`` before, ``merged``, ``entries`` and ``bytes`` written,
        ``deleted``, ``written`` (the new key or None)."""
        names = self._names()
        stats = {"segments": len(names), "merged": 0, "entries": 0, "bytes": 0, "deleted": 0, "written": None}
        group: list[Segment] = []
        for name in compaction.plan(list(names.items())):
            try:
                segment = self._read(name)
            except SegmentError as exc:
                self._warn(name, exc)
                continue
            if segment is not None:  # else merged away by another compactor meanwhile
                group.append(segment)
        replaced = set().union(*(s.replaces for s in group))
        keep = [s for s in group if s.name not in replaced]
        kept_replace = set().union(*(s.replaces for s in keep))
        doomed = [s.name for s in group if s.name in kept_replace]  # already inside a segment kept
        if len(keep) >= 2:
            merged = DigestSet(s.digests for s in sorted(keep, key=lambda s: -s.entries)).to_array()
            data = encode(self.model_id, set().union(*(s.jobs for s in keep)), merged,
                          replaces={s.name for s in keep} | (replaced & set(names)))
            key = self.prefix + new_segment_name(len(merged))
            self.storage.write(key, data)  # first the merged segment, then the deletes
            stats.update(merged=len(keep), entries=len(merged), bytes=len(data), written=key)
            doomed += [s.name for s in keep]
        for name in doomed:
            self.storage.delete(self.prefix + name)
            stats["deleted"] += 1
        return stats
