"""``process_chunk`` and the Celery task wrapper: a real engine and model, the real job store on
Redis (db 12 of 127.0.0.1:6379, flushed around each test), in-memory result storage."""

from __future__ import annotations

import json
import logging
import time
import uuid

import numpy as np
import pytest

from bulklabel import keys, records
from bulklabel.chunks import ChunkMessage
from bulklabel.jobs import JobStore
from bulklabel.options import EngineOptions
from bulklabel.queue import make_app
from bulklabel.storage import open_reader, open_storage
from bulklabel.storage.memory import MemoryStorage
from worker.inference.engine import Engine
from worker.inference.models import load_model
from worker.serving import guard
from worker.serving.tasks import RetryLater, WorkerContext, process_chunk, register, retry_times

from conftest import CLASSES, color_photo, encoded

REDIS_DB = 12
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


@pytest.fixture(scope="module")
def engine(color_model):
    return Engine(load_model(color_model.keras_path), open_reader(), EngineOptions(batch_size=4))


@pytest.fixture
def client(scratch_redis):
    return scratch_redis


@pytest.fixture
def ctx(engine, client):
    return WorkerContext(engine, JobStore(client), "w1", max_deliveries=2, retry_for=3.0)


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(7)
    paths = []
    for i, name in enumerate(CLASSES + ["broken", "blue"]):
        path = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        path.write_bytes(b"not an image" if name == "broken" else
                         encoded(color_photo(name, rng), "PNG" if i % 2 else "JPEG"))
        paths.append(str(path))
    return paths  # blue, green, red, broken, blue


def new_job(ctx, sources, job_id="j1", finish=True) -> ChunkMessage:
    dest = f"memory://tasks-{uuid.uuid4().hex}"
    ctx.jobs.create(job_id, dest, "q1", ["/photos"])
    ctx.jobs.add_chunk(job_id, 0, len(sources))
    if finish:
        assert ctx.jobs.finish_listing(job_id) is False  # the chunk is outstanding
    return ChunkMessage(job_id, 0, tuple(sources), dest)


def results_keys(storage) -> list[str]:
    """The keys of the job results (the label index beside them left out)."""
    return [k for k in storage.list() if not k.startswith("_index/")]


def shard(message):
    return [json.loads(line) for line in open_storage(message.dest).read(message.shard_key).splitlines()]


def counts(ctx, job_id="j1"):
    job = ctx.jobs.get(job_id)
    return job["state"], job["done"], job["errors"], job["chunks_done"]


class FlakyStorage:
    """MemoryStorage whose ``write`` raises OSError the first ``failures`` times."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.writes = inner, failures, []

    def write(self, key, data):
        self.writes.append(key)
        if len(self.writes) <= self.failures:
            raise OSError("storage unreachable")
        self.inner.write(key, data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_labels_a_chunk_and_completes_the_job(ctx, sources):
    message = new_job(ctx, sources)
    assert process_chunk(ctx, message) == "labeled"
    out = shard(message)
    assert [r["source"] for r in out] == sources
    assert [r["label"] for r in out] == ["blue", "green", "red", None, "blue"]
    assert [r["error"] is not None for r in out] == [False, False, False, True, False]
    assert out[3]["top_k"] == [] and all(r["model"] == ctx.model_id for r in out)
    assert counts(ctx) == ("done", 5, 1, 1)
    storage = open_storage(message.dest)
    assert results_keys(storage) == ["j1/_SUCCESS", "j1/part-000000.jsonl"]
    summary = json.loads(storage.read("j1/_SUCCESS"))
    assert {k: summary[k] for k in ("job_id", "state", "total", "done", "errors", "chunks_total",
                                    "models", "workers", "queue")} == {
        "job_id": "j1", "state": "done", "total": 5, "done": 5, "errors": 1, "chunks_total": 1,
        "models": [ctx.model_id], "workers": ["w1"], "queue": "q1"}


def test_job_not_done_while_listing_is_open(ctx, sources):
    message = new_job(ctx, sources, finish=False)
    assert process_chunk(ctx, message) == "labeled"
    assert counts(ctx) == ("running", 5, 1, 1)
    assert list(open_storage(message.dest).list()) == ["j1/part-000000.jsonl"]


def test_duplicate_delivery_is_dropped(ctx, sources, monkeypatch):
    message = new_job(ctx, sources, finish=False)
    assert process_chunk(ctx, message) == "labeled"
    before = open_storage(message.dest).read(message.shard_key)
    monkeypatch.setattr(ctx.engine, "run", lambda *a, **k: pytest.fail("a duplicate must not be labeled again"))
    monkeypatch.setattr(MemoryStorage, "write", lambda *a: pytest.fail("a duplicate must not write"))
    assert process_chunk(ctx, message) == "duplicate"
    assert open_storage(message.dest).read(message.shard_key) == before
    assert counts(ctx) == ("running", 5, 1, 1)
    assert ctx.jobs.r.hget(keys.deliveries("j1"), "0") == "2"


def test_chunk_that_killed_its_workers_is_abandoned(ctx, sources, monkeypatch):
    message = new_job(ctx, sources)
    for worker in ("dead-1", "dead-2"):  # two earlier deliveries died mid-chunk
        assert ctx.jobs.start_chunk("j1", 0, worker) == (int(worker[-1]), False, "running")
    monkeypatch.setattr(ctx.engine, "run", lambda *a, **k: pytest.fail("an abandoned chunk must not run"))
    assert process_chunk(ctx, message) == "abandoned"
    out = shard(message)
    assert [r["source"] for r in out] == sources
    reason = ("chunk abandoned after 2 deliveries: the workers labeling it died "
              "(an input may crash the decoder or exhaust memory)")
    assert all((r["error"], r["label"], r["top_k"]) == (reason, None, []) for r in out)
    assert counts(ctx) == ("done", 5, 5, 1)
    assert json.loads(open_storage(message.dest).read("j1/_SUCCESS"))["errors"] == 5


def test_fingerprints_go_into_the_shard_and_the_done_job_into_the_index(ctx, sources):
    """A message's fingerprints are copied into its records; completing the job indexes its
    successful records (not the error one) under the worker's model, before _SUCCESS."""
    from bulklabel.index import LabelIndex, digest_pairs

    message = new_job(ctx, sources)
    prints = tuple(f"{i}:{i * 7}" for i in range(len(sources)))
    message = ChunkMessage(message.job_id, 0, message.sources, message.dest, fingerprints=prints)
    assert ChunkMessage.from_json(message.to_json()) == message
    assert process_chunk(ctx, message) == "labeled"
    assert [r["fingerprint"] for r in shard(message)] == list(prints)
    view = LabelIndex(open_storage(message.dest), ctx.model_id).load()
    assert view.jobs == {"j1"} and len(view) == 4  # the broken image is tried again next time
    found = view.contains(digest_pairs(list(sources), list(prints)))
    assert found.tolist() == [True, True, True, False, True]


def test_unknown_job_is_dropped(ctx, sources, client):
    message = ChunkMessage("expired", 3, tuple(sources), f"memory://tasks-{uuid.uuid4().hex}")
    assert process_chunk(ctx, message) == "dropped"
    assert list(open_storage(message.dest).list()) == []
    assert client.keys("*") == []


def test_storage_that_recovers_is_retried(ctx, sources):
    message = new_job(ctx, sources)
    flaky = ctx._storages[message.dest] = FlakyStorage(open_storage(message.dest), failures=2)
    assert process_chunk(ctx, message) == "labeled"
    assert [k for k in flaky.writes if not k.startswith("_index/")] == [message.shard_key] * 3 + ["j1/_SUCCESS"]
    assert [r["source"] for r in shard(message)] == sources
    assert counts(ctx) == ("done", 5, 1, 1)


def test_storage_down_past_retry_for_is_delivered_again_then_fails_the_job(ctx, sources):
    """Within a delivery, storage is retried until ``retry_for`` (the last try at the deadline);
    then the chunk is delivered again later (not counted, nothing acknowledged unaccounted).
    On the last allowed delivery the job fails with the reason."""
    ctx.retry_for = 1.0
    message = new_job(ctx, sources)
    flaky = ctx._storages[message.dest] = FlakyStorage(open_storage(message.dest), failures=100)
    with pytest.raises(RetryLater, match="saving chunk 0 failed .OSError: storage unreachable") as info:
        process_chunk(ctx, message)
    assert info.value.countdown == ctx.retry_pause
    assert flaky.writes == [message.shard_key] * 3  # at 0, 0.5 and 1.0 s
    assert counts(ctx) == ("running", 0, 0, 0)
    assert process_chunk(ctx, message) == "failed"  # delivery 2 of 2
    job = ctx.jobs.get("j1")
    assert job["state"] == "failed"
    assert job["error"] == ("saving chunk 0 failed (OSError: storage unreachable) on each of 2 deliveries")
    assert list(open_storage(message.dest).list()) == []
    assert process_chunk(ctx, message) == "dropped"  # a failed job's chunks are dropped


def test_storage_that_recovers_on_a_later_delivery(ctx, sources):
    ctx.retry_for = 0.2
    message = new_job(ctx, sources)
    flaky = ctx._storages[message.dest] = FlakyStorage(open_storage(message.dest), failures=2)
    with pytest.raises(RetryLater):
        process_chunk(ctx, message)
    assert process_chunk(ctx, message) == "labeled"
    assert [k for k in flaky.writes if not k.startswith("_index/")] == [message.shard_key] * 3 + ["j1/_SUCCESS"]
    assert counts(ctx) == ("done", 5, 1, 1)


def test_a_permanent_storage_error_is_not_retried_in_the_task(ctx, sources, tmp_path):
    ctx.retry_for = 30.0
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "j1").write_text("a file where the job's folder should be")
    message = new_job(ctx, sources)
    message = ChunkMessage("j1", 0, message.sources, str(tmp_path / "dest"))
    t = time.monotonic()
    with pytest.raises(RetryLater, match="saving chunk 0 failed"):
        process_chunk(ctx, message)
    assert time.monotonic() - t < 5  # no 30 s of retries for an error that retrying cannot fix
    assert process_chunk(ctx, message) == "failed"
    assert ctx.jobs.get("j1")["state"] == "failed"


def test_an_engine_failure_is_retried_then_becomes_error_records(ctx, sources, monkeypatch):
    message = new_job(ctx, sources)

    def broken(*args, **kwargs):
        raise ValueError("cannot encode a record")

    monkeypatch.setattr(ctx.engine, "run", broken)
    with pytest.raises(RetryLater, match=r"labeling failed \(ValueError: cannot encode a record\)"):
        process_chunk(ctx, message)
    assert counts(ctx) == ("running", 0, 0, 0)
    assert list(open_storage(message.dest).list()) == []
    assert process_chunk(ctx, message) == "errors"  # the last allowed delivery
    out = shard(message)
    assert [r["source"] for r in out] == sources
    assert {r["error"] for r in out} == {
        "labeling failed (ValueError: cannot encode a record) on each of 2 deliveries of its chunk"}
    assert counts(ctx) == ("done", 5, 5, 1)


def test_an_engine_that_loses_records_is_a_failure(ctx, sources, monkeypatch):
    message = new_job(ctx, sources)
    monkeypatch.setattr(ctx.engine, "run", lambda srcs, emit: emit([records.failure(srcs[0], "m", "x")]))
    with pytest.raises(RetryLater, match="the engine returned 1 records for 5 images"):
        process_chunk(ctx, message)


def test_success_file_lost_after_counting_is_written_by_the_next_delivery(ctx, sources):
    ctx.retry_for = 0.2
    message = new_job(ctx, sources)

    class NoSuccess(FlakyStorage):
        def write(self, key, data):
            self.writes.append(key)
            if key.endswith("_SUCCESS") and self.failures:
                self.failures -= 1
                raise OSError("storage unreachable")
            self.inner.write(key, data)

    flaky = ctx._storages[message.dest] = NoSuccess(open_storage(message.dest), failures=100)
    with pytest.raises(RetryLater, match="job j1 is done but its _SUCCESS could not be written"):
        process_chunk(ctx, message)
    assert counts(ctx) == ("done", 5, 1, 1)
    assert not open_storage(message.dest).exists("j1/_SUCCESS")
    flaky.failures = 0
    assert process_chunk(ctx, message) == "duplicate"
    assert json.loads(open_storage(message.dest).read("j1/_SUCCESS"))["done"] == 5
    flaky.writes.clear()
    assert process_chunk(ctx, message) == "duplicate"
    assert flaky.writes == []  # there already: not written again


def test_job_deleted_mid_chunk_drops_the_chunk(ctx, sources, client, monkeypatch):
    message = new_job(ctx, sources)
    run = ctx.engine.run

    def run_then_forget(*args, **kwargs):
        run(*args, **kwargs)
        client.flushdb()

    monkeypatch.setattr(ctx.engine, "run", run_then_forget)
    assert process_chunk(ctx, message) == "dropped"


def test_cancelled_job_chunks_are_dropped(ctx, sources, monkeypatch):
    message = new_job(ctx, sources)
    ctx.jobs.cancel("j1", "changed my mind")
    monkeypatch.setattr(ctx.engine, "run", lambda *a, **k: pytest.fail("a cancelled job's chunk must not run"))
    assert process_chunk(ctx, message) == "dropped"
    assert list(open_storage(message.dest).list()) == []
    assert ctx.jobs.get("j1")["state"] == "cancelled"


def test_destination_outside_allow_dest_is_refused(ctx, sources, tmp_path, monkeypatch, caplog):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    ctx.allow_dest = (str(allowed), "s3://bucket/labels")
    monkeypatch.setattr(ctx.engine, "run", lambda *a, **k: pytest.fail("a refused chunk must not run"))
    new_job(ctx, sources)
    for dest in (str(tmp_path / "elsewhere"), str(allowed) + "-not", str(allowed / ".." / "x"),
                 str(tmp_path / "link"), "s3://bucket/labels-2", "s3://other/labels", "memory://x"):
        with caplog.at_level(logging.ERROR, logger="bulklabel.worker"):
            assert process_chunk(ctx, ChunkMessage("j1", 0, tuple(sources), dest)) == "refused"
        assert f"{dest!r} is not under --allow-dest" in caplog.text
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "x").exists()
    job = ctx.jobs.get("j1")
    assert job["state"] == "failed" and "is not under --allow-dest" in job["error"]
    assert guard.destination_refusal(str(allowed / "sub"), ctx.allow_dest) is None
    assert guard.destination_refusal(str(allowed), ctx.allow_dest) is None
    assert guard.destination_refusal("s3://bucket/labels/nightly", ctx.allow_dest) is None
    assert guard.destination_refusal("s3://bucket/labels", ctx.allow_dest) is None
    assert guard.destination_refusal("/anything", ()) is None


def test_retry_times_stay_inside_the_visibility_timeout():
    for vis in (4, 30, 600, 3600, 86400):
        times = retry_times(vis)
        assert times["retry_for"] <= max(2.0, vis / 4) and times["retry_for"] <= 120
        assert times["retry_pause"] * 2 < vis or vis < 10


def test_task_wrapper_drops_a_message_without_version(ctx, sources, client, caplog):
    app = make_app(URL, 30)
    guard.install(app, lambda queue, raw, reason: ctx.jobs.dead_letter(queue, raw, reason, ctx.name))
    task = register(app, ctx)
    message = new_job(ctx, sources)
    old = {k: v for k, v in message.to_json().items() if k != "version"}
    before = client.hgetall(keys.job("j1"))
    with caplog.at_level(logging.INFO, logger="bulklabel.worker"):
        assert task.run(**old) is None
    assert client.hgetall(keys.job("j1")) == before and client.hgetall(keys.deliveries("j1")) == {}
    assert list(open_storage(message.dest).list()) == []
    errors = [r for r in caplog.records if r.name == "bulklabel.worker" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("dropping a task message (job 'j1', chunk 0): chunk message from "
                                             "an older producer (it has no version field)")
    assert "version" in errors[0].getMessage()
    dead = [json.loads(x) for x in client.lrange(keys.dead_letter(ctx.queue), 0, -1)]
    assert len(dead) == 1 and dead[0]["reason"].startswith("invalid chunk message: chunk message from an older")
    assert json.loads(dead[0]["message"]) == old
    task.run(**message.to_json())  # the current version goes through to process_chunk
    assert counts(ctx) == ("done", 5, 1, 1)
