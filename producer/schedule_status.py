"""``bulklabel status --schedule`` and ``bulklabel scheduler --list``: what a schedule did and will do."""

from __future__ import annotations

import json
import time
from typing import Any

from bulklabel.jobs import JobNotFound, open_store
from bulklabel.schedule import Schedule, history, slots
from bulklabel.schedule.lease import holder
from bulklabel.settings import visibility_timeout

BAD_STATES = ("failed", "cancelled", "stalled")


def upcoming(schedule: Schedule, now: float, count: int) -> str:
    """Each job's next ``count`` runs: local time, UTC, the job id each would get."""
    lines = []
    for job in schedule.jobs.values():
        flags = [f"queue {job.queue}", "incremental" if job.incremental else "full",
                 "catch-up" if job.catchup else "no catch-up"]
        lines.append(f"{job.name}: \"{job.cron}\" in {job.timezone} ({', '.join(flags)})")
        found = slots.next_slots(job.cron, job.tz, now, count)
        for when in found:
            local = f"{when:%Y-%m-%d %H:%M %Z}"
            lines.append(f"  {local:<26} {slots.to_datetime(when.timestamp()):%Y-%m-%d %H:%M} UTC   "
                         f"{job.job_id(when)}")
        if not found:
            lines.append("  (never)")
    return "\n".join(lines)


def _run_view(store, entry: dict[str, Any], stall_after: float) -> dict[str, Any]:
    view = {"slot": slots.iso_utc(entry["slot"]), "job_id": entry.get("job_id"), "outcome": entry["outcome"],
            "reason": entry.get("reason"), "at": entry.get("at"), "state": None, "done": None,
            "skipped": None, "errors": None, "error": None}
    if entry["outcome"] in ("fired", "duplicate") and entry.get("job_id"):
        try:
            job = store.get(entry["job_id"], stall_after=stall_after)
        except JobNotFound:
            view["state"] = "gone"
            view["error"] = "not in Redis: its submit failed before creating it, or it expired"
        else:
            view.update(state=job["state"], done=job["done"], skipped=job.get("skipped"), errors=job["errors"],
                        error=job.get("error"))
    return view


def collect(url: str, schedule: Schedule, limit: int, now: float | None = None) -> dict[str, Any]:
    store = open_store(url)
    stall_after = visibility_timeout()
    now = time.time() if now is None else now
    report: dict[str, Any] = {"schedule": schedule.path, "scheduler": holder(store.r), "jobs": []}
    for job in schedule.jobs.values():
        upcoming_slots = slots.next_slots(job.cron, job.tz, now, 1)
        last = history.last(store.r, job.name)
        report["jobs"].append({
            "name": job.name, "cron": job.cron, "timezone": job.timezone, "queue": job.queue,
            "next": slots.iso_utc(upcoming_slots[0].timestamp()) if upcoming_slots else None,
            "next_job_id": job.job_id(upcoming_slots[0]) if upcoming_slots else None,
            "last_slot": slots.iso_utc(last["slot"]) if last else None,
            "runs": [_run_view(store, e, stall_after) for e in history.runs(store.r, job.name, limit)],
        })
    return report


def _cell(value) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any], schedule: Schedule) -> str:
    info = report["scheduler"]
    if info:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        lines = [f"scheduler: held by {info['host']} pid {info['pid']} since {since} "
                 f"(its lease expires in {info['expires_in']:g} s unless renewed)"]
    else:
        lines = ["scheduler: no scheduler holds the lease (none running: start bulklabel scheduler --schedule "
                 f"{schedule.path})"]
    for job in report["jobs"]:
        tz = schedule.jobs[job["name"]].tz
        nxt = slots.local_text(_epoch(job["next"]), tz) if job["next"] else "never"
        lines += ["", f"{job['name']}: \"{job['cron']}\" in {job['timezone']}, queue {job['queue']}; "
                      f"next {nxt} ({job['next_job_id'] or '-'})"]
        if not job["runs"]:
            lines.append("  no runs recorded yet" + ("" if job["last_slot"] else " (no scheduler has run it)"))
            continue
        slot_texts = [slots.local_text(_epoch(run["slot"]), tz) for run in job["runs"]]
        sw = max(len(t) for t in slot_texts)
        jw = max(6, *(len(_cell(run["job_id"])) for run in job["runs"]))
        lines.append(f"  {'SLOT':<{sw}}  {'JOB ID':<{jw}}  {'OUTCOME':<9}  {'STATE':<9}  "
                     f"{'DONE':>7}  {'SKIPPED':>7}  {'ERRORS':>7}")
        for run, slot_text in zip(job["runs"], slot_texts):
            lines.append(f"  {slot_text:<{sw}}  {_cell(run['job_id']):<{jw}}  {run['outcome']:<9}  "
                         f"{_cell(run['state']):<9}  {_cell(run['done']):>7}  {_cell(run['skipped']):>7}  "
                         f"{_cell(run['errors']):>7}")
            note = run["reason"] if run["outcome"] != "fired" else None
            note = run["error"] or note
            if note:
                lines.append(f"    {note}")
    return "\n".join(lines)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def schedule_status(url: str, schedule: Schedule, as_json: bool = False, limit: int = 10) -> int:
    """Print the report; returns the exit status: 1 if a job's newest run failed, was
    cancelled or is stalled, else 0."""
    from bulklabel.schedule.runner import Clock

    report = collect(url, schedule, limit, now=Clock().now())
    print(json.dumps(report) if as_json else render(report, schedule))
    for job in report["jobs"]:
        newest = next((r for r in job["runs"] if r["state"] is not None), None)
        if newest and newest["state"] in BAD_STATES:
            return 1
    return 0
