"""Scheduled jobs: the schedule file, cron slots, and schedulers as real processes.

The schedulers are ``bulklabel scheduler`` processes against a private, password-protected
redis-server; their clock is a file the test advances (``BULKLABEL_SCHEDULER_CLOCK_FILE``),
so a night of slots passes in seconds. Runs queue their chunks on a queue no worker
serves: their jobs stay queued, which is what the overlap rule needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bulklabel import keys
from bulklabel.errors import ConfigError
from bulklabel.jobs import JobStore
from bulklabel.schedule import history, load_schedule, runner, slots
from bulklabel.schedule.config import MAX_NAME, parse_schedule
from bulklabel.schedule.lease import Lease, holder
from bulklabel.schedule.runner import run_command
from bulklabel.settings import DEFAULT_CHUNK_SIZE
from producer.schedule_status import schedule_status

from conftest import color_photo, encoded, run_cli
from services import RedisServer, wait_for

PASSWORD = "schedule-secret-never-logged-51c2"
UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
LEASE = 3  # seconds: a takeover comes within about LEASE + LEASE / 3


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(broker):
    client = broker.client()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def photos(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("red", "green", "blue")):
        (folder / f"p{i}.jpg").write_bytes(encoded(color_photo(name, rng)))
    return folder


def write_schedule(path: Path, jobs: dict[str, dict]) -> Path:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = []
    for name, fields in jobs.items():
        lines.append(f"[jobs.{name}]")
        lines += [f"{k} = {value(v)}" for k, v in fields.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def set_clock(path: Path, epoch: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(epoch))
    os.replace(tmp, path)


def outcomes(client, name: str) -> list[tuple[str, str]]:
    """(slot as HHMM in UTC, outcome), oldest first."""
    return [(slots.to_datetime(e["slot"]).strftime("%H%M"), e["outcome"]) for e in reversed(history.runs(client, name))]


class Scheduler:
    """``bulklabel scheduler`` in a process of its own, logging to a file."""

    def __init__(self, tmp: Path, tag: str, schedule: Path, broker: RedisServer, clock: Path):
        self.log_path = tmp / f"scheduler-{tag}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
        env.update(BULKLABEL_REDIS_URL=broker.url, BULKLABEL_SCHEDULER_CLOCK_FILE=str(clock), PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bulklabel", "scheduler", "--schedule", str(schedule),
                 "--lease-seconds", str(LEASE), "--tick", "0.2"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def schedulers():
    started: list[Scheduler] = []
    yield started
    for s in started:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait()


def holder_pid(client) -> int | None:
    raw = client.get(keys.SCHEDULER_HOLDER)
    return json.loads(raw)["pid"] if raw else None


# --- the schedule file ------------------------------------------------------------------


def test_a_schedule_file_gets_its_defaults_and_paths_from_its_folder(tmp_path):
    path = write_schedule(tmp_path / "nightly.toml", {
        "photos-nightly": {"sources": ["incoming", "s3://photos/raw/", "@list.txt"], "dest": "labels",
                           "cron": "0  2 * * *", "timezone": "Europe/Berlin"},
        "full": {"sources": ["/data"], "dest": "s3://b/labels", "cron": "*/5 * * * *", "queue": "gpu",
                 "incremental": False, "catchup": False, "chunk_size": 50, "model_id": "m-1"},
    })
    schedule = load_schedule(str(path))
    job = schedule.jobs["photos-nightly"]
    assert job.sources == (str(tmp_path / "incoming"), "s3://photos/raw/", f"@{tmp_path / 'list.txt'}")
    assert job.dest == str(tmp_path / "labels") and job.cron == "0 2 * * *"
    assert (job.queue, job.incremental, job.catchup, job.chunk_size, job.model_id) == (
        "bulklabel", True, True, DEFAULT_CHUNK_SIZE, None)
    full = schedule.jobs["full"]
    assert (full.queue, full.incremental, full.catchup, full.chunk_size, full.model_id) == ("gpu", False, False, 50,
                                                                                            "m-1")
    assert full.timezone == "UTC"


@pytest.mark.parametrize("fields, where, message", [
    ({"cron": "0 2 * *"}, "jobs.nightly.cron", "must have 5 fields"),
    ({"cron": "0 25 * * *"}, "jobs.nightly.cron", "Bad hour"),
    ({"cron": "0 0 30 2 *"}, "jobs.nightly.cron", "Bad day-of-month"),
    ({"timezone": "Mars/Olympus"}, "jobs.nightly.timezone", "unknown timezone 'Mars/Olympus'"),
    ({"chunk_size": 0}, "jobs.nightly.chunk_size", "must be at least 1. Received: 0"),
    ({"catchup": "yes"}, "jobs.nightly.catchup", "must be true or false. Received: 'yes'"),
    ({"sources": []}, "jobs.nightly.sources", "must not be empty"),
    ({"sources": ["ok", 3]}, "jobs.nightly.sources[1]", "must be a string. Received: 3"),
    ({"colour": "red"}, "jobs.nightly.colour", "unknown field (known: sources, dest, cron"),
    ({"dest": None}, "jobs.nightly.dest", "missing (required)"),
])
def test_schedule_errors_name_the_job_and_the_field(fields, where, message):
    table = {"sources": ["in"], "dest": "out", "cron": "0 2 * * *", **fields}
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse_schedule({"jobs": {"nightly": table}}, "nightly.toml")
    assert f"schedule nightly.toml: {where}: {message}" in str(err.value)


def test_schedule_names_must_leave_room_for_the_slot():
    table = {"sources": ["in"], "dest": "out", "cron": "0 2 * * *"}
    parse_schedule({"jobs": {"a" * MAX_NAME: table}}, "s.toml")
    for bad in ("a" * (MAX_NAME + 1), "-dash", "with space"):
        with pytest.raises(ConfigError, match=r"a job name is 1-114 letters"):
            parse_schedule({"jobs": {bad: table}}, "s.toml")
    with pytest.raises(ConfigError, match=r"s.toml: jobs: must not be empty"):
        parse_schedule({"jobs": {}}, "s.toml")
    with pytest.raises(ConfigError, match=r"s.toml: extra: unknown field \(known: jobs\)"):
        parse_schedule({"jobs": {"x": table}, "extra": 1}, "s.toml")


def test_a_bad_schedule_ends_the_command_with_exit_2(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_text('[jobs.photos-nightly]\nsources = ["in"]\ndest = "out"\ncron = "0 2 * * * *"\n')
    for command in (["scheduler", "--schedule", str(path)], ["scheduler", "--schedule", str(path), "--list"],
                    ["run-scheduled", "photos-nightly", "--schedule", str(path)],
                    ["status", "--schedule", str(path)]):
        result = run_cli(*command, cwd=tmp_path, timeout=60)
        assert result.returncode == 2, result.stderr
        assert f"schedule {path}: jobs.photos-nightly.cron: must have 5 fields" in result.stderr
        assert "Traceback" not in result.stderr
    path.write_text("[jobs.x\n")
    result = run_cli("scheduler", "--schedule", str(path), "--list", timeout=60)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_list_shows_the_next_runs_without_redis(tmp_path):
    path = write_schedule(tmp_path / "s.toml", {"photos-nightly": {
        "sources": ["in"], "dest": "out", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}})
    clock = tmp_path / "clock"
    set_clock(clock, utc("2025-03-29T12:00:00"))
    result = run_cli("scheduler", "--schedule", str(path), "--list", "--count", "3", timeout=60,
                     env={"BULKLABEL_SCHEDULER_CLOCK_FILE": str(clock),
                          "BULKLABEL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('photos-nightly: "30 2 * * *" in Europe/Berlin')
    assert "2025-03-30 03:00 CEST" in lines[1] and lines[1].endswith("photos-nightly-20250330T0100")  # DST gap
    assert "2025-03-31 02:30 CEST" in lines[2] and "2025-03-31 00:30 UTC" in lines[2]
    assert len(lines) == 4


# --- slots ---------------------------------------------------------------------------


def test_run_ids_name_the_slot_in_utc():
    assert slots.run_id("photos-nightly", datetime(2026, 11, 22, 2, 0, tzinfo=BERLIN)) == \
        "photos-nightly-20261122T0100"
    assert slots.run_id("n", utc("2026-07-01T00:00:00")) == "n-20260701T0000"
    # the repeated hour when Berlin's clocks go back: two slots at 02:30 local, two ids
    day = [w for w in slots.next_slots("30 * * * *", BERLIN, utc("2025-10-25T23:00:00"), 4)]
    assert [f"{w:%H:%M %Z}" for w in day] == ["01:30 CEST", "02:30 CEST", "02:30 CET", "03:30 CET"]
    assert len({slots.run_id("n", w) for w in day}) == 4


def test_a_fixed_time_job_runs_once_a_day_across_dst_in_berlin():
    spring = slots.next_slots("30 2 * * *", BERLIN, utc("2025-03-28T12:00:00"), 3)
    assert [slots.run_id("n", w) for w in spring] == ["n-20250329T0130", "n-20250330T0100", "n-20250331T0030"]
    autumn = slots.next_slots("30 2 * * *", BERLIN, utc("2025-10-25T12:00:00"), 3)
    assert [slots.run_id("n", w) for w in autumn] == ["n-20251026T0030", "n-20251027T0130", "n-20251028T0130"]
    # inside the repeated hour, the newest slot is still the day's one
    assert slots.latest_slot("30 2 * * *", BERLIN, utc("2025-10-26T01:10:00")) == utc("2025-10-26T00:30:00")


def test_after_downtime_catch_up_runs_the_newest_missed_slot_once():
    last, now = utc("2026-01-01T02:00:00"), utc("2026-01-04T09:00:00")
    d = slots.decide("0 2 * * *", UTC, True, last, now, grace=60)
    assert d.latest == utc("2026-01-04T02:00:00") and d.fire and d.catchup
    assert d.missed == (utc("2026-01-02T02:00:00"), utc("2026-01-03T02:00:00")) and not d.more_missed
    # once: with that slot handled, nothing more is due
    assert slots.decide("0 2 * * *", UTC, True, d.latest, now + 3600, grace=60) == slots.NOTHING


def test_without_catch_up_missed_slots_are_skipped_but_a_slot_just_due_runs():
    last = utc("2026-01-01T02:00:00")
    d = slots.decide("0 2 * * *", UTC, False, last, utc("2026-01-04T09:00:00"), grace=60)
    assert not d.fire and len(d.missed) == 3 and d.missed[-1] == d.latest
    d = slots.decide("0 2 * * *", UTC, False, last, utc("2026-01-04T02:00:40"), grace=60)
    assert d.fire and not d.catchup and len(d.missed) == 2  # due 40 s ago: simply due
    assert slots.decide("0 2 * * *", UTC, False, utc("2026-01-04T02:00:00"), utc("2026-01-04T02:00:59"),
                        grace=60) == slots.NOTHING


def test_a_long_downtime_costs_no_long_iteration():
    t = time.monotonic()
    d = slots.decide("* * * * *", UTC, True, utc("2025-01-01T00:00:00"), utc("2026-01-01T00:00:30"), grace=60)
    assert time.monotonic() - t < 2
    assert d.fire and d.latest == utc("2026-01-01T00:00:00")
    assert len(d.missed) == slots.MISSED_CAP and d.more_missed and d.missed[-1] == d.latest - 60


def test_slot_times_given_by_hand():
    assert slots.parse_slot("2026-11-22T02:00", BERLIN) == utc("2026-11-22T01:00:00")
    assert slots.parse_slot("2026-11-22T01:00:59Z", BERLIN) == utc("2026-11-22T01:00:00")
    assert slots.parse_slot("2026-11-22T02:00+01:00", UTC) == utc("2026-11-22T01:00:00")
    assert slots.parse_slot(str(utc("2026-11-22T01:00:30")), UTC) == utc("2026-11-22T01:00:00")
    for bad in ("tomorrow", "nan", "1e30"):
        with pytest.raises(ConfigError, match="--slot"):
            slots.parse_slot(bad, UTC)


def test_a_run_gets_no_redis_url_on_its_command_line(tmp_path):
    job = parse_schedule({"jobs": {"n": {"sources": ["in"], "dest": "out", "cron": "0 2 * * *"}}}, "s.toml").jobs["n"]
    command = run_command(job, "/etc/s.toml", utc("2026-11-22T01:00:00"))
    assert command[1:] == ["-m", "bulklabel", "run-scheduled", "n", "--schedule", "/etc/s.toml",
                           "--slot", "2026-11-22T01:00:00Z"]
    assert not any("redis" in part for part in command)


# --- processes -----------------------------------------------------------------------


def test_run_scheduled_runs_a_slot_once(broker, redis_client, photos, tmp_path):
    path = write_schedule(tmp_path / "s.toml", {"photos-nightly": {
        "sources": [str(photos)], "dest": str(tmp_path / "labels"), "cron": "0 2 * * *",
        "timezone": "Europe/Berlin", "queue": "nobody", "chunk_size": 2}})
    env = {"BULKLABEL_REDIS_URL": broker.url}
    first = run_cli("run-scheduled", "photos-nightly", "--schedule", str(path), "--slot", "2026-11-22T02:00",
                    env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "photos-nightly-20261122T0100"
    queued = redis_client.llen("nobody")
    assert queued == 2 and redis_client.hget(keys.job("photos-nightly-20261122T0100"), "total") == "3"
    again = run_cli("run-scheduled", "photos-nightly", "--schedule", str(path), "--slot", "2026-11-22T01:00Z",
                    env=env, timeout=60)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert redis_client.llen("nobody") == queued
    unknown = run_cli("run-scheduled", "nope", "--schedule", str(path), env=env, timeout=60)
    assert unknown.returncode == 2 and "no job named 'nope' (it has: photos-nightly)" in unknown.stderr
    clock = tmp_path / "clock"
    set_clock(clock, utc("2026-11-22T05:17:42"))  # without --slot: now, to the minute
    now = run_cli("run-scheduled", "photos-nightly", "--schedule", str(path), timeout=60,
                  env={**env, "BULKLABEL_SCHEDULER_CLOCK_FILE": str(clock)})
    assert now.returncode == 0, now.stderr
    assert now.stdout.splitlines()[-1] == "photos-nightly-20261122T0517"


def test_the_lease_has_one_holder_and_a_failed_renewal_loses_it(broker, redis_client):
    first, second = Lease(broker.client(), LEASE), Lease(broker.client(), LEASE)
    assert first.try_acquire() and first.held
    assert not second.try_acquire()
    assert holder(redis_client)["pid"] == os.getpid() and 0 < holder(redis_client)["expires_in"] <= LEASE
    time.sleep(LEASE / 3 + 0.5)  # renewed: still ours
    assert first.held and redis_client.pttl(keys.SCHEDULER_LEASE) > (LEASE * 2 / 3 - 0.4) * 1000
    redis_client.set(keys.SCHEDULER_LEASE, "another-holder")  # as if it had expired and been taken
    wait_for(lambda: first.lost, LEASE, "the renewal to find the lease gone")
    assert not first.held
    first.reset()
    redis_client.delete(keys.SCHEDULER_LEASE)
    assert second.try_acquire()
    second.release()
    assert not redis_client.exists(keys.SCHEDULER_LEASE) and holder(redis_client) is None
    assert first.try_acquire()
    first.release()


def test_a_stalled_previous_run_is_failed_and_the_slot_runs(broker, redis_client, photos, tmp_path, capsys):
    path = write_schedule(tmp_path / "s.toml", {"nightly": {
        "sources": [str(photos)], "dest": str(tmp_path / "labels"), "cron": "0 2 * * *", "queue": "nobody"}})
    schedule = load_schedule(str(path))
    clock = tmp_path / "clock"
    set_clock(clock, utc("2026-01-05T02:00:10"))
    scheduler = runner.Scheduler(schedule, broker.url, lease_seconds=LEASE, clock=runner.Clock(str(clock)))
    store = scheduler.store
    store.create("nightly-20260104T0200", str(tmp_path / "labels"), "nobody", [str(photos)])
    redis_client.delete(keys.lister("nightly-20260104T0200"))  # its submit died while listing
    history.set_last(redis_client, "nightly", utc("2026-01-04T02:00:00"), "nightly-20260104T0200")
    assert scheduler.lease.try_acquire()
    try:
        scheduler.tick_job(schedule.jobs["nightly"], utc("2026-01-05T02:00:10"))
        assert [r.job_id for r in scheduler.runs] == ["nightly-20260105T0200"]
        wait_for(lambda: scheduler.runs[0].process.poll() is not None, 30, "the run to be submitted")
    finally:
        scheduler.shutdown()
    old = store.get("nightly-20260104T0200")
    assert old["state"] == "failed" and old["error"] == "stalled; superseded by the run for slot 2026-01-05T02:00:00Z"
    assert outcomes(redis_client, "nightly") == [("0200", "fired")]
    assert redis_client.hget(keys.job("nightly-20260105T0200"), "listing") == "0"
    assert schedule_status(broker.url, schedule, as_json=True) == 0
    store.cancel("nightly-20260105T0200", "not tonight")
    capsys.readouterr()
    assert schedule_status(broker.url, schedule) == 1  # the newest run was cancelled
    shown = capsys.readouterr().out
    assert "no scheduler holds the lease" in shown and "nightly-20260105T0200" in shown and "not tonight" in shown


def test_one_scheduler_fires_a_standby_takes_over_and_catches_up(broker, redis_client, photos, tmp_path, schedulers):
    common = {"sources": [str(photos)], "dest": str(tmp_path / "labels"), "queue": "nobody"}
    path = write_schedule(tmp_path / "nightly.toml", {
        "every": {**common, "cron": "* * * * *"},
        "hourly": {**common, "cron": "0 * * * *", "catchup": True},
        "strict": {**common, "cron": "0 * * * *", "catchup": False},
    })
    clock = tmp_path / "clock"
    set_clock(clock, utc("2026-01-05T10:00:20"))
    store = JobStore(redis_client)

    def job_exists(job_id: str) -> bool:
        return bool(redis_client.exists(keys.job(job_id)))

    # two schedulers: one holds the lease, the other stands by
    a = Scheduler(tmp_path, "a", path, broker, clock)
    schedulers.append(a)
    wait_for(lambda: holder_pid(redis_client) == a.pid, 20, "scheduler a to hold the lease")
    b = Scheduler(tmp_path, "b", path, broker, clock)
    schedulers.append(b)
    wait_for(lambda: "standing by" in b.log(), 20, "scheduler b to stand by")
    assert holder_pid(redis_client) == a.pid
    wait_for(lambda: all(history.last(redis_client, n) for n in ("every", "hourly", "strict")), 10,
             "the first start's baseline")

    # the holder fires the slot that comes
    set_clock(clock, utc("2026-01-05T10:01:05"))
    wait_for(lambda: redis_client.hget(keys.job("every-20260105T1001"), "listing") == "0", 30,
             "the run of slot 10:01 to be submitted")
    assert outcomes(redis_client, "every") == [("1001", "fired")]
    assert redis_client.llen("nobody") == 1
    wait_for(lambda: "run every-20260105T1001 submitted" in a.log(), 10, "the run's process to be reaped")

    # the next slot finds that run still queued (no worker): skipped, not overlapped
    set_clock(clock, utc("2026-01-05T10:02:05"))
    wait_for(lambda: len(outcomes(redis_client, "every")) == 2, 10, "slot 10:02 to be handled")
    assert outcomes(redis_client, "every")[-1] == ("1002", "skipped")
    assert "still queued" in history.runs(redis_client, "every")[0]["reason"]
    assert not job_exists("every-20260105T1002")
    # logged by the holder: a, or b if a slow moment cost a its lease (seen once in CI)
    wait_for(lambda: "10:02 UTC skipped" in a.log() + b.log(), 10, "the skip to be logged")
    store.cancel("every-20260105T1001", "done with it")

    # the holder dies; the standby takes over within the lease and fires the slot that came meanwhile
    a.process.kill()
    a.process.wait()
    killed = time.monotonic()
    set_clock(clock, utc("2026-01-05T10:03:05"))
    wait_for(lambda: holder_pid(redis_client) == b.pid, LEASE + 10, "scheduler b to take over")
    took = time.monotonic() - killed
    assert took < LEASE + LEASE / 3 + 2, took
    wait_for(lambda: job_exists("every-20260105T1003"), 20, "the run of slot 10:03")
    wait_for(lambda: redis_client.hget(keys.job("every-20260105T1003"), "listing") == "0", 30,
             "the run of slot 10:03 to be submitted")
    assert outcomes(redis_client, "every") == [("1001", "fired"), ("1002", "skipped"), ("1003", "fired")]

    # the slot that a run by hand already started is refused as a duplicate
    env = {"BULKLABEL_REDIS_URL": broker.url}
    store.cancel("every-20260105T1003", "done with it")
    by_hand = run_cli("run-scheduled", "every", "--schedule", str(path), "--slot", "2026-01-05T10:04Z", env=env,
                      timeout=60)
    assert by_hand.returncode == 0, by_hand.stderr
    set_clock(clock, utc("2026-01-05T10:04:05"))
    wait_for(lambda: len(outcomes(redis_client, "every")) == 4, 10, "slot 10:04 to be handled")
    assert outcomes(redis_client, "every")[-1] == ("1004", "duplicate")
    assert redis_client.llen("nobody") == 3  # 10:01, 10:03 and the run by hand

    # stopped, the scheduler gives the lease back and exits 0
    assert b.stop() == 0
    assert holder_pid(redis_client) is None and not redis_client.exists(keys.SCHEDULER_LEASE)
    assert "scheduler stopped" in b.log()

    # three and a half hours later a new scheduler starts: the hourly job catches up once
    set_clock(clock, utc("2026-01-05T13:30:30"))
    c = Scheduler(tmp_path, "c", path, broker, clock)
    schedulers.append(c)
    wait_for(lambda: outcomes(redis_client, "hourly") and outcomes(redis_client, "strict"), 20,
             "scheduler c to handle the missed slots")
    assert outcomes(redis_client, "hourly") == [("1100", "missed"), ("1200", "missed"), ("1300", "fired")]
    assert outcomes(redis_client, "strict") == [("1100", "missed"), ("1200", "missed"), ("1300", "missed")]
    wait_for(lambda: job_exists("hourly-20260105T1300"), 20, "the catch-up run")
    every = outcomes(redis_client, "every")
    assert every[-1] == ("1330", "skipped")  # the run by hand for 10:04 is still queued
    assert every[-2] == ("1329", "missed") and len(every) == 4 + slots.MISSED_CAP + 1
    set_clock(clock, utc("2026-01-05T13:31:05"))
    wait_for(lambda: outcomes(redis_client, "every")[-1][0] == "1331", 10, "slot 13:31 to be handled")
    assert len(outcomes(redis_client, "hourly")) == 3  # once, not again
    for hour in ("11", "12"):
        assert not job_exists(f"hourly-20260105T{hour}00") and not job_exists(f"strict-20260105T{hour}00")
    wait_for(lambda: redis_client.hget(keys.job("hourly-20260105T1300"), "listing") == "0", 30,
             "the catch-up run to be submitted")

    # status shows the runs and who holds the lease
    shown = run_cli("status", "--schedule", str(path), "--json", "--limit", "3", env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["scheduler"]["pid"] == c.pid
    jobs = {j["name"]: j for j in report["jobs"]}
    fired = jobs["hourly"]["runs"][0]
    assert (fired["job_id"], fired["outcome"], fired["state"], fired["done"], fired["errors"]) == \
        ("hourly-20260105T1300", "fired", "queued", 0, 0)
    assert [r["outcome"] for r in jobs["strict"]["runs"]] == ["missed"] * 3
    assert jobs["every"]["runs"][0]["outcome"] == "skipped" and len(jobs["every"]["runs"]) == 3
    text = run_cli("status", "--schedule", str(path), env=env, timeout=60)
    assert text.returncode == 0, text.stderr
    assert "held by" in text.stdout and f"pid {c.pid}" in text.stdout and "hourly-20260105T1300" in text.stdout

    assert c.stop() == 0
    for s in (a, b, c):
        assert PASSWORD not in s.log() and "Traceback" not in s.log(), s.log()


def test_stopping_passes_sigterm_on_to_running_runs(broker, redis_client, tmp_path):
    path = write_schedule(tmp_path / "s.toml", {"n": {"sources": ["in"], "dest": "out", "cron": "0 2 * * *"}})
    scheduler = runner.Scheduler(load_schedule(str(path)), broker.url, lease_seconds=LEASE)
    assert scheduler.lease.try_acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    scheduler.runs.append(runner.Run(child, "n", 0, "n-19700101T0000"))
    started = time.monotonic()
    scheduler.shutdown()
    assert child.returncode == 7 and time.monotonic() - started < 10
    assert not scheduler.runs and not redis_client.exists(keys.SCHEDULER_LEASE)
