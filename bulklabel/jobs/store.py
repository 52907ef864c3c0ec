"""``JobStore``: the job's counters and state in Redis, updated by atomic Lua scripts."""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from .. import keys
from ..errors import BulkLabelError, ConfigError
from ..heartbeat import KeyHeartbeat
from ..settings import redact_url
from . import scripts
from .view import job_view

KEEP_SECONDS = 30 * 24 * 3600  # job state expires a month after the job ends...
MAX_AGE_SECONDS = 2 * KEEP_SECONDS  # ...and two months after its creation, whatever became of it
ENDED = ("done", "failed", "cancelled")
DEAD_LETTER_KEEP = 10_000
LISTER_SECONDS = 45  # the listing submit refreshes its key every LISTER_SECONDS / 3


class Delivery(NamedTuple):
    """What ``start_chunk`` found: the delivery's number, whether the chunk is already
    counted, and the job's state (``failed``/``cancelled``: the chunk is not to be run)."""

    number: int
    counted: bool
    state: str


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


def open_store(url: str, patience: float = 3.0, keep_trying: float | None = None) -> JobStore:
    """A job store on ``url`` that answers now: a Redis that stays away for ``patience``
    seconds is a clear ``ConfigError`` (exit 2), not a traceback. Later calls ride out an
    outage for ``keep_trying`` seconds (default: ``patience``)."""
    import redis

    client = connect(url, patience=patience)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(describe_connection_error(url, exc)) from None
    if keep_trying is not None and keep_trying != patience:
        client = connect(url, patience=keep_trying)
    return JobStore(client)


class JobStore:
    def __init__(self, client):
        self.r = client
        self._complete_chunk = client.register_script(scripts.source("complete_chunk"))
        self._finish_listing = client.register_script(scripts.source("finish_listing"))
        self._start_chunk = client.register_script(scripts.source("start_chunk"))
        self._end_job = client.register_script(scripts.source("end_job"))
        self._add_chunk = client.register_script(scripts.source("add_chunk"))

    # --- producer -------------------------------------------------------------------
    def check_new(self, job_id: str) -> None:
        if self.r.exists(keys.job(job_id)):
            raise self._exists(job_id)

    @staticmethod
    def _exists(job_id: str) -> ConfigError:
        return ConfigError(f"job {job_id!r} already exists: pick another --job-id "
                           f"(or look at it with: bulklabel status {job_id})")

    def create(self, job_id: str, dest: str, queue: str, sources: list[str], **extra: str) -> None:
        """Record a new job (``extra``: more fields of its hash, e.g. ``diffed_model``)."""
        now = repr(time.time())
        key = keys.job(job_id)
        if not self.r.hsetnx(key, "job_id", job_id):
            raise self._exists(job_id)
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={
            "state": "queued", "dest": dest, "queue": queue, "submitted_at": now, "progress_at": now,
            "listing": "1", "total": 0, "done": 0, "errors": 0,
            "chunks_enqueued": 0, "chunks_total": 0, "chunks_done": 0,
            "sources": " ".join(sources)[:2000], **extra,
        })
        pipe.expire(key, MAX_AGE_SECONDS)  # a job nobody ends still goes away
        pipe.set(keys.lister(job_id), "1", ex=LISTER_SECONDS)
        pipe.zadd(keys.JOBS, {job_id: float(now)})
        pipe.zremrangebyscore(keys.JOBS, "-inf", float(now) - MAX_AGE_SECONDS)  # forget expired jobs
        pipe.execute()

    def set_skipped(self, job_id: str, skipped: int) -> None:
        """How many listed sources an incremental job skipped so far (already labeled)."""
        self.r.hset(keys.job(job_id), "skipped", skipped)

    def add_chunk(self, job_id: str, chunk: int, images: int) -> str:
        """Count chunk ``chunk`` (numbered from 0) about to be enqueued, once however often
        this is called; returns the job's state (a ``failed`` or ``cancelled`` job counts
        nothing more: the producer stops listing it)."""
        state = self._add_chunk(keys=[keys.job(job_id)], args=[chunk, images, repr(time.time())])
        if not state:
            raise JobNotFound(f"job {job_id!r} is not known to Redis (expired or deleted)")
        return state

    def listing_heartbeat(self, job_id: str, block_signals: tuple[int, ...] = ()) -> KeyHeartbeat:
        """Keeps the job's ``lister`` key alive while a submit lists it (start it, stop it):
        a submit killed outright lets it expire, and ``get`` shows the job stalled."""
        return KeyHeartbeat(self.r, keys.lister(job_id), "1", every=LISTER_SECONDS / 3, ttl=LISTER_SECONDS,
                            name="bulklabel-listing", block_signals=block_signals)

    def finish_listing(self, job_id: str) -> bool:
        """Mark the listing complete; True if that completed the job (its keys then expire)."""
        completed = bool(self._finish_listing(keys=[keys.job(job_id)], args=[repr(time.time())]))
        if completed:
            self._expire(job_id)
        return completed

    # --- anyone that ends a job -----------------------------------------------------
    def fail(self, job_id: str, reason: str) -> str:
        """Mark the job failed with ``reason`` unless it has ended already; returns the state
        it had (``JobNotFound`` if none). Workers drop the chunks of a failed job."""
        return self._end(job_id, "failed", reason)

    def cancel(self, job_id: str, reason: str = "cancelled") -> str:
        """Mark the job cancelled unless it has ended already; returns the state it had."""
        return self._end(job_id, "cancelled", reason)

    def _end(self, job_id: str, state: str, reason: str) -> str:
        before = self._end_job(keys=[keys.job(job_id)], args=[state, reason[:2000], repr(time.time())])
        if not before:
            raise JobNotFound(f"no job {job_id!r} in Redis (expired or deleted)")
        if before not in ENDED:
            self._expire(job_id)
        return before

    # --- worker ---------------------------------------------------------------------
    def start_chunk(self, job_id: str, chunk: int, worker: str) -> Delivery:
        """Record a delivery (unless the job failed or was cancelled: then nothing changes)."""
        n, seen, state = self._start_chunk(
            keys=[keys.job(job_id), keys.deliveries(job_id), keys.chunks_done(job_id), keys.workers(job_id)],
            args=[chunk, worker, repr(time.time())])
        if n == -1:
            raise JobNotFound(f"job {job_id!r} is not known to Redis (expired or deleted)")
        return Delivery(int(n), bool(seen), state)

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

    def dead_letter(self, queue: str, raw: bytes | str, reason: str, worker: str) -> int:
        """Keep a message no worker can use on ``bulklabel:dead:<queue>`` (newest first,
        the last 10,000 kept) with why; returns how many the list holds."""
        entry = json.dumps({"at": time.time(), "worker": worker, "reason": reason[:2000],
                            "size": len(raw), "message": raw if isinstance(raw, str) else
                            raw.decode("utf-8", "backslashreplace")})
        pipe = self.r.pipeline()
        pipe.lpush(keys.dead_letter(queue), entry)
        pipe.ltrim(keys.dead_letter(queue), 0, DEAD_LETTER_KEEP - 1)
        pipe.llen(keys.dead_letter(queue))
        return pipe.execute()[-1]

    # --- everyone -------------------------------------------------------------------
    def live_workers(self, queue: str) -> list[dict[str, Any]]:
        """Heartbeats of the workers serving ``queue`` now."""
        found = []
        for key in self.r.scan_iter(keys.WORKER_PATTERN, count=200):
            raw = self.r.get(key)
            if raw:
                info = json.loads(raw)
                if info.get("queue") == queue:
                    found.append(info)
        return found

    def get(self, job_id: str, stall_after: float | None = None) -> dict[str, Any]:
        """The job's view. With ``stall_after`` (seconds, the visibility timeout), a queued or
        running job with no progress for that long and no live worker on its queue is shown
        ``stalled`` (its stored state stays; a worker that comes back resumes it)."""
        pipe = self.r.pipeline()
        pipe.hgetall(keys.job(job_id))
        pipe.smembers(keys.models(job_id))
        pipe.smembers(keys.workers(job_id))
        raw, models, workers = pipe.execute()
        if not raw:
            raise JobNotFound(f"no job {job_id!r} in Redis (check the id, and that "
                              "BULKLABEL_REDIS_URL points at the Redis it was submitted to)")
        job = job_view(raw, models, workers)
        if (stall_after is not None and job["state"] in ("queued", "running") and not job["listing_complete"]
                and not self.r.exists(keys.lister(job_id))):
            job["stalled"] = True
            job["state"] = "stalled"
            job["error"] = (f"its listing stopped after {job['chunks_enqueued']} chunks: the submit listing it "
                            f"is gone (killed?). Cancel it (bulklabel cancel {job_id}) and submit again")
        elif stall_after is not None and job["state"] in ("queued", "running"):
            idle = time.time() - (job["progress_at"] or job["submitted_at"] or time.time())
            if idle > stall_after and not self.live_workers(job["queue"]):
                job["stalled"] = True
                job["state"] = "stalled"
                job["error"] = job["error"] or (
                    f"no progress for {idle:.0f} s and no live worker serves queue {job['queue']!r}: "
                    f"start one (bulklabel worker --queue {job['queue']} --model MODEL), or cancel the job")
        return job

    def _expire(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        for key in (keys.job(job_id), keys.chunks_done(job_id), keys.deliveries(job_id),
                    keys.models(job_id), keys.workers(job_id)):
            pipe.expire(key, KEEP_SECONDS)
        pipe.execute()
