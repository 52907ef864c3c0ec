"""``JobStore``: the job's counters and state in Redis, updated by atomic Lua scripts."""

from __future__ import annotations

import time
from typing import Any

from .. import keys
from ..errors import BulkLabelError, ConfigError
from ..settings import redact_url
from . import scripts
from .view import job_view

KEEP_SECONDS = 30 * 24 * 3600  # job state expires a month after the job ends


class JobNotFound(BulkLabelError):
    exit_code = 4


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


def open_store(url: str, patience: float = 3.0) -> JobStore:
    """A job store on ``url`` that answers now: a Redis that stays away for ``patience``
    seconds is a clear ``ConfigError`` (exit 2), not a traceback."""
    import redis

    client = connect(url, patience=patience)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(describe_connection_error(url, exc)) from None
    return JobStore(client)


class JobStore:
    def __init__(self, client):
        self.r = client
        self._complete_chunk = client.register_script(scripts.source("complete_chunk"))
        self._finish_listing = client.register_script(scripts.source("finish_listing"))
        self._start_chunk = client.register_script(scripts.source("start_chunk"))

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
        """Mark the listing complete; True if that completed the job (its keys then expire)."""
        completed = bool(self._finish_listing(keys=[keys.job(job_id)], args=[repr(time.time())]))
        if completed:
            self._expire(job_id)
        return completed

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
