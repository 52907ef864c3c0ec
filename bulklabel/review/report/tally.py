"""One streaming pass over the records: everything the report shows, in bounded memory.

Kept while the records go by (each batch is read once and dropped):

* counts: records, labeled, errors; per label (with its score sum), per model, per error
  reason (at most ``MAX_REASONS`` distinct reasons, the rest counted together);
* the top-1 score histogram, ``BINS`` equal bins over [0, 1] (scores outside are clamped);
* the first ``max_errors`` error records;
* the ``lowest`` records of lowest score (a max-heap of that size);
* a sample of ``per_label`` sources per label: the sources of smallest seeded hash (a bottom-k
  sample, uniform like a reservoir, and independent of the order the records come in, so the
  shards of a distributed job give the same report in any order).

Memory is bounded by the number of labels × ``per_label``, whatever the number of records.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

BINS = 20
MAX_REASONS = 1000
REASON_CHARS = 400
SEED = 20240601


@dataclass(frozen=True)
class Flagged:
    """A low-confidence record, as the report lists it."""

    source: str
    label: str
    score: float
    runner_up: str | None
    runner_up_score: float | None
    model: str | None


@dataclass(frozen=True)
class Failed:
    """An error record, as the report lists it."""

    source: str
    reason: str
    model: str | None


class LabelTally:
    __slots__ = ("count", "scored", "score_sum", "sample")

    def __init__(self):
        self.count = 0
        self.scored = 0
        self.score_sum = 0.0
        self.sample: list[tuple[int, str, float | None]] = []  # max-heap on -hash: (-hash, source, score)

    @property
    def mean(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None


def _score(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _runner_up(top_k, label: str) -> tuple[str | None, float | None]:
    """The best of ``top_k`` that is not ``label``."""
    if isinstance(top_k, list):
        for entry in top_k:
            if isinstance(entry, dict) and _text(entry.get("label")) != label:
                return _text(entry.get("label")), _score(entry.get("score"))
    return None, None


class Tally:
    def __init__(self, per_label: int = 12, lowest: int = 40, max_errors: int = 200, seed: int = SEED):
        self.per_label = max(0, per_label)
        self.lowest_size = max(0, lowest)
        self.max_errors = max(0, max_errors)
        self._key = int(seed).to_bytes(8, "little", signed=True)
        self.records = 0
        self.labeled = 0
        self.unlabeled = 0           # no error, yet no label
        self.errors = 0
        self.scored = 0              # labeled records with a score
        self.score_sum = 0.0
        self.histogram = [0] * BINS
        self.labels: dict[str, LabelTally] = {}
        self.models: Counter[str | None] = Counter()
        self.reasons: Counter[str] = Counter()
        self.other_reasons = 0       # errors whose reason came after MAX_REASONS distinct ones
        self.error_records: list[Failed] = []
        self._lowest: list[tuple] = []  # max-heap: (-score, -hash, source, label, runner-up, its score, model)

    def _hash(self, source: str) -> int:
        digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=8, key=self._key)
        return int.from_bytes(digest.digest(), "big")

    def add_all(self, batches: Iterable[list[dict]]) -> Tally:
        for batch in batches:
            for record in batch:
                self.add(record)
        return self

    def add(self, record: dict) -> None:
        self.records += 1
        source = _text(record.get("source")) or ""
        model = _text(record.get("model"))
        self.models[model] += 1
        error = record.get("error")
        if error is not None:
            self._add_error(source, _text(error), model)
            return
        label = _text(record.get("label"))
        if label is None:
            self.unlabeled += 1
            return
        self.labeled += 1
        tally = self.labels.get(label)
        if tally is None:
            tally = self.labels[label] = LabelTally()
        tally.count += 1
        score = _score(record.get("score"))
        if score is not None:
            tally.scored += 1
            tally.score_sum += score
            self.scored += 1
            self.score_sum += score
            self.histogram[min(BINS - 1, max(0, int(score * BINS)))] += 1
        if not self.per_label and (score is None or not self.lowest_size):
            return
        h = self._hash(source)
        if self.per_label:
            self._sample(tally.sample, h, source, score)
        if score is not None and self.lowest_size:
            self._low(record, h, source, label, score, model)

    def _add_error(self, source: str, reason: str, model: str | None) -> None:
        self.errors += 1
        reason = reason[:REASON_CHARS] or "(no reason given)"
        if reason in self.reasons or len(self.reasons) < MAX_REASONS:
            self.reasons[reason] += 1
        else:
            self.other_reasons += 1
        if len(self.error_records) < self.max_errors:
            self.error_records.append(Failed(source, reason, model))

    def _sample(self, heap: list, h: int, source: str, score: float | None) -> None:
        if len(heap) < self.per_label:
            if not any(item[1] == source for item in heap):
                heapq.heappush(heap, (-h, source, score))
        elif -h > heap[0][0] and not any(item[1] == source for item in heap):
            heapq.heapreplace(heap, (-h, source, score))

    def _low(self, record: dict, h: int, source: str, label: str, score: float, model: str | None) -> None:
        heap = self._lowest
        full = len(heap) >= self.lowest_size
        if full and (-score, -h) <= heap[0][:2]:
            return
        if any(item[2] == source for item in heap):
            return
        runner, runner_score = _runner_up(record.get("top_k"), label)
        item = (-score, -h, source, label, runner or "", -1.0 if runner_score is None else runner_score, model or "")
        if full:
            heapq.heapreplace(heap, item)
        else:
            heapq.heappush(heap, item)

    # What the page shows.

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None

    def ranked_labels(self) -> list[tuple[str, LabelTally]]:
        """Labels by count, most first (ties by name)."""
        return sorted(self.labels.items(), key=lambda kv: (-kv[1].count, kv[0]))

    def sample(self, label: str) -> list[tuple[str, float | None]]:
        """The sampled (source, score) of ``label``, by source."""
        tally = self.labels.get(label)
        return sorted((source, score) for _, source, score in tally.sample) if tally else []

    def lowest(self) -> list[Flagged]:
        """The lowest-score records, lowest first."""
        items = sorted(self._lowest, key=lambda item: (-item[0], -item[1]))
        return [Flagged(source, label, -neg, runner or None, None if runner_score < 0 else runner_score, model or None)
                for neg, _, source, label, runner, runner_score, model in items]
