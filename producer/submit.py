"""``bulklabel submit``: list sources lazily and enqueue chunks of image locations.

Memory holds one chunk at a time whatever the size of the listing. The job's totals grow
as chunks are enqueued; the job can complete only once the listing is marked complete.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from bulklabel import keys
from bulklabel.chunks import TASK_NAME, ChunkMessage
from bulklabel.errors import ConfigError
from bulklabel.jobs import check_job_id, new_job_id, open_store, write_success
from bulklabel.queue import make_app
from bulklabel.settings import DEFAULT_CHUNK_SIZE, DEFAULT_QUEUE, visibility_timeout
from bulklabel.sources import check_sources, iter_sources
from bulklabel.storage import open_storage, s3_lister


@dataclass
class Submission:
    sources: list[str]
    dest: str
    redis_url: str
    queue: str = DEFAULT_QUEUE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    job_id: str | None = None


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


def live_workers(client, queue: str) -> list[dict]:
    import json

    found = []
    for key in client.scan_iter(keys.WORKER_PATTERN, count=200):
        raw = client.get(key)
        if raw:
            info = json.loads(raw)
            if info.get("queue") == queue:
                found.append(info)
    return found


def submit(sub: Submission) -> str:
    """Enqueue the job; returns its id. Everything checkable is checked before enqueueing."""
    check_sources(sub.sources)
    if sub.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1. Received: {sub.chunk_size}")
    job_id = check_job_id(sub.job_id) if sub.job_id else new_job_id()
    dest = normalise_dest(sub.dest)
    check_dest(dest)
    jobs = open_store(sub.redis_url)
    jobs.create(job_id, dest, sub.queue, sub.sources)
    if not live_workers(jobs.r, sub.queue):
        print(f"bulklabel: note: no worker is listening on queue {sub.queue!r} yet; the job will "
              "wait for one (start it with: bulklabel worker --model MODEL)", file=sys.stderr)

    app = make_app(sub.redis_url, visibility_timeout())
    images = chunks = 0
    try:
        with app.producer_or_acquire() as producer:
            for number, chunk in enumerate(chunked(iter_sources(sub.sources, s3_lister()), sub.chunk_size)):
                jobs.add_chunk(job_id, len(chunk))
                message = ChunkMessage(job_id, number, tuple(chunk), dest)
                app.send_task(TASK_NAME, kwargs=message.to_json(), queue=sub.queue, producer=producer)
                images, chunks = images + len(chunk), chunks + 1
    except BaseException as exc:
        jobs.fail(job_id, f"listing or enqueueing stopped after {images} images: {exc}")
        raise
    if jobs.finish_listing(job_id):  # every chunk already done (or an empty job)
        write_success(jobs, open_storage(dest), job_id)
    print(f"bulklabel: job {job_id}: {images} images in {chunks} chunks queued on {sub.queue!r}; "
          f"results in {dest}/{job_id}/", file=sys.stderr)
    return job_id
