"""Scheduled jobs: a TOML schedule file, cron slots, and one active scheduler per Redis.

    config.py    the schedule file: TOML, checked by a JSON schema, cron and timezone checks
    slots.py     cron → slots and run ids; which slots are due, caught up or missed (pure)
    lease.py     the scheduler lease: a renewed Redis lock; exactly one holder fires
    history.py   per job: the latest slot handled, and the list of slots and their outcomes
    runner.py    the scheduler loop: standby, fire (one child process per run), reap, stop

A run's job id is ``<name>-<slot in UTC as YYYYmmddTHHMM>``: whoever fires a slot (the
scheduler, a takeover, a restart, ``run-scheduled`` by hand), the job store creates it once.
"""

from .config import Schedule, ScheduledJob, load_schedule

__all__ = ["Schedule", "ScheduledJob", "load_schedule"]
