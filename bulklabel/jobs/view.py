"""Reading a job: a typed view of its hash, and the ``_SUCCESS`` summary."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import JobStore


def job_view(raw: dict[str, str], models=(), workers=()) -> dict[str, Any]:
    """Typed view of a job hash, with derived rate and ETA."""
    def num(name, kind=int):
        value = raw.get(name)
        return kind(value) if value not in (None, "") else None

    job: dict[str, Any] = {
        "job_id": raw.get("job_id"), "state": raw.get("state"),
        "total": num("total"), "done": num("done"), "errors": num("errors"), "skipped": num("skipped") or 0,
        "incremental": raw.get("diffed_model") is not None, "diffed_model": raw.get("diffed_model") or None,
        "listing_complete": raw.get("listing") == "0",
        "chunks_total": num("chunks_total") if raw.get("listing") == "0" else None,
        "chunks_enqueued": num("chunks_enqueued"), "chunks_done": num("chunks_done"),
        "dest": raw.get("dest"), "queue": raw.get("queue"),
        "submitted_at": num("submitted_at", float), "started_at": num("started_at", float),
        "finished_at": num("finished_at", float), "progress_at": num("progress_at", float),
        "models": sorted(models), "workers": sorted(workers), "error": raw.get("error"),
        "stalled": False,
    }
    started, finished = job["started_at"], job["finished_at"]
    elapsed = ((finished or time.time()) - started) if started else 0.0
    job["seconds"] = round(elapsed, 3)
    job["images_per_second"] = round(job["done"] / elapsed, 2) if elapsed > 0 and job["done"] else 0.0
    remaining = (job["total"] or 0) - (job["done"] or 0)
    rate = job["images_per_second"]
    running = job["state"] == "running" and job["listing_complete"]
    job["eta_seconds"] = round(remaining / rate, 1) if rate and running else None
    return job


def success_summary(job: dict[str, Any]) -> dict[str, Any]:
    """What ``DEST/<job_id>/_SUCCESS`` holds."""
    fields = ("job_id", "state", "total", "done", "errors", "skipped", "chunks_total", "models", "workers",
              "queue", "submitted_at", "started_at", "finished_at", "seconds", "images_per_second")
    return {k: job.get(k) for k in fields}


def write_success(jobs: JobStore, storage, job_id: str) -> dict[str, Any]:
    """Write ``<job_id>/_SUCCESS`` (the job's summary) to the job's destination storage."""
    from ..chunks import success_key  # the contract module imports this package: import late

    summary = success_summary(jobs.get(job_id))
    storage.write(success_key(job_id), (json.dumps(summary, indent=2) + "\n").encode())
    return summary
