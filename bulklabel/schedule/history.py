"""What the scheduler remembers per job, in Redis.

``bulklabel:schedule:<name>:last`` (JSON): ``slot``, the newest slot handled (epoch seconds,
whatever became of it), and ``job_id``, the newest run started (the one a next slot must
not overlap). ``bulklabel:schedule:<name>:runs``: the slots and their outcomes, newest
first, the last 200 kept: ``{slot, job_id, outcome, reason, at}`` where outcome is
``fired``, ``skipped`` (with the reason), ``missed`` (passed while no scheduler ran) or
``duplicate`` (its job already existed: fired by someone else).
"""

from __future__ import annotations

import json
from typing import Any

from .. import keys

KEEP = 200
OUTCOMES = ("fired", "skipped", "missed", "duplicate")


def last(client, name: str) -> dict[str, Any] | None:
    raw = client.get(keys.schedule_last(name))
    return json.loads(raw) if raw else None


def set_last(client, name: str, slot: float, job_id: str | None, **extra: Any) -> None:
    client.set(keys.schedule_last(name), json.dumps({"slot": slot, "job_id": job_id, **extra}))


def record(client, name: str, entries: list[dict[str, Any]]) -> None:
    """Push ``entries`` (oldest first) onto the job's history and keep the newest ``KEEP``."""
    if not entries:
        return
    pipe = client.pipeline()
    pipe.lpush(keys.schedule_runs(name), *(json.dumps(e) for e in entries))
    pipe.ltrim(keys.schedule_runs(name), 0, KEEP - 1)
    pipe.execute()


def entry(slot: float, job_id: str | None, outcome: str, at: float, reason: str | None = None) -> dict[str, Any]:
    assert outcome in OUTCOMES, outcome
    found = {"slot": slot, "job_id": job_id, "outcome": outcome, "at": at}
    if reason:
        found["reason"] = reason
    return found


def runs(client, name: str, limit: int = KEEP) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, newest first."""
    return [json.loads(raw) for raw in client.lrange(keys.schedule_runs(name), 0, max(0, limit - 1))]
