"""Commands of scheduled jobs: scheduler, run-scheduled (``status --schedule`` lives with status)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys

from .. import settings
from ..errors import ConfigError
from ..options import Option, add_options
from ..options.distributed import REDIS

SCHEDULE_FILE_HELP = """\
the schedule file (TOML). One table per job:

  [jobs.photos-nightly]
  sources = ["s3://photos/incoming/"]   # what 'submit' takes (relative paths: from the file's folder)
  dest = "s3://photos/labels"
  cron = "0 2 * * *"                    # 5 fields: minute hour day-of-month month day-of-week
  timezone = "Europe/Berlin"            # IANA name; default UTC
  queue = "photos"                      # default bulklabel
  incremental = true                    # skip what DEST already labeled (default true)
  catchup = true                        # after downtime, run the newest missed slot once (default true)
  chunk_size = 1024                     # optional (default 4096)
  model_id = "..."                      # optional: the model incremental diffs against
"""

SCHEDULER_HELP = f"""\
Run a schedule: submit each job of the file at the times its cron expression names.

Each run is a job like any other ('bulklabel status JOB'), with a fixed id:
<name>-<slot time in UTC as YYYYmmddTHHMM> (UTC: unambiguous when clocks go back).
A slot can therefore run only once, whoever fires it: a second try is refused.

One active scheduler per Redis: start one on two machines, and one fires while the other
stands by. The active one holds a lease in Redis (--lease-seconds, renewed every third of
it); if it dies, even by SIGKILL, the lease expires and the standby takes over within the
lease plus a few seconds, firing the slot that came meanwhile. A scheduler that cannot
renew its lease stops firing at once and stands by.

rules:
  overlap   a slot whose previous run is still going (queued or running) is skipped and
            logged; a stalled previous run (its submit or workers died) is failed and the
            slot runs.
  catch-up  slots that passed while no scheduler ran: with catchup = true the newest of
            them runs once (not once per slot); with catchup = false they are recorded as
            missed. A slot due less than max(60 s, 2 x lease) ago simply runs. A job's
            very first scheduler starts from now (no history is replayed).
  runs      each run is a child process, 'bulklabel run-scheduled NAME --slot TIME' (the
            Redis URL goes through BULKLABEL_REDIS_URL, never a command line).

SIGTERM or Ctrl-C: stop firing, release the lease, pass SIGTERM to running submits, wait
for them (up to 30 s), exit 0. What happened: 'bulklabel status --schedule FILE'. The
file is read when the scheduler starts: restart it after an edit.

{SCHEDULE_FILE_HELP}
examples:
  bulklabel scheduler --schedule /etc/bulklabel/nightly.toml --list     # the next runs, no Redis
  bulklabel scheduler --schedule nightly.toml                           # run it (as a service)
  BULKLABEL_REDIS_URL=rediss://:secret@redis.internal:6380/0 bulklabel scheduler --schedule nightly.toml
"""

RUN_SCHEDULED_HELP = """\
Run one job of a schedule file now: submit it as the scheduler would, with the job id of
its slot (<name>-<slot in UTC as YYYYmmddTHHMM>), and print that id as the last line of
standard output. For cron users, and to try a schedule by hand.

A slot runs once: if its job exists already, nothing is queued and the exit status is 2.

examples:
  bulklabel run-scheduled photos-nightly --schedule nightly.toml                 # slot: now
  bulklabel run-scheduled photos-nightly --schedule nightly.toml --slot 2026-11-22T02:00
  0 2 * * * bulklabel run-scheduled photos-nightly --schedule /etc/bulklabel/nightly.toml   # crontab
"""


def lease_seconds(value, what: str) -> int:
    return settings.whole_number(value, what, 3)


def positive_number(value, what: str) -> float:
    number = settings.number(value, what)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{what} must be a number above 0. Received: {what}={value!r}")
    return number


SCHEDULE = Option(("--schedule",), metavar="FILE", required=True, env=None,
                  help="the schedule file (TOML; its format is shown above)")
RUN_SCHEDULE = dataclasses.replace(SCHEDULE, help="the schedule file (TOML; its format: bulklabel scheduler --help)")
LEASE = Option(("--lease-seconds",), metavar="S", default="30", parse=lease_seconds,
               help="lease time to live: a dead scheduler's successor takes over within about this long "
                    "(at least 3; default 30)")
TICK = Option(("--tick",), metavar="S", default="1", parse=positive_number, env=("BULKLABEL_SCHEDULER_TICK",),
              help="how often the schedule is checked, in seconds (default 1)")
LIST = Option(("--list",), switch=True, default=False, parse=settings.boolean, env=None,
              help="print each job's next runs (local time, UTC, job id) and exit; needs no Redis")
COUNT = Option(("--count",), metavar="N", default="5", parse=settings.positive_int, env=None,
               help="with --list: how many runs per job (default 5)")
SLOT = Option(("--slot",), metavar="TIME", env=None,
              help="the slot to run: 2026-11-22T02:00 (in the job's timezone), 2026-11-22T01:00Z or epoch "
                   "seconds; truncated to the minute (default: now)")
STATUS_SCHEDULE = Option(("--schedule",), metavar="FILE", env=None,
                         help="instead of one job: the recent runs of each job of this schedule file (slot, "
                              "job id, state, images labeled, skipped, errors; slots skipped, missed or "
                              "refused as duplicates) and who holds the scheduler lease")
LIMIT = Option(("--limit",), metavar="N", default="10", parse=settings.positive_int, env=None,
               help="with --schedule: runs shown per job (default 10)")


def add_scheduler(sub) -> None:
    p = sub.add_parser("scheduler", help="run a schedule file's jobs at their cron times (one active per Redis)",
                       description=SCHEDULER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, SCHEDULE, LIST, COUNT, LEASE, TICK, REDIS)
    p.set_defaults(run=_scheduler)


def add_run_scheduled(sub) -> None:
    p = sub.add_parser("run-scheduled", help="submit one job of a schedule file now",
                       description=RUN_SCHEDULED_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", metavar="NAME", help="the job's name in the schedule file ([jobs.NAME])")
    add_options(p, RUN_SCHEDULE, SLOT, REDIS)
    p.set_defaults(run=_run_scheduled)


def _scheduler(args: argparse.Namespace) -> int:
    from ..schedule import load_schedule
    from ..schedule.runner import Clock, Scheduler

    schedule = load_schedule(SCHEDULE.value(args))
    if LIST.value(args):
        from producer.schedule_status import upcoming

        print(upcoming(schedule, Clock().now(), COUNT.value(args)))
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [scheduler pid {os.getpid()}] %(levelname)s: %(message)s")
    scheduler = Scheduler(schedule, REDIS.value(args), lease_seconds=LEASE.value(args), tick=TICK.value(args))
    return scheduler.run()


def _run_scheduled(args: argparse.Namespace) -> int:
    from producer.submit import Submission, submit

    from .. import keys
    from ..jobs import open_store
    from ..schedule import load_schedule
    from ..schedule.runner import Clock
    from ..schedule.slots import iso_utc, parse_slot

    schedule = load_schedule(RUN_SCHEDULE.value(args))
    job = schedule.job(args.name)
    raw = SLOT.value(args)
    slot = parse_slot(raw, job.tz) if raw else math.floor(Clock().now() / 60) * 60
    job_id = job.job_id(slot)
    url = REDIS.value(args)
    if open_store(url).r.exists(keys.job(job_id)):
        raise ConfigError(f"{job.name}: slot {iso_utc(slot)} has run already: job {job_id!r} already exists "
                          f"(a slot runs once; see: bulklabel status {job_id})")
    job_id = submit(Submission(sources=list(job.sources), dest=job.dest, redis_url=url, queue=job.queue,
                               chunk_size=job.chunk_size, job_id=job_id, incremental=job.incremental,
                               model_id=job.model_id))
    print(job_id, flush=True)
    return 0
