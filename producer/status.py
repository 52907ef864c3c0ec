"""``bulklabel status`` and ``submit --wait``: job progress read from Redis.

Both ride out a Redis restart: while Redis is unreachable they say so and keep trying.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bulklabel.jobs import JobStore, connect, open_store
from bulklabel.progress import ProgressBar, format_duration
from bulklabel.settings import redact_url, visibility_timeout

FINAL_STATES = ("done", "failed", "cancelled")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def render(job: dict[str, Any]) -> str:
    total = job["total"] if job["listing_complete"] else f"{job['total']}+ (still listing)"
    pct = f" ({job['done'] / job['total']:.0%})" if job["total"] else ""
    chunks = job["chunks_total"] if job["chunks_total"] is not None else f"{job['chunks_enqueued']}+"
    lines = [
        f"job {job['job_id']}: {job['state']}",
        f"  images   {job['done']}/{total} done{pct}, {job['errors']} errors"
        + (f", {job['skipped']} skipped (already labeled: --incremental against {job['diffed_model']})"
           if job.get("incremental") else ""),
        f"  chunks   {job['chunks_done']}/{chunks}",
        f"  speed    {job['images_per_second']} images/s over {format_duration(job['seconds'])}"
        + (f", ETA {format_duration(job['eta_seconds'])}" if job["eta_seconds"] is not None else ""),
        f"  models   {', '.join(job['models']) or '-'}",
        f"  workers  {', '.join(job['workers']) or '-'}",
        f"  queue    {job['queue']}    results  {job['dest']}/{job['job_id']}/",
        f"  times    submitted {_when(job['submitted_at'])}, started {_when(job['started_at'])}, "
        f"finished {_when(job['finished_at'])}",
    ]
    if job.get("error"):
        lines.append(f"  {'error ' if job['state'] == 'failed' else 'reason'}   {job['error']}")
    return "\n".join(lines)


def poll(store_factory: Callable[[], JobStore], job_id: str, url: str,
         on_update: Callable[[dict], None], interval: float = 0.5) -> dict[str, Any]:
    """Call ``on_update`` with the job until it ends; waits out Redis outages."""
    import redis

    store = store_factory()
    warned = False
    stall_after = visibility_timeout()
    while True:
        try:
            job = store.get(job_id, stall_after=stall_after)
        except redis.RedisError as exc:
            if not warned:
                print(f"\nbulklabel: lost Redis at {redact_url(url)} ({type(exc).__name__}); "
                      "waiting for it to come back...", file=sys.stderr)
                warned = True
            time.sleep(2)
            store = store_factory()
            continue
        if warned:
            print("bulklabel: Redis is back", file=sys.stderr)
            warned = False
        on_update(job)
        if job["state"] in FINAL_STATES:
            return job
        time.sleep(interval)


def wait(url: str, job_id: str, progress: bool | None = None) -> dict[str, Any]:
    """The ``--wait`` display: a progress bar (done/total, errors, images/s, ETA) until the end."""
    bar = ProgressBar(enabled=progress)

    stalled = [False]

    def update(job: dict) -> None:
        if job["listing_complete"]:
            bar.set_total(job["total"])
        bar.update(job["done"], job["errors"])
        if job["stalled"] != stalled[0]:
            stalled[0] = job["stalled"]
            print(f"\nbulklabel: job {job_id} is stalled: {job['error']}" if job["stalled"]
                  else f"\nbulklabel: job {job_id} is moving again", file=sys.stderr)

    job = poll(lambda: JobStore(connect(url, patience=10)), job_id, url, update)
    bar.close(job["done"], job["errors"])
    return job


def status(url: str, job_id: str, as_json: bool = False, watch: bool = False) -> dict[str, Any]:
    store = open_store(url)
    if not watch:
        job = store.get(job_id, stall_after=visibility_timeout())
        print(json.dumps(job) if as_json else render(job))
        return job
    tty = sys.stdout.isatty() and not as_json
    last: list[str] = []

    def update(job: dict) -> None:
        text = json.dumps(job) if as_json else render(job)
        if tty:
            if last:
                sys.stdout.write(f"\x1b[{last[0].count(chr(10)) + 1}F\x1b[J")
            print(text, flush=True)
            last[:] = [text]
        elif not last or text != last[0]:
            print(text, flush=True)
            last[:] = [text]

    return poll(lambda: JobStore(connect(url, patience=10)), job_id, url, update, interval=1.0)


def cancel(url: str, job_id: str, reason: str) -> int:
    """``bulklabel cancel``: returns the exit status (see its --help)."""
    store = open_store(url)
    before = store.cancel(job_id, reason)
    if before in ("done", "failed"):
        print(f"bulklabel: job {job_id} had already ended ({before}); nothing to cancel", file=sys.stderr)
        return 1
    if before == "cancelled":
        print(f"bulklabel: job {job_id} was already cancelled", file=sys.stderr)
        return 0
    job = store.get(job_id)
    print(f"bulklabel: job {job_id} cancelled ({job['chunks_done']} chunks, {job['done']} images labeled "
          f"so far); workers drop its remaining chunks", file=sys.stderr)
    return 0
