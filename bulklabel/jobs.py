"""Job state in Redis, shared by the producer, the workers and ``status``.

Counting is idempotent: a chunk's images are added to the totals only by the first
completion of that chunk (``SADD chunks_done`` gates the increments inside one Lua
script), so a redelivered chunk never counts twice. The transition to ``done`` happens in
the same atomic step, whoever completes it last — a worker finishing the final chunk, or
the producer finishing the listing after every chunk already finished — so exactly one
party writes the ``_SUCCESS`` summary.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from . import keys
from .errors import BulkLabelError, ConfigError
from .settings import redact_url

STATES = ("queued", "running", "done", "failed")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KEEP_SECONDS = 30 * 24 * 3600  # job state expires a month after the job ends

_COMPLETE_IF_READY = """
local function complete_if_ready(job, now)
  local h = redis.call('HMGET', job, 'listing', 'chunks_total', 'chunks_done', 'state')
  if h[1] == '0' and tonumber(h[2]) == tonumber(h[3]) and h[4] ~= 'done' and h[4] ~= 'failed' then
    redis.call('HSET', job, 'state', 'done', 'finished_at', now)
    if redis.call('HEXISTS', job, 'started_at') == 0 then redis.call('HSET', job, 'started_at', now) end
    return 1
  end
  return 0
end
"""

# KEYS: job, chunks_done, models   ARGV: chunk, images, errors, model, now
_COMPLETE_CHUNK = _COMPLETE_IF_READY + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return {0, 0} end
redis.call('HINCRBY', KEYS[1], 'done', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'errors', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('SADD', KEYS[3], ARGV[4])
return {1, complete_if_ready(KEYS[1], ARGV[5])}
"""

# KEYS: job   ARGV: now
_FINISH_LISTING = _COMPLETE_IF_READY + """
local enqueued = redis.call('HGET', KEYS[1], 'chunks_enqueued') or '0'
redis.call('HSET', KEYS[1], 'listing', '0', 'chunks_total', enqueued)
return complete_if_ready(KEYS[1], ARGV[1])
"""

# KEYS: job, deliveries, chunks_done, workers   ARGV: chunk, worker, now
_START_CHUNK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local seen = redis.call('SISMEMBER', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[2])
return {n, seen}
"""


class JobNotFound(BulkLabelError):
    exit_code = 4


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise ConfigError(
            "a job id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a folder under DEST). Received: {job_id!r}"
        )
    return job_id


def connect(url: str, patience: float = 300.0):
    """A Redis client that rides out a restart: retries with backoff for ``patience`` seconds."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    cap = 5.0
    retries = max(1, int(patience / cap) + 5)
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=cap, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def describe_connection_error(url: str, exc: Exception) -> str:
    return (f"cannot reach Redis at {redact_url(url)} ({type(exc).__name__}: {exc}). "
            "Is it running? Set BULKLABEL_REDIS_URL or --redis to point at it.")


class JobStore:
    def __init__(self, client):
        self.r = client
        self._complete_chunk = client.register_script(_COMPLETE_CHUNK)
        self._finish_listing = client.register_script(_FINISH_LISTING)
        self._start_chunk = client.register_script(_START_CHUNK)

    # --- producer -------------------------------------------------------------------
    def create(self, job_id: str, dest: str, queue: str, sources: list[str]) -> None:
        now = repr(time.time())
        key = keys.job(job_id)
        if not self.r.hsetnx(key, "job_id", job_id):
            raise ConfigError(f"job {job_id!r} already exists: pick another --job-id "
                              f"(or look at it with: bulklabel status {job_id})")
        self.r.hset(key, mapping={
            "state": "queued", "dest": dest, "queue": queue, "submitted_at": now,
            "listing": "1", "total": 0, "done": 0, "errors": 0,
            "chunks_enqueued": 0, "chunks_total": 0, "chunks_done": 0,
            "sources": " ".join(sources)[:2000],
        })
        self.r.zadd(keys.JOBS, {job_id: float(now)})

    def add_chunk(self, job_id: str, images: int) -> None:
        pipe = self.r.pipeline()
        pipe.hincrby(keys.job(job_id), "total", images)
        pipe.hincrby(keys.job(job_id), "chunks_enqueued", 1)
        pipe.execute()

    def finish_listing(self, job_id: str) -> bool:
        """Mark the listing complete; True if that completed the job."""
        return bool(self._finish_listing(keys=[keys.job(job_id)], args=[repr(time.time())]))

    def fail(self, job_id: str, reason: str) -> None:
        self.r.hset(keys.job(job_id), mapping={
            "state": "failed", "error": reason[:2000], "finished_at": repr(time.time())})
        self._expire(job_id)

    # --- worker ---------------------------------------------------------------------
    def start_chunk(self, job_id: str, chunk: int, worker: str) -> tuple[int, bool]:
        """Record a delivery; returns (deliveries so far, chunk already counted)."""
        n, seen = self._start_chunk(
            keys=[keys.job(job_id), keys.deliveries(job_id), keys.chunks_done(job_id), keys.workers(job_id)],
            args=[chunk, worker, repr(time.time())])
        if n == -1:
            raise JobNotFound(f"job {job_id!r} is not known to Redis (expired or deleted)")
        return int(n), bool(seen)

    def undo_delivery(self, job_id: str, chunk: int) -> None:
        """A delivery that ended cleanly (to be retried) is not a worker death."""
        self.r.hincrby(keys.deliveries(job_id), str(chunk), -1)

    def complete_chunk(self, job_id: str, chunk: int, images: int, errors: int, model: str) -> tuple[bool, bool]:
        """Count a finished chunk once; returns (counted now, job completed now)."""
        counted, completed = self._complete_chunk(
            keys=[keys.job(job_id), keys.chunks_done(job_id), keys.models(job_id)],
            args=[chunk, images, errors, model, repr(time.time())])
        if counted == -1:
            raise JobNotFound(f"job {job_id!r} is not known to Redis (expired or deleted)")
        if completed:
            self._expire(job_id)
        return bool(counted), bool(completed)

    # --- everyone -------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        pipe = self.r.pipeline()
        pipe.hgetall(keys.job(job_id))
        pipe.smembers(keys.models(job_id))
        pipe.smembers(keys.workers(job_id))
        raw, models, workers = pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r} in Redis (check the id, and that "
                              "BULKLABEL_REDIS_URL points at the Redis it was submitted to)")
        return job_view(raw, models, workers)

    def _expire(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        for key in (keys.job(job_id), keys.chunks_done(job_id), keys.deliveries(job_id),
                    keys.models(job_id), keys.workers(job_id)):
            pipe.expire(key, KEEP_SECONDS)
        pipe.execute()


def job_view(raw: dict[str, str], models=(), workers=()) -> dict[str, Any]:
    """Typed view of a job hash, with derived rate and ETA."""
    def num(name, kind=int):
        value = raw.get(name)
        return kind(value) if value not in (None, "") else None

    job: dict[str, Any] = {
        "job_id": raw.get("job_id"), "state": raw.get("state"),
        "total": num("total"), "done": num("done"), "errors": num("errors"),
        "listing_complete": raw.get("listing") == "0",
        "chunks_total": num("chunks_total") if raw.get("listing") == "0" else None,
        "chunks_enqueued": num("chunks_enqueued"), "chunks_done": num("chunks_done"),
        "dest": raw.get("dest"), "queue": raw.get("queue"),
        "submitted_at": num("submitted_at", float), "started_at": num("started_at", float),
        "finished_at": num("finished_at", float),
        "models": sorted(models), "workers": sorted(workers), "error": raw.get("error"),
    }
    started, finished = job["started_at"], job["finished_at"]
    elapsed = ((finished or time.time()) - started) if started else 0.0
    job["seconds"] = round(elapsed, 3)
    job["images_per_second"] = round(job["done"] / elapsed, 2) if elapsed > 0 and job["done"] else 0.0
    remaining = (job["total"] or 0) - (job["done"] or 0)
    rate = job["images_per_second"]
    job["eta_seconds"] = round(remaining / rate, 1) if rate and job["state"] == "running" and job["listing_complete"] else None
    return job


def success_summary(job: dict[str, Any]) -> dict[str, Any]:
    """What ``DEST/<job_id>/_SUCCESS`` holds."""
    fields = ("job_id", "state", "total", "done", "errors", "chunks_total", "models", "workers",
              "queue", "submitted_at", "started_at", "finished_at", "seconds", "images_per_second")
    return {k: job.get(k) for k in fields}


def write_success(jobs: JobStore, storage, job_id: str) -> dict[str, Any]:
    """Write ``<job_id>/_SUCCESS`` (the job's summary) to the job's destination storage."""
    import json

    summary = success_summary(jobs.get(job_id))
    storage.write(f"{job_id}/_SUCCESS", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
