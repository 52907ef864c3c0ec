"""The latest label of every source in a destination, across its jobs.

One record per source: its newest successful label by one model across every job in DEST,
or, for a source no job labeled successfully, its newest error. Jobs are read newest first
(``_JOB``'s ``submitted_at``, else ``_SUCCESS``'s); a source seen in a newer job hides it in
older ones. Reads storage only: no Redis needed. Memory holds a 16-byte digest per source
(sorted numpy runs), plus the error records still pending. ``bulklabel snapshot`` writes
it to a file; ``export`` and ``report`` read it as a SOURCE (DEST with ``--model``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from .chunks import is_shard, manifest_key, shard_prefix, success_key
from .errors import ConfigError
from .index import DigestSet, digest_pairs, job_folders
from .record_codec import jsonl_lines


def _submitted_at(storage, job_id: str) -> float:
    for key in (manifest_key(job_id), success_key(job_id)):
        try:
            value = json.loads(storage.read(key)).get("submitted_at")
        except (FileNotFoundError, ValueError, AttributeError):  # missing, or not a JSON object
            continue
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def newest_first(storage) -> list[str]:
    """Job folders of DEST, the most recently submitted first (job id breaks ties)."""
    jobs = [(_submitted_at(storage, job), job) for job in job_folders(storage)]
    return [job for _, job in sorted(jobs, reverse=True)]


def job_records(storage, job_id: str) -> Iterator[list[dict]]:
    """The records of one job folder, a shard at a time."""
    for key in sorted(k for k in storage.list(shard_prefix(job_id)) if is_shard(k)):
        yield [json.loads(line) for line in jsonl_lines(storage.read(key)) if line.strip()]


def newest_model(storage, jobs: list[str]) -> str:
    """The model of the newest job's first record (ConfigError if no job has one)."""
    for job in jobs:
        for batch in job_records(storage, job):
            for record in batch:
                if record.get("model"):
                    return record["model"]
    raise ConfigError(f"no labeled records under {storage.url('')}: nothing to take labels from")


class Latest:
    """Iterate to get batches of records (each with ``job_id``); counts are set as it goes."""

    def __init__(self, storage, model: str | None = None, jobs: list[str] | None = None):
        self.storage = storage
        self.jobs = newest_first(storage) if jobs is None else jobs
        if not self.jobs:
            raise ConfigError(f"no job results under {storage.url('')}: give the DEST that submit wrote to (--out)")
        self.model_given = model is not None
        self.model = model if model is not None else newest_model(storage, self.jobs)
        self.records = self.errors = self.used_jobs = 0

    def __iter__(self) -> Iterator[list[dict]]:
        seen = DigestSet()            # sources with a successful label given already
        failed: dict[str, dict] = {}  # source -> its newest error record, while no success is known
        for job in self.jobs:
            used = False
            for batch in job_records(self.storage, job):
                mine = [r for r in batch if r.get("model") == self.model]
                if not mine:
                    continue
                used = True
                ok = [r for r in mine if r.get("error") is None]
                if ok:
                    digests = digest_pairs([r["source"] for r in ok], [""] * len(ok))
                    fresh = ~seen.contains(digests)
                    keep, kept = [], set()
                    for record, new, digest in zip(ok, fresh, digests):
                        if new and digest not in kept:
                            kept.add(digest)
                            keep.append(dict(record, job_id=job))
                    seen.add(digests)
                    self.records += len(keep)
                    if keep:
                        yield keep
                for record in mine:
                    if record.get("error") is not None and record["source"] not in failed:
                        failed[record["source"]] = dict(record, job_id=job)
            self.used_jobs += used
        pending = list(failed.values())
        if pending:
            digests = digest_pairs([r["source"] for r in pending], [""] * len(pending))
            errors = [r for r, labeled in zip(pending, seen.contains(digests)) if not labeled]
            self.errors = len(errors)
            self.records += len(errors)
            if errors:
                yield errors
