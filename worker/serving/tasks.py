"""The Celery task: label one chunk of image locations and write its shard.

The message is a ``bulklabel.chunks.ChunkMessage`` (validated, versioned). Per delivery of
chunk ``c`` of job ``j``:

1. record the delivery in Redis (``start_chunk``); a chunk already counted is a duplicate
   delivery and is dropped; a chunk delivered more than ``BULKLABEL_MAX_DELIVERIES`` times
   has killed its workers (a poison input) and gets error records instead of another try;
2. run the engine over the chunk (every image ends with one record);
3. write ``DEST/j/part-<c>.jsonl`` atomically (a re-run replaces it);
4. count the chunk once (``complete_chunk``) and, if that finished the job, write
   ``DEST/j/_SUCCESS``.

Steps 3-4 retry with backoff when storage or Redis is unreachable, inside the task: a
late-acked task that raises is acknowledged and its chunk would be lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bulklabel import records
from bulklabel.chunks import TASK_NAME, ChunkMessage, MessageError
from bulklabel.jobs import JobNotFound, JobStore, write_success
from bulklabel.sinks import jsonl_bytes
from bulklabel.storage import Storage, open_storage

from ..inference.engine import Engine

log = logging.getLogger("bulklabel.worker")

@dataclass
class WorkerContext:
    """What a worker process builds once and every task uses."""

    engine: Engine
    jobs: JobStore
    name: str
    max_deliveries: int
    retry_for: float = 600.0        # seconds to keep retrying storage/Redis at the end of a chunk
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
        try:
            message = ChunkMessage.from_json(fields)
        except MessageError as exc:
            log.error("dropping a task message (job %r, chunk %r): %s",
                      fields.get("job_id"), fields.get("chunk"), exc)
            return
        process_chunk(ctx, message)

    return classify_chunk


def process_chunk(ctx: WorkerContext, message: ChunkMessage) -> str:
    """Returns what happened: 'labeled', 'abandoned', 'duplicate' or 'dropped'."""
    job_id, chunk, sources = message.job_id, message.chunk, message.sources
    try:
        deliveries, counted = ctx.jobs.start_chunk(job_id, chunk, ctx.name)
    except JobNotFound as exc:
        log.warning("dropping chunk %s: %s", chunk, exc)
        return "dropped"
    if counted:
        log.info("job %s chunk %s was already labeled; dropping this duplicate delivery", job_id, chunk)
        return "duplicate"

    t = time.perf_counter()
    if deliveries > ctx.max_deliveries:
        reason = (f"chunk abandoned after {deliveries - 1} deliveries: the workers labeling it died "
                  "(an input may crash the decoder or exhaust memory)")
        out = [records.failure(s, ctx.model_id, reason) for s in sources]
        outcome = "abandoned"
        log.error("job %s chunk %s: %s", job_id, chunk, reason)
    else:
        out = []
        ctx.engine.run(sources, out.extend)
        outcome = "labeled"
    errors = sum(1 for r in out if r["error"])
    storage = ctx.storage(message.dest)
    _retrying(lambda: storage.write(message.shard_key, jsonl_bytes(out)),
              f"writing {storage.url(message.shard_key)}", ctx.retry_for)
    _, completed = _retrying(
        lambda: ctx.jobs.complete_chunk(job_id, chunk, len(out), errors, ctx.model_id),
        "recording progress in Redis", ctx.retry_for)
    log.info("job %s chunk %s: %d images, %d errors, %.1f s", job_id, chunk, len(out), errors,
             time.perf_counter() - t)
    if completed:
        summary = _retrying(lambda: write_success(ctx.jobs, storage, job_id), "writing _SUCCESS", ctx.retry_for)
        log.info("job %s done: %s images, %s errors", job_id, summary["done"], summary["errors"])
    return outcome


def _retrying(action: Callable[[], Any], what: str, patience: float) -> Any:
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            return action()
        except JobNotFound:
            raise
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s: %s); retrying in %.0f s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 15.0)
