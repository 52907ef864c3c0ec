"""Which records go to people: the doubtful ones, and a random audit of the confident ones.

One pass over the stream, bounded memory apart from what is kept:

* ``review_below=P``: records whose top-1 score is below P, lowest first (ties by source);
* ``sample=N``: N records drawn uniformly at random (reservoir sampling, seeded), from the
  records at or above P when P is given (an audit of the confident ones), else from all;
* neither: every labeled record, in stream order.

Error records are never selected; they are counted (``Selection.errors``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass
class Selection:
    review_below: float | None = None
    sample: int | None = None
    seed: int = 0
    records: int = 0           # records seen
    errors: int = 0            # error records left out
    doubtful: int = 0          # selected because below P
    sampled: int = 0           # selected by the sample
    _pool: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.review_below is not None and not 0.0 < self.review_below <= 1.0:
            raise ConfigError(f"--review-below must be a score in (0, 1]. Received: {self.review_below}")
        if self.sample is not None and self.sample < 1:
            raise ConfigError(f"--sample must be at least 1. Received: {self.sample}")

    def apply(self, batches: Iterable[list[dict]]) -> Iterator[tuple[str, dict]]:
        """(reason, record) for each selected record; reason is 'all', 'doubtful' or 'sample'.

        Without --review-below and --sample this streams; otherwise the selection is
        yielded once the stream ends."""
        rng = random.Random(self.seed)
        below: list[tuple[float, str, dict]] = []
        reservoir: list[dict] = []
        everything = self.review_below is None and self.sample is None
        for batch in batches:
            for record in batch:
                self.records += 1
                if record.get("error") is not None or record.get("label") is None:
                    self.errors += 1
                    continue
                if everything:
                    yield "all", record
                    continue
                score = float(record["score"])
                if self.review_below is not None and score < self.review_below:
                    below.append((score, record["source"], record))
                elif self.sample is not None:
                    self._pool += 1
                    if len(reservoir) < self.sample:
                        reservoir.append(record)
                    else:
                        slot = rng.randrange(self._pool)
                        if slot < self.sample:
                            reservoir[slot] = record
        below.sort(key=lambda item: (item[0], item[1]))
        self.doubtful = len(below)
        for _, _, record in below:
            yield "doubtful", record
        rng.shuffle(reservoir)
        self.sampled = len(reservoir)
        for record in reservoir:
            yield "sample", record

    def describe(self) -> str:
        parts = []
        if self.review_below is not None:
            parts.append(f"{self.doubtful} below {self.review_below:g}")
        if self.sample is not None:
            pool = "at or above the threshold" if self.review_below is not None else "in all"
            parts.append(f"{self.sampled} sampled of {self._pool} {pool}")
        return ", ".join(parts) or "every labeled record"
