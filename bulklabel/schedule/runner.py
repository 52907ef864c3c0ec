"""The scheduler loop: stand by until holding the lease, then fire each job's due slots.

Every tick (``tick`` seconds) the holder reads ``now`` (the clock), and per job decides
with ``slots.decide`` what the slots since the last one handled become:

- fired: a child process runs ``bulklabel run-scheduled NAME --slot SLOT`` (the Redis URL
  goes through ``BULKLABEL_REDIS_URL``, never the command line); it is reaped and its exit
  logged. A slot that passed while no scheduler held the lease is caught up once (the
  newest only) when the job says ``catchup``; a slot due less than ``grace`` seconds ago
  is simply due, so a takeover fires the slot that came during the handover.
- skipped: the previous run is still going (its child still submits, or its job is queued
  or running): runs never overlap. A stalled previous run is failed, and the slot fires.
- duplicate: the slot's job id exists already (fired by someone else): nothing runs twice.
- missed: passed while no scheduler ran, and not the one caught up.

The child is started before the slot is recorded: a holder that dies in between leaves the
slot to its successor, whose own firing is then refused as a duplicate by the job id.
SIGTERM or SIGINT: stop firing, release the lease, pass SIGTERM on to the running children,
wait for them (``SHUTDOWN_WAIT``), exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from .. import keys
from ..errors import ConfigError
from ..jobs import JobNotFound, JobStore, open_store
from ..settings import redact_url, visibility_timeout
from . import history, slots
from .config import Schedule, ScheduledJob
from .lease import Lease, holder

log = logging.getLogger("bulklabel.scheduler")

CLOCK_ENV = "BULKLABEL_SCHEDULER_CLOCK_FILE"
SHUTDOWN_WAIT = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Clock:
    """``now``: the system clock, or (tests, dry runs) the epoch seconds written in the file
    that ``BULKLABEL_SCHEDULER_CLOCK_FILE`` names, read at each call."""

    def __init__(self, path: str | None = None):
        self.path = path if path is not None else os.environ.get(CLOCK_ENV) or None
        self._last: float | None = None

    def now(self) -> float:
        if not self.path:
            return time.time()
        try:
            with open(self.path) as f:
                self._last = float(f.read().strip())
        except (OSError, ValueError) as exc:
            if self._last is None:
                raise ConfigError(f"{CLOCK_ENV}={self.path}: cannot read epoch seconds from it ({exc})") from None
            # being rewritten: keep the time read last
        return self._last


@dataclass
class Run:
    """A child process firing one slot."""

    process: subprocess.Popen
    name: str
    slot: int
    job_id: str


def lease_client(url: str, seconds: float):
    """A client for the lease alone: short timeouts, so a renewal fails in time."""
    import redis

    wait = max(0.5, seconds / 6)
    return redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=wait, socket_timeout=wait)


def run_command(job: ScheduledJob, schedule_path: str, slot: float) -> list[str]:
    return [sys.executable, "-m", "bulklabel", "run-scheduled", job.name, "--schedule", schedule_path,
            "--slot", slots.iso_utc(slot)]


class Scheduler:
    def __init__(self, schedule: Schedule, redis_url: str, lease_seconds: float = 30.0, tick: float = 1.0,
                 clock: Clock | None = None):
        self.schedule = schedule
        self.path = os.path.abspath(schedule.path)
        self.redis_url = redis_url
        self.tick = tick
        self.grace = max(60.0, 2 * lease_seconds)
        self.retry = min(5.0, lease_seconds / 3)
        self.clock = clock or Clock()
        self.clock.now()  # a bad clock file fails now
        self.stall_after = visibility_timeout()
        self.store: JobStore = open_store(redis_url, patience=3, keep_trying=5)
        self.client = self.store.r
        self.lease = Lease(lease_client(redis_url, lease_seconds), lease_seconds)
        self.runs: list[Run] = []
        self._stop_signal: int | None = None
        self._next_try = 0.0
        self._standing_by = False
        self._redis_down = False

    # --- the loop -------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        log.info("scheduler pid %d: %d jobs from %s, Redis %s, lease %g s; standing by until it holds the lease",
                 os.getpid(), len(self.schedule.jobs), self.schedule.path, redact_url(self.redis_url),
                 self.lease.seconds)
        try:
            while self._stop_signal is None:
                self.reap()
                try:
                    self.step()
                    if self._redis_down:
                        log.info("Redis is back")
                        self._redis_down = False
                except Exception as exc:
                    if not type(exc).__module__.startswith("redis"):
                        raise
                    if not self._redis_down:
                        log.warning("Redis error (%s: %s); trying again", type(exc).__name__, exc)
                        self._redis_down = True
                if self._stop_signal is None:
                    time.sleep(self.tick)
            log.info("%s: stopping", signal.Signals(self._stop_signal).name)
        finally:
            self.shutdown()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 0

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def step(self) -> None:
        if self.lease.lost:
            log.warning("lost the scheduler lease: firing stopped; standing by")
            self.lease.reset()
            self._next_try = time.monotonic() + self.retry
        if not self.lease.held:
            if time.monotonic() < self._next_try:
                return
            self._next_try = time.monotonic() + self.retry
            if not self.lease.try_acquire():
                if not self._standing_by:
                    info = holder(self.client)
                    who = f"{info['host']} pid {info['pid']}" if info else "another scheduler"
                    log.info("standing by: %s holds the scheduler lease (trying every %g s)", who, self.retry)
                    self._standing_by = True
                return
            self._standing_by = False
            log.info("holding the scheduler lease: firing (renewed every %g s)", self.lease.seconds / 3)
        now = self.clock.now()
        for job in self.schedule.jobs.values():
            if not self.lease.held:
                return
            self.tick_job(job, now)

    # --- one job at one tick --------------------------------------------------------
    def tick_job(self, job: ScheduledJob, now: float) -> None:
        last = history.last(self.client, job.name)
        if last is None:  # first start ever: from now on, no history replayed
            history.set_last(self.client, job.name, now, None, first=True)
            upcoming = slots.next_slots(job.cron, job.tz, now, 1)
            log.info("%s: first start: runs from now on; next slot %s", job.name,
                     slots.local_text(upcoming[0].timestamp(), job.tz) if upcoming else "never")
            return
        decision = slots.decide(job.cron, job.tz, job.catchup, last["slot"], now, self.grace)
        if decision.latest is None:
            return
        entries = [history.entry(s, job.job_id(s), "missed", now, "passed while no scheduler held the lease")
                   for s in decision.missed]
        if decision.missed:
            log.warning("%s: %d%s slots passed while no scheduler held the lease, missed: %s ... %s", job.name,
                        len(decision.missed), "+" if decision.more_missed else "",
                        slots.local_text(decision.missed[0], job.tz), slots.local_text(decision.missed[-1], job.tz))
        latest_run = last.get("job_id")
        if decision.fire:
            job_id = job.job_id(decision.latest)
            done = self.fire(job, decision.latest, job_id, latest_run, decision.catchup)
            if done is None:  # the lease went away: record nothing, the next holder will
                return
            outcome, reason = done
            if outcome in ("fired", "duplicate"):
                latest_run = job_id
            entries.append(history.entry(decision.latest, job_id, outcome, now, reason))
        history.record(self.client, job.name, entries)
        history.set_last(self.client, job.name, decision.latest, latest_run)

    def fire(self, job: ScheduledJob, slot: int, job_id: str, previous: str | None,
             catchup: bool) -> tuple[str, str | None] | None:
        when = slots.local_text(slot, job.tz)
        if any(run.job_id == job_id for run in self.runs):  # started here, its recording interrupted
            return "fired", None
        if self.client.exists(keys.job(job_id)):
            log.warning("%s: slot %s: job %s already exists (fired elsewhere): not run again", job.name, when, job_id)
            return "duplicate", "its job already existed"
        reason = self.still_going(job, previous, slot)
        if reason:
            log.warning("%s: slot %s skipped: %s", job.name, when, reason)
            return "skipped", reason
        if not self.lease.held:
            return None
        command = run_command(job, self.path, slot)
        try:
            process = subprocess.Popen(command, env={**os.environ, "BULKLABEL_REDIS_URL": self.redis_url},
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # the id is logged here
                                       start_new_session=True)
        except OSError as exc:
            log.error("%s: slot %s: could not start its run (%s)", job.name, when, exc)
            return "skipped", f"could not start the run: {exc}"
        self.runs.append(Run(process, job.name, slot, job_id))
        why = " (catch-up: it passed while no scheduler held the lease)" if catchup else ""
        log.info("%s: slot %s: fired job %s%s (pid %d)", job.name, when, job_id, why, process.pid)
        return "fired", "catch-up" if catchup else None

    def still_going(self, job: ScheduledJob, previous: str | None, slot: int) -> str | None:
        """Why the previous run is still going (the slot is then skipped), or None. A stalled
        previous run (its submit or its workers died) is failed: it will not come back."""
        for run in self.runs:
            if run.name == job.name and run.process.poll() is None:
                return f"the previous run {run.job_id} is still being submitted (runs never overlap)"
        if not previous:
            return None
        try:
            view = self.store.get(previous, stall_after=self.stall_after)
        except JobNotFound:
            return None
        if view["state"] in ("queued", "running"):
            return f"the previous run {previous} is still {view['state']} (runs never overlap)"
        if view["state"] == "stalled":
            try:
                self.store.fail(previous, f"stalled; superseded by the run for slot {slots.iso_utc(slot)}")
            except JobNotFound:
                return None
            log.warning("%s: the previous run %s was stalled (%s): failed it", job.name, previous, view["error"])
        return None

    # --- children -------------------------------------------------------------------
    def reap(self) -> None:
        for run in list(self.runs):
            code = run.process.poll()
            if code is None:
                continue
            self.runs.remove(run)
            if code == 0:
                log.info("%s: run %s submitted (pid %d exited 0)", run.name, run.job_id, run.process.pid)
            else:
                log.warning("%s: run %s: pid %d exited with status %d", run.name, run.job_id, run.process.pid, code)

    def shutdown(self) -> None:
        self.lease.release()
        alive = [r for r in self.runs if r.process.poll() is None]
        for run in alive:
            log.info("%s: passing SIGTERM on to run %s (pid %d)", run.name, run.job_id, run.process.pid)
            try:
                run.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + SHUTDOWN_WAIT
        for run in alive:
            try:
                run.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: run %s (pid %d) still going after %g s: killed", run.name, run.job_id,
                            run.process.pid, SHUTDOWN_WAIT)
                run.process.kill()
                run.process.wait()
        self.reap()
        log.info("scheduler stopped")
