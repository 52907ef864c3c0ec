"""The prediction record: one per input image, errors included.

Every output (JSONL, CSV, Parquet, the distributed shards) uses these fields, in this
order. A record with an ``error`` has ``label``/``score`` null and an empty ``top_k``.
Every field is valid UTF-8 text: a ``source`` whose path is not is written as a ``file://``
URI (``bulklabel.names.source_text``), so no output format can fail on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .names import as_text, source_text

FIELDS = ("source", "label", "score", "top_k", "model", "error")

Record = dict[str, Any]


def prediction(source: str, model: str, top_k: Sequence[tuple[str, float]]) -> Record:
    """A successful record; ``top_k`` is (label, probability) pairs, best first."""
    ranked = [{"label": label, "score": round(float(score), 6)} for label, score in top_k]
    best = ranked[0] if ranked else {"label": None, "score": None}
    return {
        "source": source_text(source),
        "label": best["label"],
        "score": best["score"],
        "top_k": ranked,
        "model": model,
        "error": None,
    }


def failure(source: str, model: str, reason: str) -> Record:
    """A record for an image that could not be classified, with a readable reason."""
    return {
        "source": source_text(source),
        "label": None,
        "score": None,
        "top_k": [],
        "model": model,
        "error": as_text(reason),
    }
