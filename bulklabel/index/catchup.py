"""Building the index from the shards: one finished job (``index_job``), or every finished
job a model's index does not cover yet (``catch_up``).

A record is indexed when it has no ``error`` (an error is tried again by the next job), a
non-empty ``fingerprint`` and a ``model``: each model's records go to that model's index.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..chunks import is_shard, shard_prefix
from ..jobs.ids import JOB_ID
from ..record_codec import jsonl_lines
from .digests import DIGEST, digest_pairs, sorted_unique
from .store import IndexView, LabelIndex

log = logging.getLogger("bulklabel.index")


def _indexable(line: bytes) -> tuple[str, str, str] | None:
    """(model, source, fingerprint) of an indexable record line, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or "error" not in record or record["error"] is not None:
        return None
    model, source, fingerprint = record.get("model"), record.get("source"), record.get("fingerprint")
    if isinstance(model, str) and isinstance(source, str) and isinstance(fingerprint, str) and fingerprint:
        return model, source, fingerprint
    return None


def job_digests(storage, job_id: str) -> dict[str, np.ndarray]:
    """Model → sorted distinct digests of the job's indexable records, read shard by shard
    (16 bytes held per record, never the records themselves)."""
    parts: dict[str, list[np.ndarray]] = {}
    for key in storage.list(shard_prefix(job_id)):
        if not is_shard(key):
            continue
        pairs: dict[str, tuple[list[str], list[str]]] = {}
        for line in jsonl_lines(storage.read(key)):
            found = _indexable(line) if line.strip() else None
            if found:
                sources, prints = pairs.setdefault(found[0], ([], []))
                sources.append(found[1])
                prints.append(found[2])
        for model, (sources, prints) in pairs.items():
            parts.setdefault(model, []).append(digest_pairs(sources, prints))
    return {model: sorted_unique(np.concatenate(arrays)) for model, arrays in parts.items()}


def _index_job(storage, job_id: str, models: Iterable[str]) -> dict[str, np.ndarray]:
    digests = job_digests(storage, job_id)
    for model in models:
        digests.setdefault(model, np.empty(0, DIGEST))  # an empty segment: the job counts as indexed
    for model, found in digests.items():
        LabelIndex(storage, model).write_segment([job_id], found)
    return digests


def index_job(storage, job_id: str, models: Iterable[str] = ()) -> dict[str, int]:
    """Index a finished job's shards: one segment per model found in its records, and an empty
    one for each of ``models`` that has none. Returns model → entries written."""
    return {model: len(found) for model, found in _index_job(storage, job_id, models).items()}


def job_folders(storage) -> Iterator[str]:
    """The job folders directly under the destination root (``_index`` and hidden ones left out)."""
    for name in storage.children(""):
        if not name.startswith(("_", ".")) and JOB_ID.fullmatch(name):
            yield name


def catch_up(storage, model_id: str, finished: Callable[[str], bool], view: IndexView | None = None) -> list[str]:
    """Index every job folder that ``model_id``'s index does not cover and ``finished(job_id)``
    says has ended. ``view`` (loaded when None) takes in what was indexed, so it is up to date
    afterwards. Returns the job ids indexed."""
    if view is None:
        view = LabelIndex(storage, model_id).load()
    indexed = []
    for job_id in job_folders(storage):
        if job_id in view.jobs or not finished(job_id):
            continue
        found = _index_job(storage, job_id, [model_id])
        view.add([job_id], found[model_id])
        indexed.append(job_id)
        log.info("indexed job %s for model %s (%d entries)", job_id, model_id, len(found[model_id]))
    return indexed
