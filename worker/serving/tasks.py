"""The Celery task: label one chunk of image locations and write its shard.

The message is a ``bulklabel.chunks.ChunkMessage`` (validated, versioned; an invalid one is
moved to the dead-letter list). Per delivery of chunk ``c`` of job ``j``:

1. refuse a destination outside ``--allow-dest`` (the job fails, nothing is written);
2. record the delivery in Redis (``start_chunk``). A chunk of a failed or cancelled job is
   dropped; a chunk already counted is a duplicate delivery and is dropped (after writing
   a ``_SUCCESS`` that an earlier delivery could not); a chunk delivered more than
   ``BULKLABEL_MAX_DELIVERIES`` times has killed its workers (a poison input) and gets
   error records instead of another try;
3. run the engine over the chunk (every image ends with one record);
4. write ``DEST/j/part-<c>.jsonl`` atomically (a re-run replaces it);
5. count the chunk once (``complete_chunk``) and, if that finished the job, add its labels
   to the index of incremental jobs (``DEST/_index/``) and write ``DEST/j/_SUCCESS``.

Every failure ends somewhere: storage or Redis errors in 4-5 are retried with backoff inside
the task (``retry_for``), then the chunk is delivered again later (``RetryLater``: Celery
republishes it, the delivery counter grows). On the last allowed delivery an engine
failure gives the chunk error records, and a chunk that still cannot be saved fails the
job with the reason (``status`` shows it). Nothing is acknowledged unaccounted for.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bulklabel import logs, records
from bulklabel.chunks import TASK_NAME, ChunkMessage, MessageError, success_key
from bulklabel.completion import finish_job
from bulklabel.jobs import JobNotFound, JobStore
from bulklabel.sinks import jsonl_bytes
from bulklabel.storage import Storage, open_storage

from ..inference.engine import Engine
from . import guard
from .metrics import WorkerMetrics

log = logging.getLogger("bulklabel.worker")

# Errors that retrying on this worker cannot fix (another worker, or a later delivery, may).
PERMANENT_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                              errno.EROFS, errno.ENAMETOOLONG, errno.EINVAL})
PERMANENT_S3_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "NoSuchBucket", "InvalidBucketName"})


def retry_times(visibility_timeout: float) -> dict[str, float]:
    """How long a task keeps retrying storage/Redis, and the pause before a redelivery: both
    well inside the visibility timeout (a task still running after it is delivered twice)."""
    return {"retry_for": min(120.0, max(2.0, visibility_timeout / 4)),
            "retry_pause": min(30.0, max(1.0, visibility_timeout / 10))}


class RetryLater(Exception):
    """Deliver this chunk again after ``countdown`` seconds (it is not counted yet)."""

    def __init__(self, reason: str, countdown: float):
        super().__init__(reason)
        self.countdown = countdown


@dataclass
class WorkerContext:
    """What a worker process builds once and every task uses."""

    engine: Engine
    jobs: JobStore
    name: str
    max_deliveries: int
    queue: str = "bulklabel"
    allow_dest: tuple[str, ...] = ()  # destinations a chunk may write under (none: any)
    retry_for: float = 120.0          # seconds to keep retrying storage/Redis within one delivery
    retry_pause: float = 10.0         # seconds before the n-th redelivery: n * retry_pause
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    _storages: dict[str, Storage] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.engine.model.model_id

    def storage(self, dest: str) -> Storage:
        if dest not in self._storages:
            self._storages[dest] = open_storage(dest)
        return self._storages[dest]


def register(app, ctx: WorkerContext):
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def classify_chunk(self, **fields) -> None:
        t = time.perf_counter()
        try:
            message = ChunkMessage.from_json(fields)
        except MessageError as exc:
            log.error("dropping a task message (job %r, chunk %r): %s",
                      fields.get("job_id"), fields.get("chunk"), exc)
            guard.keep(ctx.queue, json.dumps(fields, default=repr).encode("utf-8", "backslashreplace"),
                       f"invalid chunk message: {exc}")
            ctx.metrics.chunk_done("invalid", time.perf_counter() - t)
            return
        outcome = "failed"  # unless process_chunk answers: something unforeseen escaped it
        # Every line logged while this chunk is handled names it (--log-format json).
        with logs.context(job_id=message.job_id, chunk=message.chunk, worker=ctx.name):
            try:
                outcome = process_chunk(ctx, message)
            except RetryLater as exc:
                outcome = "retry"
                log.warning("job %s chunk %s: %s; delivering it again in %.0f s", message.job_id, message.chunk,
                            exc, exc.countdown)
                raise self.retry(countdown=exc.countdown, max_retries=None) from None
            finally:
                ctx.metrics.chunk_done(outcome, time.perf_counter() - t)

    return classify_chunk


def process_chunk(ctx: WorkerContext, message: ChunkMessage) -> str:
    """Returns what happened: 'labeled', 'errors' (the engine failed on every delivery: error
    records), 'abandoned', 'duplicate', 'dropped', 'refused' or 'failed' (the job). Raises
    ``RetryLater`` when a later delivery may succeed."""
    job_id, chunk = message.job_id, message.chunk
    refusal = guard.destination_refusal(message.dest, ctx.allow_dest)
    if refusal:
        log.error("job %s chunk %s refused: %s", job_id, chunk, refusal)
        _fail_job(ctx, job_id, f"a worker refused its destination: {refusal}")
        return "refused"
    try:
        delivery = ctx.jobs.start_chunk(job_id, chunk, ctx.name)
    except JobNotFound as exc:
        log.warning("dropping chunk %s: %s", chunk, exc)
        return "dropped"
    if delivery.state in ("failed", "cancelled"):
        log.info("job %s is %s: dropping its chunk %s", job_id, delivery.state, chunk)
        return "dropped"
    storage = ctx.storage(message.dest)
    last = delivery.number >= ctx.max_deliveries
    if delivery.counted:
        log.info("job %s chunk %s was already labeled; dropping this duplicate delivery", job_id, chunk)
        if delivery.state == "done":
            _ensure_success(ctx, storage, job_id, delivery.number, last)
        return "duplicate"

    t = time.perf_counter()
    if delivery.number > ctx.max_deliveries:
        reason = (f"chunk abandoned after {delivery.number - 1} deliveries: the workers labeling it died "
                  "(an input may crash the decoder or exhaust memory)")
        log.error("job %s chunk %s: %s", job_id, chunk, reason)
        shard, images, errors = _failure_shard(ctx, message, reason)
        outcome = "abandoned"
    else:
        try:
            shard, images, errors = _label(ctx, message)
            outcome = "labeled"
        except Exception as exc:
            what = f"labeling failed ({type(exc).__name__}: {exc})"
            log.exception("job %s chunk %s: %s", job_id, chunk, what)
            if not last:
                raise RetryLater(what, ctx.retry_pause * delivery.number) from exc
            shard, images, errors = _failure_shard(
                ctx, message, f"{what} on each of {delivery.number} deliveries of its chunk")
            outcome = "errors"

    try:
        _retrying(lambda: storage.write(message.shard_key, shard),
                  f"writing {storage.url(message.shard_key)}", ctx.retry_for)
        _, completed = _retrying(lambda: ctx.jobs.complete_chunk(job_id, chunk, images, errors, ctx.model_id),
                                 "recording progress in Redis", ctx.retry_for)
    except JobNotFound as exc:
        log.warning("dropping chunk %s: %s", chunk, exc)
        return "dropped"
    except Exception as exc:
        what = f"saving chunk {chunk} failed ({type(exc).__name__}: {exc})"
        if not last:
            raise RetryLater(what, ctx.retry_pause * delivery.number) from exc
        _fail_job(ctx, job_id, f"{what} on each of {delivery.number} deliveries")
        return "failed"
    ctx.metrics.images_written(images, errors)
    log.info("job %s chunk %s: %d images, %d errors, %.1f s", job_id, chunk, images, errors,
             time.perf_counter() - t)
    if completed:
        _ensure_success(ctx, storage, job_id, delivery.number, last, check_first=False)
    return outcome


def _label(ctx: WorkerContext, message: ChunkMessage) -> tuple[bytes, int, int]:
    out: list[dict] = []
    stats = ctx.engine.run(message.sources, out.extend)
    if stats is not None:  # an engine stand-in may give no stats
        ctx.metrics.stages(stats.stages)
    if len(out) != len(message.sources):
        raise RuntimeError(f"the engine returned {len(out)} records for {len(message.sources)} images")
    return _shard(out, message), len(out), sum(1 for r in out if r["error"])


def _failure_shard(ctx: WorkerContext, message: ChunkMessage, reason: str) -> tuple[bytes, int, int]:
    out = [records.failure(s, ctx.model_id, reason) for s in message.sources]
    return _shard(out, message), len(out), len(out)


def _shard(out: list[dict], message: ChunkMessage) -> bytes:
    """The shard's bytes; each record carries its source's fingerprint when the message has
    them (the label index of incremental jobs is built from these)."""
    if message.fingerprints is not None:
        prints = dict(zip(message.sources, message.fingerprints))
        for record in out:
            record["fingerprint"] = prints.get(record["source"])
    return jsonl_bytes(out)


def _ensure_success(ctx: WorkerContext, storage: Storage, job_id: str, number: int, last: bool,
                    check_first: bool = True) -> None:
    """Write the done job's ``_SUCCESS`` (with ``check_first``: only if an earlier delivery
    could not)."""
    try:
        if check_first and storage.exists(success_key(job_id)):
            return
        summary = _retrying(lambda: finish_job(ctx.jobs, storage, job_id), "writing _SUCCESS", ctx.retry_for)
    except JobNotFound:
        return
    except Exception as exc:
        what = f"job {job_id} is done but its _SUCCESS could not be written ({type(exc).__name__}: {exc})"
        if not last:
            raise RetryLater(what, ctx.retry_pause * number) from exc
        log.error("%s; every shard is in place", what)
        return
    log.info("job %s done: %s images, %s errors", job_id, summary["done"], summary["errors"])


def _fail_job(ctx: WorkerContext, job_id: str, reason: str) -> None:
    try:
        before = _retrying(lambda: ctx.jobs.fail(job_id, reason), "marking the job failed", ctx.retry_for)
    except JobNotFound:
        return
    if before not in ("done", "failed", "cancelled"):
        log.error("job %s failed: %s", job_id, reason)


def _permanent(exc: Exception) -> bool:
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
        return True
    code = getattr(exc, "response", None)
    return isinstance(code, dict) and code.get("Error", {}).get("Code") in PERMANENT_S3_CODES


def _retrying(action: Callable[[], Any], what: str, patience: float) -> Any:
    """``action()``, retried with backoff for up to ``patience`` seconds (not for errors that
    retrying cannot fix); the last try happens at the deadline."""
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            return action()
        except JobNotFound:
            raise
        except Exception as exc:
            left = deadline - time.monotonic()
            if left <= 0 or _permanent(exc):
                raise
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, min(delay, left))
            time.sleep(min(delay, left))
            delay = min(delay * 2, 15.0)
