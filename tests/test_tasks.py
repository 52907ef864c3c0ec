"""``process_chunk`` and the Celery task wrapper: a real engine and model, the real job store on
Redis (db 12 of 127.0.0.1:6379, flushed around each test), in-memory result storage."""

from __future__ import annotations

import json
import logging
import uuid

import numpy as np
import pytest

from bulklabel import keys
from bulklabel.chunks import ChunkMessage
from bulklabel.jobs import JobStore
from bulklabel.options import EngineOptions
from bulklabel.queue import make_app
from bulklabel.storage import open_reader, open_storage
from bulklabel.storage.memory import MemoryStorage
from worker.inference.engine import Engine
from worker.inference.models import load_model
from worker.serving.tasks import WorkerContext, process_chunk, register

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
    ctx.jobs.add_chunk(job_id, len(sources))
    if finish:
        assert ctx.jobs.finish_listing(job_id) is False  # the chunk is outstanding
    return ChunkMessage(job_id, 0, tuple(sources), dest)


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
    assert list(storage.list()) == ["j1/_SUCCESS", "j1/part-000000.jsonl"]
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
        assert ctx.jobs.start_chunk("j1", 0, worker) == (int(worker[-1]), False)
    monkeypatch.setattr(ctx.engine, "run", lambda *a, **k: pytest.fail("an abandoned chunk must not run"))
    assert process_chunk(ctx, message) == "abandoned"
    out = shard(message)
    assert [r["source"] for r in out] == sources
    reason = ("chunk abandoned after 2 deliveries: the workers labeling it died "
              "(an input may crash the decoder or exhaust memory)")
    assert all((r["error"], r["label"], r["top_k"]) == (reason, None, []) for r in out)
    assert counts(ctx) == ("done", 5, 5, 1)
    assert json.loads(open_storage(message.dest).read("j1/_SUCCESS"))["errors"] == 5


def test_unknown_job_is_dropped(ctx, sources, client):
    message = ChunkMessage("expired", 3, tuple(sources), f"memory://tasks-{uuid.uuid4().hex}")
    assert process_chunk(ctx, message) == "dropped"
    assert list(open_storage(message.dest).list()) == []
    assert client.keys("*") == []


def test_storage_that_recovers_is_retried(ctx, sources):
    message = new_job(ctx, sources)
    flaky = ctx._storages[message.dest] = FlakyStorage(open_storage(message.dest), failures=2)
    assert process_chunk(ctx, message) == "labeled"
    assert flaky.writes == [message.shard_key] * 3 + ["j1/_SUCCESS"]
    assert [r["source"] for r in shard(message)] == sources
    assert counts(ctx) == ("done", 5, 1, 1)


def test_storage_down_longer_than_retry_for_raises(ctx, sources):
    """Today's behaviour: the task raises once ``retry_for`` is spent. The chunk is not counted,
    so a redelivery (or a re-run) can still label it."""
    ctx.retry_for = 1.0
    message = new_job(ctx, sources)
    flaky = ctx._storages[message.dest] = FlakyStorage(open_storage(message.dest), failures=100)
    with pytest.raises(OSError, match="storage unreachable"):
        process_chunk(ctx, message)
    assert flaky.writes == [message.shard_key] * 2  # one retry after 0.5 s, then the deadline
    assert counts(ctx) == ("running", 0, 0, 0)
    assert list(open_storage(message.dest).list()) == []
    flaky.failures = 0
    assert process_chunk(ctx, message) == "labeled"
    assert counts(ctx) == ("done", 5, 1, 1)


def test_task_wrapper_drops_a_message_without_version(ctx, sources, client, caplog):
    task = register(make_app(URL, 30), ctx)
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
    task.run(**message.to_json())  # the current version goes through to process_chunk
    assert counts(ctx) == ("done", 5, 1, 1)
