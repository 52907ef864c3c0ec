"""Skipping what is already labeled: filter a lazy listing of (source, fingerprint) pairs.

Pairs go by in batches: each batch is digested and looked up at once (numpy), and the
pairs not in the index come out in their order. A pair without a fingerprint is never
skipped (nothing says it is unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from .digests import digest_pairs
from .store import IndexView


class Skipper:
    """Drops the pairs ``view`` holds; ``skipped`` counts them. With no view, drops nothing."""

    def __init__(self, view: IndexView | None, batch: int = 8192):
        self.view = view
        self.batch = max(1, int(batch))
        self.skipped = 0

    def filter(self, pairs: Iterable[tuple[str, str | None]]) -> Iterator[tuple[str, str | None]]:
        """The pairs not in the index, in order, lazily (at most ``batch`` read ahead)."""
        if self.view is None or not len(self.view):
            yield from pairs
            return
        it = iter(pairs)
        while batch := list(islice(it, self.batch)):
            known = [i for i, (_, fingerprint) in enumerate(batch) if fingerprint]
            if known:
                found = self.view.contains(digest_pairs([batch[i][0] for i in known],
                                                        [batch[i][1] for i in known]))
                drop = {known[i] for i in found.nonzero()[0]}
            else:
                drop = set()
            self.skipped += len(drop)
            for i, pair in enumerate(batch):
                if i not in drop:
                    yield pair
