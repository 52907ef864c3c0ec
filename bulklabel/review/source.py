"""SOURCE for ``export`` and ``report``: which records, and what is known of the job.

SOURCE is one of, tried in this order:

* a results file (``.jsonl``, ``.csv``, ``.parquet``): what ``classify``, ``results`` or
  ``snapshot`` wrote;
* a job folder ``DEST/<job_id>/`` (local or ``s3://``): its shards, and its ``_SUCCESS`` /
  ``_JOB`` summaries;
* a DEST that jobs wrote to: the latest label of every source (``bulklabel.latest``) by
  ``--model ID`` (default: the newest job's model);
* a job id: Redis says where its destination is; the job's counts and speed come from Redis.

Records are streamed in batches (``Records.batches``), never held whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..chunks import MANIFEST, SUCCESS, is_shard, manifest_key, shard_prefix, success_key
from ..errors import ConfigError
from ..latest import Latest, job_records
from ..record_codec import FORMATS, iter_records
from ..storage import open_storage

SUMMARY_FIELDS = ("job_id", "state", "total", "done", "errors", "skipped", "models", "queue",
                  "submitted_at", "started_at", "finished_at", "seconds", "images_per_second")


@dataclass
class Records:
    """A stream of record batches and the summary known of where they come from."""

    kind: str                  # file | folder | snapshot | job
    source: str                # what the user gave
    summary: dict[str, Any] = field(default_factory=dict)
    _batches: Any = None       # an iterable of record lists, iterated once

    def batches(self) -> Iterator[list[dict]]:
        for batch in self._batches:
            if batch:
                yield batch


def _checked(batches: Iterator[list[dict]]) -> Iterator[list[dict]]:
    try:
        yield from batches
    except ValueError as exc:
        raise ConfigError(f"{exc}: give a file that classify, results or snapshot wrote") from None


def _read_json(storage, key: str) -> dict[str, Any]:
    try:
        value = json.loads(storage.read(key))
    except (FileNotFoundError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _job_summary(storage, job_id: str) -> dict[str, Any]:
    """What ``_SUCCESS`` (a finished job) or ``_JOB`` (any submitted job) says of the job."""
    done = _read_json(storage, success_key(job_id))
    asked = _read_json(storage, manifest_key(job_id))
    summary = {k: done[k] for k in SUMMARY_FIELDS if done.get(k) is not None}
    summary.setdefault("job_id", job_id)
    summary.setdefault("submitted_at", asked.get("submitted_at"))
    if not done:
        summary["state"] = "unfinished (no _SUCCESS yet)"
    return summary


def _split_folder(path: str) -> tuple[str, str]:
    """``DEST/<job>`` → (DEST, job)."""
    path = path.rstrip("/")
    parent, _, name = path.rpartition("/")
    return parent, name


def _is_job_folder(storage, job_id: str) -> bool:
    if storage.exists(success_key(job_id)) or storage.exists(manifest_key(job_id)):
        return True
    return any(is_shard(k) for k in storage.list(shard_prefix(job_id)))


def _folder(source: str, model: str | None) -> Records | None:
    """A job folder, or a DEST of job folders; None if ``source`` is neither."""
    parent, name = _split_folder(source)
    bucket_only = source.startswith("s3://") and "/" not in source[len("s3://"):].strip("/")
    if parent and name and name not in (SUCCESS, MANIFEST) and not bucket_only:
        storage = open_storage(parent)
        if _is_job_folder(storage, name):
            if model is not None:
                raise ConfigError(f"--model chooses the model of a DEST's snapshot; {source} is one job's "
                                  "folder (its records are taken as they are)")
            return Records("folder", source, _job_summary(storage, name), job_records(storage, name))
    storage = open_storage(source.rstrip("/"))
    try:
        latest = Latest(storage, model)
    except ConfigError:
        return None
    summary = {"dest": source, "models": [latest.model], "jobs": len(latest.jobs),
               "title": f"latest labels in {source}"}
    return Records("snapshot", source, summary, latest)


def _from_redis(job_id: str, redis_url: str) -> Records:
    from ..jobs import open_store
    from ..jobs.store import JobNotFound

    try:
        job = open_store(redis_url).get(job_id)
    except JobNotFound:
        raise ConfigError(f"SOURCE {job_id!r} is not a results file ({', '.join(FORMATS)}), a job folder, "
                          f"a DEST with job folders, nor a job id known to Redis") from None
    storage = open_storage(job["dest"])
    summary = {k: job.get(k) for k in SUMMARY_FIELDS}
    summary["dest"] = job["dest"]
    return Records("job", job_id, summary, job_records(storage, job_id))


def open_records(source: str, *, model: str | None = None, redis_url: str | None = None) -> Records:
    """Resolve SOURCE (see the module's docstring); ConfigError with what to do if it is none of them."""
    if not source:
        raise ConfigError("SOURCE is empty: give a results file, a job folder, a DEST or a job id")
    local = os.path.abspath(os.path.expanduser(source)) if not source.startswith("s3://") else None
    if local and os.path.isfile(local):
        if not local.lower().endswith(FORMATS):
            raise ConfigError(f"{source}: a results file must be {', '.join(FORMATS)}")
        if model is not None:
            raise ConfigError("--model chooses the model of a DEST's snapshot; a results file is taken as it is")
        return Records("file", source, {"title": os.path.basename(local)}, _checked(iter_records(local)))
    if local is None or os.path.isdir(local):
        found = _folder(local or source, model)
        if found is None:
            raise ConfigError(f"{source} holds no job results: give a job folder (DEST/<job_id>/), "
                              "the DEST that jobs wrote to, a results file or a job id")
        return found
    if "/" in source or source.lower().endswith(FORMATS):
        raise ConfigError(f"{source}: no such file or folder")
    if redis_url is None:
        raise ConfigError(f"{source!r} is not a file or folder; as a job id it needs Redis (BULKLABEL_REDIS_URL)")
    return _from_redis(source, redis_url)
