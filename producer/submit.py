"""``bulklabel submit``: list sources lazily and enqueue chunks of image locations.

Memory holds one chunk at a time whatever the size of the listing. The job's totals grow
as chunks are enqueued; the job can complete only once the listing is marked complete.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from bulklabel.chunks import TASK_NAME, ChunkMessage, manifest_key
from bulklabel.completion import finish_job
from bulklabel.errors import BulkLabelError, ConfigError
from bulklabel.index import INDEX_DIR
from bulklabel.jobs import check_job_id, new_job_id, open_store
from bulklabel.queue import chunk_repr, make_app
from bulklabel.settings import DEFAULT_CHUNK_SIZE, DEFAULT_QUEUE, visibility_timeout
from bulklabel.sources import check_sources, iter_entries
from bulklabel.storage import open_storage, s3_lister

from . import incremental


@dataclass
class Submission:
    sources: list[str]
    dest: str
    redis_url: str
    queue: str = DEFAULT_QUEUE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    job_id: str | None = None
    replace: bool = False
    incremental: bool = False   # skip sources already labeled into dest by the same model (DEST/_index/)
    model_id: str | None = None  # the model to diff against (default: live workers, else DEST's newest index)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
LISTING_PATIENCE = 60.0  # seconds the listing waits for Redis to come back before failing the job
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}  # ~1 min

def chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def normalise_dest(dest: str) -> str:
    if dest.startswith("s3://"):
        return dest.rstrip("/")
    if "://" in dest:
        raise ConfigError(f"--out must be a local folder or s3://bucket/prefix. Received: {dest!r}")
    return os.path.abspath(os.path.expanduser(dest))


def check_dest(dest: str) -> None:
    """Fail fast on a destination the workers could not write to."""
    if dest.startswith("s3://"):
        from bulklabel.storage.s3 import client, parse_uri

        bucket, _ = parse_uri(dest)
        try:
            client().head_bucket(Bucket=bucket)
        except Exception as exc:
            raise ConfigError(f"cannot use {dest}: bucket {bucket!r} is missing or not accessible "
                              f"({type(exc).__name__}). Create it or fix the AWS_* settings") from None
    else:
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out folder {dest!r}: {exc.strerror or exc}") from None
        if not os.access(dest, os.W_OK):
            raise ConfigError(f"--out folder {dest!r} is not writable")


def check_fresh_dest(storage, job_id: str, replace: bool) -> None:
    """Refuse to start a job over another job's shards: ``DEST/<job_id>/`` must be empty,
    or ``--replace`` clears it first (a job id reused after its Redis record expired would
    otherwise merge stale records into the new results)."""
    prefix = f"{job_id}/"
    found = list(islice(storage.list(prefix), 1))
    if not found:
        return
    if not replace:
        raise ConfigError(f"{storage.url(job_id)}/ already holds results ({found[0]} ...) of an earlier job "
                          f"named {job_id!r}: pick another --job-id, or give --replace to delete them first")
    removed = storage.delete_prefix(prefix)
    print(f"bulklabel: --replace: removed {removed} files under {storage.url(job_id)}/", file=sys.stderr)
    # the label index may hold that job's labels: it is derived data, rebuilt from the shards left
    dropped = storage.delete_prefix(f"{INDEX_DIR}/")
    if dropped:
        print(f"bulklabel: --replace: removed the label index ({dropped} files); the next --incremental "
              "submit rebuilds it from the results", file=sys.stderr)


def write_manifest(storage, job_id: str, sub: Submission, plan) -> None:
    """``DEST/<job_id>/_JOB``: what the job was asked to do, readable without Redis (``snapshot``
    orders jobs by its ``submitted_at``)."""
    manifest = {"job_id": job_id, "submitted_at": time.time(), "sources": sub.sources, "queue": sub.queue,
                "incremental": sub.incremental, "diffed_model": plan.model_id if plan else None}
    storage.write(manifest_key(job_id), (json.dumps(manifest, indent=2) + "\n").encode())


class Interrupted(BulkLabelError):
    """A signal ended the listing (a cron or systemd timeout, a Ctrl-C)."""

    def __init__(self, signum: int):
        self.signame = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.signame}")


_deferral = {"active": False, "pending": None}  # the main thread's: see signals_deferred


def _stop(signum: int):
    """The exception a stop signal becomes: ``KeyboardInterrupt`` for SIGINT, else ``Interrupted``."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def _on_stop_signal(signum, frame):
    if _deferral["active"]:
        if _deferral["pending"] is None:
            _deferral["pending"] = signum  # raised when the deferred block ends
        return
    raise _stop(signum)


@contextmanager
def _signals(handler, *signums: int):
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def signals_raise(*signums: int):
    """Turn ``signums`` into exceptions while the block runs (``Interrupted``; SIGINT stays
    ``KeyboardInterrupt``), so the job can be marked failed on the way out; inside it,
    ``signals_deferred`` holds them back."""
    return _signals(_on_stop_signal, *signums)


def signals_ignored(*signums: int):
    return _signals(signal.SIG_IGN, *signums)


@contextmanager
def signals_deferred():
    """Inside ``signals_raise``: a stop signal that comes while the block runs is raised
    when it ends. Python runs signal handlers in the main thread whichever thread the
    kernel picked (a library's thread may not block them, so ``pthread_sigmask`` is not
    enough); the one handler only takes note while this is active, nothing is swapped."""
    _deferral["active"], _deferral["pending"] = True, None
    try:
        yield
    finally:
        _deferral["active"] = False
        pending, _deferral["pending"] = _deferral["pending"], None
        if pending is not None:
            raise _stop(pending)


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by SIGINT"
    if type(exc).__module__.startswith("redis"):
        return f"lost Redis ({type(exc).__name__}: {exc})"
    return str(exc) or type(exc).__name__


def _record_failure(jobs, job_id: str, reason: str) -> None:
    """Mark the job failed; the client rides out a Redis outage for a while. If Redis never
    answers, say so: ``status`` will show the job stalled, and its keys expire regardless."""
    try:
        jobs.fail(job_id, reason)
    except Exception as exc:  # Redis gone for good: nothing left to record into
        print(f"bulklabel: could not mark job {job_id} failed in Redis ({type(exc).__name__}: {exc}); "
              "its workers will finish the chunks already queued", file=sys.stderr)


def submit(sub: Submission) -> str:
    """Enqueue the job; returns its id. Everything checkable is checked before enqueueing.

    Whatever stops the listing early (a signal, Redis or the broker going away, a source
    that cannot be listed) marks the job ``failed`` with ``listing interrupted after N
    chunks``; workers then drop its queued chunks. A job cancelled while being listed stops
    the listing."""
    check_sources(sub.sources)
    if sub.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1. Received: {sub.chunk_size}")
    job_id = check_job_id(sub.job_id) if sub.job_id else new_job_id()
    dest = normalise_dest(sub.dest)
    check_dest(dest)
    storage = open_storage(dest)
    jobs = open_store(sub.redis_url, keep_trying=LISTING_PATIENCE)
    if sub.job_id:
        jobs.check_new(job_id)  # before --replace deletes anything
        check_fresh_dest(storage, job_id, sub.replace)
    plan = incremental.prepare(jobs, storage, sub.queue, sub.model_id) if sub.incremental else None
    jobs.create(job_id, dest, sub.queue, sub.sources,
                **({"diffed_model": plan.model_id or ""} if plan else {}))
    if not jobs.live_workers(sub.queue):
        print(f"bulklabel: note: no worker is listening on queue {sub.queue!r} yet; the job will "
              "wait for one (start it with: bulklabel worker --model MODEL)", file=sys.stderr)

    app = make_app(sub.redis_url, visibility_timeout())
    images = chunks = 0
    ended = None
    # stop signals go to the main thread only, where the listing defers them around a send
    beat = jobs.listing_heartbeat(job_id, block_signals=STOP_SIGNALS)
    beat.start()
    try:
        with signals_raise(*STOP_SIGNALS), app.producer_or_acquire() as producer:
            write_manifest(storage, job_id, sub, plan)
            entries = iter_entries(sub.sources, s3_lister(with_fingerprints=True))
            if plan:
                entries = plan.skipper.filter(entries)
            for number, chunk in enumerate(chunked(entries, sub.chunk_size)):
                state = jobs.add_chunk(job_id, number, len(chunk))
                if state in ("failed", "cancelled"):
                    ended = state
                    break
                message = ChunkMessage(job_id, number, tuple(s for s, _ in chunk), dest,
                                       fingerprints=tuple(f for _, f in chunk))
                with signals_deferred():  # what was sent and what is counted agree
                    fields = message.to_json()  # events and Flower show chunk_repr: no image path
                    app.send_task(TASK_NAME, kwargs=fields, argsrepr="()", kwargsrepr=chunk_repr(fields),
                                  queue=sub.queue, producer=producer, retry=True, retry_policy=PUBLISH_RETRY)
                    images, chunks = images + len(chunk), chunks + 1
                if plan:
                    jobs.set_skipped(job_id, plan.skipper.skipped)
            if plan:
                jobs.set_skipped(job_id, plan.skipper.skipped)  # final, before the job can complete
    except BaseException as exc:
        with signals_ignored(*STOP_SIGNALS):  # a second signal must not skip this
            _record_failure(jobs, job_id, f"listing interrupted after {chunks} chunks ({images} images): "
                                          f"{_why(exc)}")
            beat.stop()
        raise
    if ended:
        beat.stop()
        raise BulkLabelError(f"job {job_id} was {ended} while being listed: stopped after {chunks} chunks "
                             f"({images} images) (see: bulklabel status {job_id})")
    try:
        if jobs.finish_listing(job_id):  # every chunk already done (or nothing to label)
            finish_job(jobs, storage, job_id)
    finally:
        beat.stop()
    skipped = f" ({plan.skipper.skipped} already labeled, skipped)" if plan else ""
    print(f"bulklabel: job {job_id}: {images} images in {chunks} chunks queued on {sub.queue!r}{skipped}; "
          f"results in {dest}/{job_id}/", file=sys.stderr)
    return job_id
