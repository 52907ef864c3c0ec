"""The job store against a real Redis (db 13 of 127.0.0.1:6379, flushed around each test)."""

from __future__ import annotations

import json
import re
import time
from importlib import resources
from pathlib import Path

import pytest

from bulklabel import keys
from bulklabel.errors import ConfigError
from bulklabel.jobs import (
    KEEP_SECONDS,
    MAX_AGE_SECONDS,
    JobNotFound,
    JobStore,
    check_job_id,
    job_view,
    new_job_id,
    scripts,
    success_summary,
    write_success,
)
from bulklabel.jobs.store import LISTER_SECONDS
from bulklabel.storage.memory import MemoryStorage

REDIS_DB = 13
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
ROOT = Path(__file__).resolve().parents[1]
LUA = {"complete_if_ready.lua", "complete_chunk.lua", "finish_listing.lua", "start_chunk.lua", "end_job.lua",
       "add_chunk.lua"}


@pytest.fixture
def client(scratch_redis):
    return scratch_redis


@pytest.fixture
def store(client):
    return JobStore(client)


def job_keys(job_id="j1"):
    return [keys.job(job_id), keys.chunks_done(job_id), keys.deliveries(job_id),
            keys.models(job_id), keys.workers(job_id)]


def make(store, job_id="j1", chunks=(10, 6)):
    store.create(job_id, "mem://out", "q1", ["s3://a/", "s3://b/"])
    for number, images in enumerate(chunks):
        store.add_chunk(job_id, number, images)


def package_data_patterns() -> list[str]:
    """``[tool.setuptools.package-data]`` for bulklabel.jobs in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        line = re.search(r'^"bulklabel\.jobs"\s*=\s*(\[.*\])\s*$', text, re.MULTILINE)
        return json.loads(line.group(1))
    return tomllib.loads(text)["tool"]["setuptools"]["package-data"]["bulklabel.jobs"]


def test_lua_scripts_are_package_data():
    folder = resources.files("bulklabel.jobs").joinpath("lua")
    assert {p.name for p in folder.iterdir() if p.name.endswith(".lua")} == LUA
    for name in LUA:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        assert text.startswith("-- ") and "KEYS" in text and "ARGV" in text and "redis.call" in text
    shipped = {p.name for pattern in package_data_patterns()
               for p in (ROOT / "bulklabel" / "jobs").glob(pattern)}
    assert shipped == LUA


def test_scripts_prepend_the_shared_helper():
    helper = scripts.read("complete_if_ready")
    for name in ("complete_chunk", "finish_listing"):
        assert scripts.source(name) == helper + "\n" + scripts.read(name)
    assert scripts.source("start_chunk") == scripts.read("start_chunk")
    assert scripts.source("start_chunk") is scripts.source("start_chunk")  # cached


def test_create_and_refuse_duplicate(store, client):
    store.create("j1", "mem://out", "q1", ["s3://a/", "s3://b/"])
    raw = client.hgetall(keys.job("j1"))
    submitted = raw.pop("submitted_at")
    assert raw.pop("progress_at") == submitted
    assert raw == {"job_id": "j1", "state": "queued", "dest": "mem://out", "queue": "q1",
                   "listing": "1", "total": "0", "done": "0", "errors": "0",
                   "chunks_enqueued": "0", "chunks_total": "0", "chunks_done": "0",
                   "sources": "s3://a/ s3://b/"}
    assert client.zscore(keys.JOBS, "j1") == float(submitted)
    with pytest.raises(ConfigError, match="job 'j1' already exists"):
        store.create("j1", "mem://other", "q2", [])
    assert client.hget(keys.job("j1"), "dest") == "mem://out"
    assert MAX_AGE_SECONDS - 5 <= client.ttl(keys.job("j1")) <= MAX_AGE_SECONDS  # expires from creation


def test_add_chunk_totals(store):
    make(store, chunks=(5, 7, 0))
    job = store.get("j1")
    assert (job["total"], job["chunks_enqueued"], job["chunks_done"]) == (12, 3, 0)
    assert store.add_chunk("j1", 1, 7) == "queued"  # a retried call (reply lost) counts nothing
    assert store.add_chunk("j1", 2, 0) == "queued"
    assert (store.get("j1")["total"], store.get("j1")["chunks_enqueued"]) == (12, 3)
    assert job["chunks_total"] is None and job["listing_complete"] is False


def test_start_chunk(store, client):
    make(store)
    assert store.start_chunk("j1", 0, "w1") == (1, False, "running")
    first = client.hgetall(keys.job("j1"))
    assert first["state"] == "running" and first["progress_at"] == first["started_at"]
    assert store.start_chunk("j1", 0, "w2") == (2, False, "running")
    assert store.start_chunk("j1", 1, "w1") == (1, False, "running")
    assert client.hget(keys.job("j1"), "started_at") == first["started_at"]
    assert client.hgetall(keys.deliveries("j1")) == {"0": "2", "1": "1"}
    assert client.smembers(keys.workers("j1")) == {"w1", "w2"}
    store.complete_chunk("j1", 0, 10, 0, "m1")
    assert store.start_chunk("j1", 0, "w3") == (3, True, "running")
    assert store.start_chunk("j1", 1, "w3") == (2, False, "running")
    for key in (keys.deliveries("j1"), keys.workers("j1"), keys.chunks_done("j1"), keys.models("j1")):
        assert client.ttl(key) == client.ttl(keys.job("j1")) > 0, key  # they expire with the job


@pytest.mark.parametrize("end", ["fail", "cancel"])
def test_an_ended_job_takes_no_deliveries_and_no_chunks(store, client, end):
    make(store)
    assert store.start_chunk("j1", 0, "w1") == (1, False, "running")
    assert getattr(store, end)("j1", "boom") == "running"
    state = {"fail": "failed", "cancel": "cancelled"}[end]
    before = client.hgetall(keys.job("j1"))
    assert (before["state"], before["error"]) == (state, "boom")
    assert store.start_chunk("j1", 0, "w2") == (0, False, state)
    assert store.start_chunk("j1", 1, "w2") == (0, False, state)
    assert store.add_chunk("j1", 2, 5) == state
    assert client.hgetall(keys.job("j1")) == before
    assert client.hgetall(keys.deliveries("j1")) == {"0": "1"}
    # the first ending wins: a later fail or cancel changes nothing
    assert store.fail("j1", "other") == state and store.cancel("j1") == state
    assert client.hgetall(keys.job("j1")) == before
    assert store.finish_listing("j1") is False
    assert store.complete_chunk("j1", 0, 10, 0, "m1") == (True, False)  # a chunk in flight still counts
    assert client.hget(keys.job("j1"), "state") == state


def test_ending_a_done_job_changes_nothing(store, client):
    make(store, chunks=(3,))
    store.finish_listing("j1")
    store.complete_chunk("j1", 0, 3, 0, "m1")
    before = client.hgetall(keys.job("j1"))
    assert store.cancel("j1") == "done" and store.fail("j1", "late") == "done"
    assert client.hgetall(keys.job("j1")) == before
    with pytest.raises(JobNotFound):
        store.cancel("nope")
    assert not client.exists(keys.job("nope"))


def test_stalled_when_idle_and_no_live_worker(store, client):
    make(store)
    store.start_chunk("j1", 0, "w1")
    assert store.get("j1", stall_after=60)["state"] == "running"  # progress just now
    client.hset(keys.job("j1"), "progress_at", repr(time.time() - 120))
    job = store.get("j1", stall_after=60)
    assert (job["state"], job["stalled"]) == ("stalled", True)
    assert "no progress for 120 s and no live worker serves queue 'q1'" in job["error"]
    assert store.get("j1")["state"] == "running"  # the stored state is untouched
    client.set(keys.worker("w9"), json.dumps({"queue": "q1", "name": "w9"}), ex=30)
    assert store.get("j1", stall_after=60)["state"] == "running"  # a live worker on its queue: waiting
    client.set(keys.worker("w9"), json.dumps({"queue": "other", "name": "w9"}), ex=30)
    assert store.get("j1", stall_after=60)["state"] == "stalled"
    store.cancel("j1")
    assert store.get("j1", stall_after=60)["state"] == "cancelled"


def test_stalled_when_the_listing_submit_is_gone(store, client):
    make(store)  # two chunks listed, listing still open
    assert 0 < client.ttl(keys.lister("j1")) <= LISTER_SECONDS  # the submit's heartbeat
    assert store.get("j1", stall_after=3600)["state"] == "queued"
    client.delete(keys.lister("j1"))  # its key expired: the submit was killed outright
    job = store.get("j1", stall_after=3600)
    assert (job["state"], job["stalled"]) == ("stalled", True)
    assert job["error"] == ("its listing stopped after 2 chunks: the submit listing it is gone (killed?). "
                            "Cancel it (bulklabel cancel j1) and submit again")
    beat = store.listing_heartbeat("j1")
    beat.start()
    deadline = time.monotonic() + 5
    while not client.exists(keys.lister("j1")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.get("j1", stall_after=3600)["state"] == "queued"
    beat.stop()
    assert not client.exists(keys.lister("j1"))
    store.finish_listing("j1")
    assert store.get("j1", stall_after=3600)["state"] == "queued"  # listed in full: nothing missing


def test_dead_letter_keeps_raw_bytes_and_reason(store, client):
    assert store.dead_letter("q1", b"\xff\x00junk", "not UTF-8 text", "w1") == 1
    assert store.dead_letter("q1", "second", "not JSON", "w1") == 2
    newest, oldest = (json.loads(x) for x in client.lrange(keys.dead_letter("q1"), 0, -1))
    assert (newest["message"], newest["reason"], newest["size"]) == ("second", "not JSON", 6)
    assert (oldest["message"], oldest["size"], oldest["worker"]) == ("\\xff\x00junk", 6, "w1")


def test_unknown_job(store, client):
    with pytest.raises(JobNotFound, match="job 'nope' is not known to Redis"):
        store.start_chunk("nope", 0, "w1")
    with pytest.raises(JobNotFound, match="job 'nope' is not known to Redis"):
        store.complete_chunk("nope", 0, 1, 0, "m1")
    with pytest.raises(JobNotFound, match="no job 'nope' in Redis") as info:
        store.get("nope")
    assert info.value.exit_code == 4
    assert client.keys("*") == []


def test_complete_chunk_counts_once_and_completes_once(store, client):
    make(store)
    assert store.complete_chunk("j1", 0, 10, 1, "m1") == (True, False)
    assert store.complete_chunk("j1", 0, 10, 1, "m2") == (False, False)
    assert store.finish_listing("j1") is False  # chunk 1 outstanding
    job = store.get("j1")
    assert (job["state"], job["done"], job["errors"], job["chunks_done"]) == ("queued", 10, 1, 1)
    assert (job["chunks_total"], job["models"], job["finished_at"]) == (2, ["m1"], None)
    assert [client.ttl(k) > KEEP_SECONDS for k in job_keys()] == [True, True, False, True, False]
    assert store.complete_chunk("j1", 1, 5, 1, "m0") == (True, True)
    assert store.complete_chunk("j1", 1, 5, 1, "m0") == (False, False)
    assert store.complete_chunk("j1", 0, 10, 1, "m1") == (False, False)
    job = store.get("j1")
    assert (job["state"], job["done"], job["errors"], job["chunks_done"]) == ("done", 15, 2, 2)
    assert job["models"] == ["m0", "m1"]
    assert job["started_at"] <= job["finished_at"]


def test_finish_listing_completes_an_empty_job(store, client):
    make(store, chunks=())
    assert store.finish_listing("j1") is True
    raw = client.hgetall(keys.job("j1"))
    assert (raw["state"], raw["listing"], raw["chunks_total"]) == ("done", "0", "0")
    assert raw["started_at"] == raw["finished_at"]
    assert KEEP_SECONDS - 5 <= client.ttl(keys.job("j1")) <= KEEP_SECONDS  # a done job expires
    assert store.finish_listing("j1") is False


def test_finish_listing_completes_when_chunks_finished_first(store, client):
    make(store)
    store.start_chunk("j1", 0, "w1")
    started = client.hget(keys.job("j1"), "started_at")
    assert store.complete_chunk("j1", 0, 10, 0, "m1") == (True, False)
    assert store.complete_chunk("j1", 1, 6, 0, "m1") == (True, False)  # listing still open
    assert client.hget(keys.job("j1"), "state") == "running"
    assert store.finish_listing("j1") is True
    raw = client.hgetall(keys.job("j1"))
    assert (raw["state"], raw["chunks_total"], raw["started_at"]) == ("done", "2", started)
    assert float(raw["finished_at"]) >= float(started)
    for key in job_keys():
        if client.exists(key):
            assert KEEP_SECONDS - 5 <= client.ttl(key) <= KEEP_SECONDS, key


def test_fail_and_no_later_completion(store, client):
    make(store)
    store.start_chunk("j1", 0, "w1")
    store.complete_chunk("j1", 0, 10, 0, "m1")
    store.fail("j1", "listing stopped: " + "x" * 3000)
    raw = client.hgetall(keys.job("j1"))
    assert raw["state"] == "failed" and raw["error"] == ("listing stopped: " + "x" * 3000)[:2000]
    assert float(raw["finished_at"]) > 0
    for key in job_keys():
        assert KEEP_SECONDS - 5 <= client.ttl(key) <= KEEP_SECONDS, key
    assert store.finish_listing("j1") is False
    assert store.complete_chunk("j1", 1, 6, 0, "m1") == (True, False)
    job = store.get("j1")
    assert (job["state"], job["done"], job["error"][:17]) == ("failed", 16, "listing stopped: ")


def test_completion_sets_expiry_on_all_job_keys(store, client):
    make(store, chunks=(3,))
    store.finish_listing("j1")
    store.start_chunk("j1", 0, "w1")
    assert [client.ttl(k) > KEEP_SECONDS for k in job_keys()] == [True, False, True, False, True]
    assert store.complete_chunk("j1", 0, 3, 0, "m1") == (True, True)
    for key in job_keys():
        assert KEEP_SECONDS - 5 <= client.ttl(key) <= KEEP_SECONDS, key


def test_get_is_typed(store):
    make(store)
    store.start_chunk("j1", 0, "w2")
    store.start_chunk("j1", 1, "w1")
    store.finish_listing("j1")
    store.complete_chunk("j1", 0, 10, 2, "m1")
    store.complete_chunk("j1", 1, 6, 0, "m1")
    job = store.get("j1")
    assert {k: job[k] for k in ("job_id", "state", "total", "done", "errors", "listing_complete",
                                "chunks_total", "chunks_enqueued", "chunks_done", "dest", "queue",
                                "models", "workers", "error", "eta_seconds")} == {
        "job_id": "j1", "state": "done", "total": 16, "done": 16, "errors": 2,
        "listing_complete": True, "chunks_total": 2, "chunks_enqueued": 2, "chunks_done": 2,
        "dest": "mem://out", "queue": "q1", "models": ["m1"], "workers": ["w1", "w2"],
        "error": None, "eta_seconds": None}
    assert all(isinstance(job[k], float) for k in ("submitted_at", "started_at", "finished_at"))
    assert job["seconds"] == round(job["finished_at"] - job["started_at"], 3)


def test_job_view_rate_and_eta():
    raw = {"job_id": "j", "state": "running", "total": "130", "done": "30", "errors": "",
           "listing": "0", "chunks_total": "3", "started_at": "100.0", "finished_at": "110.0"}
    job = job_view(raw, {"b", "a"}, ["w"])
    assert (job["seconds"], job["images_per_second"], job["eta_seconds"]) == (10.0, 3.0, 33.3)
    assert (job["errors"], job["chunks_total"], job["models"]) == (None, 3, ["a", "b"])
    job = job_view({**raw, "listing": "1"})
    assert (job["chunks_total"], job["eta_seconds"], job["listing_complete"]) == (None, None, False)
    assert job_view({"state": "queued", "done": "0"})["images_per_second"] == 0.0


def test_success_summary_and_write_success(store):
    make(store, chunks=(4,))
    store.start_chunk("j1", 0, "w1")
    store.finish_listing("j1")
    store.complete_chunk("j1", 0, 4, 1, "m1")
    storage = MemoryStorage("memory://jobstore-test")
    summary = write_success(store, storage, "j1")
    assert summary == success_summary(store.get("j1"))
    assert list(summary) == ["job_id", "state", "total", "done", "errors", "skipped", "chunks_total",
                             "models", "workers", "queue", "submitted_at", "started_at",
                             "finished_at", "seconds", "images_per_second"]
    assert {k: summary[k] for k in ("job_id", "state", "total", "done", "errors", "chunks_total",
                                    "models", "workers", "queue")} == {
        "job_id": "j1", "state": "done", "total": 4, "done": 4, "errors": 1, "chunks_total": 1,
        "models": ["m1"], "workers": ["w1"], "queue": "q1"}
    data = storage.read("j1/_SUCCESS")
    assert data.endswith(b"}\n") and json.loads(data) == summary
    assert list(storage.list()) == ["j1/_SUCCESS"]


def test_job_ids():
    assert check_job_id("a.b_c-1") == "a.b_c-1"
    for bad in ("", "-x", "a/b", "x" * 129):
        with pytest.raises(ConfigError, match="Received"):
            check_job_id(bad)
    assert check_job_id(new_job_id()) and len(new_job_id()) == len("20250101-000000-abcdef")
