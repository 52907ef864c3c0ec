"""Distributed labeling end to end: a real Redis, real worker processes, S3 over HTTP.

Nothing is mocked: workers are ``bulklabel worker`` processes (Celery, solo pool) started
here, the broker is a private redis-server (password-protected, restartable), S3 is moto's
HTTP server. Every test checks the one invariant that matters: each image ends with
exactly one record, whatever happened to the workers or to Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bulklabel import keys
from bulklabel.sinks import read_records

from conftest import CLASSES, ROOT, color_photo, encoded, run_cli
from services import RedisServer, Worker, environ_of, wait_for

REDIS_PASSWORD = "redis-secret-never-logged-7f3a"
pytestmark = pytest.mark.slow


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def heavy_model(tmp_path_factory) -> str:
    """A compute-heavy model (random weights) so that a chunk takes about a second."""
    import keras

    keras.utils.set_random_seed(1)
    layers = [keras.layers.Conv2D(128, 3, padding="same", activation="relu") for _ in range(4)]
    model = keras.Sequential([keras.Input((128, 128, 3)), *layers, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    path = str(tmp_path_factory.mktemp("heavy") / "heavy.keras")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def main_worker(broker, color_model, s3_server, tmp_path_factory):
    """One warm CPU worker serving the colour model on queue 'main' (shared by several tests)."""
    log = tmp_path_factory.mktemp("logs") / "main-worker.log"
    worker = Worker(log, color_model.keras_path, "main", broker.url, env=s3_server.env)
    worker.wait_ready()
    yield worker
    worker.stop()


def test_worker_processes_get_no_secret_on_their_command_line(broker, main_worker):
    """The supervisor hands each child its configuration (Redis URL included) through a
    pipe: nothing any local user can read with ps."""
    kids = main_worker.children()
    assert kids
    for kid in kids:
        with open(f"/proc/{kid['pid']}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        assert "worker.serving.process" in cmdline and "--config-fd" in cmdline
        assert REDIS_PASSWORD not in cmdline and "redis://" not in cmdline


@pytest.mark.parametrize("command", [["status", "some-job"], ["results", "some-job", "--out", "x.jsonl"],
                                     ["submit", ".", "--out", "dest"]])
def test_redis_away_is_a_clear_message(tmp_path, command):
    """No traceback and no long hang when Redis does not answer: exit 2, what to do."""
    import time

    from conftest import free_port

    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    t = time.monotonic()
    result = run_cli(*command, cwd=tmp_path, env={"BULKLABEL_REDIS_URL": url}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr and REDIS_PASSWORD not in result.stderr
    assert time.monotonic() - t < 12


def submit(broker: RedisServer, *args: str, env: dict | None = None, timeout: float = 240):
    return run_cli("submit", *args, env={"BULKLABEL_REDIS_URL": broker.url, **(env or {})},
                   timeout=timeout)


def job_id_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def job_hash(broker: RedisServer, job_id: str) -> dict:
    return broker.client().hgetall(keys.job(job_id))


def shard_records(folder: Path) -> list[dict]:
    out = []
    for shard in sorted(folder.glob("part-*.jsonl")):
        out += [json.loads(line) for line in shard.read_text().splitlines()]
    return out


def assert_exactly_once(records: list[dict], expected_sources) -> None:
    sources = [r["source"] for r in records]
    assert len(sources) == len(set(sources)), "a source has more than one record"
    assert set(sources) == set(expected_sources)


def make_images(folder: Path, n: int, seed: int = 0, size=(60, 80)) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        name = CLASSES[i % 3]
        path = folder / f"img {i:03d}.jpg"
        path.write_bytes(encoded(color_photo(name, rng, size)))
        truth[str(path)] = name
    return truth


# --- jobs -----------------------------------------------------------------------------


def test_names_with_unicode_line_separators_merge_whole(broker, main_worker, tmp_path):
    """U+2028, U+2029 and U+0085 are legal in file names and stand raw in JSONL: results
    splits lines on \\n only, so each such image still has exactly one record."""
    truth = make_images(tmp_path / "in", 3)
    names = {}
    for (path, label), odd in zip(truth.items(), ("\u2028", "\u2029", "\u0085")):
        renamed = Path(path).with_name(f"line{odd}break.jpg")
        os.rename(path, renamed)
        names[str(renamed)] = label
    result = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--queue", "main",
                    "--wait")
    job_id = job_id_of(result)
    merged = tmp_path / "all.jsonl"
    res = run_cli("results", job_id, "--out", str(merged), env={"BULKLABEL_REDIS_URL": broker.url})
    assert res.returncode == 0, res.stderr
    records = read_records(merged)
    assert len(records) == 3
    assert {r["source"]: r["label"] for r in records} == names


def test_local_job_end_to_end(broker, main_worker, tmp_path):
    truth = make_images(tmp_path / "in", 23)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    dest = tmp_path / "out"
    result = submit(broker, str(tmp_path / "in"), "--out", str(dest), "--queue", "main",
                    "--chunk-size", "5", "--wait", "--progress")
    job_id = job_id_of(result)
    assert job_id in result.stderr  # the id is announced before waiting, and printed last
    assert "24/24 images, 1 errors" in result.stderr and "/s" in result.stderr  # the --wait bar

    folder = dest / job_id
    shards = sorted(p.name for p in folder.glob("part-*.jsonl"))
    assert shards == [f"part-{i:06d}.jsonl" for i in range(5)]
    records = shard_records(folder)
    assert_exactly_once(records, [*truth, str(tmp_path / "in" / "broken.png")])
    by_source = {r["source"]: r for r in records}
    assert all(by_source[s]["label"] == label for s, label in truth.items())
    assert "not a decodable image" in by_source[str(tmp_path / "in" / "broken.png")]["error"]
    assert all(r["model"].startswith("colors@") for r in records)

    success = json.loads((folder / "_SUCCESS").read_text())
    assert success["state"] == "done" and success["total"] == 24 and success["done"] == 24
    assert success["errors"] == 1 and success["models"] == [records[0]["model"]]

    status = run_cli("status", job_id, "--json", env={"BULKLABEL_REDIS_URL": broker.url})
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert {k: state[k] for k in ("job_id", "state", "total", "done", "errors")} == {
        "job_id": job_id, "state": "done", "total": 24, "done": 24, "errors": 1}
    assert state["models"] == success["models"] and len(state["workers"]) == 1

    human = run_cli("status", job_id, env={"BULKLABEL_REDIS_URL": broker.url})
    assert "done" in human.stdout and "24/24" in human.stdout and "colors@" in human.stdout

    merged = tmp_path / "all.csv"
    res = run_cli("results", job_id, "--out", str(merged), env={"BULKLABEL_REDIS_URL": broker.url})
    assert res.returncode == 0, res.stderr
    assert_exactly_once(read_records(merged), by_source)

    for text in (result.stdout, result.stderr, status.stdout, main_worker.log()):
        assert REDIS_PASSWORD not in text


def test_s3_job_reads_and_writes_s3(broker, main_worker, s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    rng = np.random.default_rng(9)
    truth = {}
    for i in range(14):
        key = f"incoming/batch {i % 2}/photo-{i}.jpg"
        name = CLASSES[i % 3]
        client.put_object(Bucket=bucket, Key=key, Body=encoded(color_photo(name, rng)))
        truth[f"s3://{bucket}/{key}"] = name
    # A key with '..' in it is just a name: it must never steer where results are written.
    client.put_object(Bucket=bucket, Key="incoming/../../escape.jpg",
                      Body=encoded(color_photo("red", rng)))
    truth[f"s3://{bucket}/incoming/../../escape.jpg"] = "red"
    client.put_object(Bucket=bucket, Key="incoming/readme.txt", Body=b"skip me")
    listing = tmp_path / "more.txt"
    listing.write_text(f"s3://{bucket}/missing/photo.jpg\n")

    result = submit(broker, f"s3://{bucket}/incoming/", f"@{listing}", "--out",
                    f"s3://{bucket}/labels/run", "--queue", "main", "--chunk-size", "4", "--wait",
                    env=s3_server.env)
    job_id = job_id_of(result)
    keys_after = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    written = {k for k in keys_after if k.startswith("labels/")}
    assert written == {f"labels/run/{job_id}/part-{i:06d}.jsonl" for i in range(4)} | {
        f"labels/run/{job_id}/_SUCCESS"}
    assert "escape.jpg" not in " ".join(k for k in keys_after if not k.startswith("incoming/"))

    out = tmp_path / "s3.parquet"
    res = run_cli("results", job_id, "--out", str(out), env={"BULKLABEL_REDIS_URL": broker.url, **s3_server.env})
    assert res.returncode == 0, res.stderr
    records = read_records(out)
    assert_exactly_once(records, [*truth, f"s3://{bucket}/missing/photo.jpg"])
    by_source = {r["source"]: r for r in records}
    assert by_source[f"s3://{bucket}/missing/photo.jpg"]["error"] == "object not found"
    assert all(by_source[s]["label"] == label for s, label in truth.items())
    for text in (result.stdout, result.stderr, res.stderr, main_worker.log()):
        assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in text


def test_two_workers_share_one_job(broker, main_worker, color_model, tmp_path):
    second = Worker(tmp_path / "second.log", color_model.keras_path, "main", broker.url)
    try:
        second.wait_ready()
        truth = make_images(tmp_path / "in", 60, seed=4, size=(300, 400))
        result = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--queue", "main",
                        "--chunk-size", "3", "--wait")
        job_id = job_id_of(result)
        records = shard_records(tmp_path / "out" / job_id)
        assert_exactly_once(records, truth)
        assert all(r["label"] == truth[r["source"]] for r in records)
        workers = broker.client().smembers(keys.workers(job_id))
        assert len(workers) == 2, workers
    finally:
        second.stop()


def test_empty_job_completes_at_once(broker, tmp_path):
    (tmp_path / "empty").mkdir()
    job_id = job_id_of(submit(broker, str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                              "--queue", "nobody"))
    success = json.loads((tmp_path / "out" / job_id / "_SUCCESS").read_text())
    assert success["state"] == "done" and success["total"] == 0


def test_job_ids_and_destinations_are_checked(broker, tmp_path):
    make_images(tmp_path / "in", 2)
    bad = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--job-id", "../escape")
    assert bad.returncode == 2 and "job id" in bad.stderr
    first = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--job-id", "nightly-1",
                   "--queue", "nobody")
    assert job_id_of(first) == "nightly-1"
    again = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--job-id", "nightly-1")
    assert again.returncode == 2 and "already exists" in again.stderr
    nowhere = run_cli("submit", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                      env={"BULKLABEL_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert nowhere.returncode == 2 and "cannot reach Redis" in nowhere.stderr
    missing = submit(broker, str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "source not found" in missing.stderr


def test_producer_never_imports_tensorflow(broker, tmp_path):
    """submit/status/results run where TensorFlow and Keras cannot even be imported."""
    poison = tmp_path / "poison"
    for name in ("tensorflow", "keras"):
        (poison / name).mkdir(parents=True)
        (poison / name / "__init__.py").write_text("raise ImportError('the producer imported me')\n")
    make_images(tmp_path / "in", 3)
    env = {"PYTHONPATH": f"{poison}{os.pathsep}{ROOT}"}
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "nobody", env=env))
    status = run_cli("status", job_id, "--json", env={"BULKLABEL_REDIS_URL": broker.url, **env})
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "queued"
    assert json.loads(status.stdout)["total"] == 3


def test_pickle_messages_are_refused(broker, main_worker, tmp_path):
    from celery import Celery

    app = Celery(broker=broker.url, set_as_current=False)
    app.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    app.send_task("bulklabel.classify_chunk", kwargs={"job_id": "x", "chunk": 0, "sources": [],
                                                      "dest": str(tmp_path)}, queue="main")
    wait_for(lambda: "application/x-python-serialize" in main_worker.log(), 30, "the refusal")
    assert main_worker.process.poll() is None
    # ... and the worker goes on serving JSON jobs.
    truth = make_images(tmp_path / "in", 4)
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "main", "--wait"))
    assert_exactly_once(shard_records(tmp_path / "out" / job_id), truth)


# --- failures -------------------------------------------------------------------------


def _chunk_in_progress(broker, job_id):
    client = broker.client()
    started = set(client.hkeys(keys.deliveries(job_id)))
    done = client.smembers(keys.chunks_done(job_id))
    return started - done


def test_worker_killed_mid_chunk_loses_nothing(broker, heavy_model, tmp_path):
    env = {"BULKLABEL_VISIBILITY_TIMEOUT": "6"}
    truth = make_images(tmp_path / "in", 48, seed=5)
    first = Worker(tmp_path / "a.log", heavy_model, "heavy", broker.url, "--threads", "1", env=env)
    first.wait_ready()
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "heavy", "--chunk-size", "12"))
    victim = wait_for(lambda: _chunk_in_progress(broker, job_id), 60, "a chunk in progress")
    first.kill_group()  # the node dies: supervisor and child, mid-chunk
    assert _chunk_in_progress(broker, job_id) == victim
    second = Worker(tmp_path / "b.log", heavy_model, "heavy", broker.url, "--threads", "1", env=env)
    try:
        wait_for(lambda: job_hash(broker, job_id).get("state") == "done", 180, "the job to finish",
                 interval=0.5)
    finally:
        second.stop()
    records = shard_records(tmp_path / "out" / job_id)
    assert_exactly_once(records, truth)
    assert all(r["error"] is None for r in records)
    deliveries = broker.client().hgetall(keys.deliveries(job_id))
    assert {int(deliveries[c]) for c in victim} == {2}  # redelivered once, counted once
    state = job_hash(broker, job_id)
    assert int(state["done"]) == 48 and int(state["chunks_done"]) == 4


def test_poison_chunk_is_not_retried_forever(broker, heavy_model, tmp_path):
    env = {"BULKLABEL_VISIBILITY_TIMEOUT": "4", "BULKLABEL_MAX_DELIVERIES": "2"}
    truth = make_images(tmp_path / "in", 10, seed=6)
    worker = Worker(tmp_path / "w.log", heavy_model, "poison", broker.url, "--threads", "1", env=env)
    try:
        worker.wait_ready()
        job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                  "--queue", "poison", "--chunk-size", "10"))
        for delivery in (1, 2):  # each time the chunk starts, its worker process dies
            wait_for(lambda n=delivery: broker.client().hget(keys.deliveries(job_id), "0") == str(n),
                     120, f"delivery {delivery}", interval=0.02)
            child = wait_for(lambda: worker.children(), 30, "the worker child")[0]
            os.kill(child["pid"], signal.SIGKILL)  # the supervisor restarts it
        wait_for(lambda: job_hash(broker, job_id).get("state") == "done", 120, "the job to end",
                 interval=0.5)
    finally:
        worker.stop()
    records = shard_records(tmp_path / "out" / job_id)
    assert_exactly_once(records, truth)
    assert all("abandoned after 2 deliveries" in r["error"] for r in records)
    assert job_hash(broker, job_id)["errors"] == "10"
    assert "restarting" in worker.log()


def test_redis_restart_mid_job(heavy_model, tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    env = {"BULKLABEL_VISIBILITY_TIMEOUT": "8"}
    worker = Worker(tmp_path / "w.log", heavy_model, "restart", server.url, "--threads", "1", env=env)
    try:
        worker.wait_ready()
        truth = make_images(tmp_path / "in", 36, seed=7)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "bulklabel", "submit", str(tmp_path / "in"), "--out",
             str(tmp_path / "out"), "--queue", "restart", "--chunk-size", "6", "--wait"],
            env={**os.environ, "BULKLABEL_REDIS_URL": server.url}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        wait_for(lambda: server.client().keys("bulklabel:job:*:chunks_done")
                 and server.client().scard(server.client().keys("bulklabel:job:*:chunks_done")[0]) >= 2,
                 120, "two chunks done", interval=0.2)
        server.restart(pause=3)
        out, err = waiting.communicate(timeout=240)
        assert waiting.returncode == 0, err
        job_id = out.strip().splitlines()[-1]
        assert f"job {job_id} done: 36 images" in err
        # The worker really lost its broker mid-job, and reconnected by itself.
        assert "Connection to broker lost" in worker.log()
    finally:
        worker.stop()
        server.stop()
    records = shard_records(tmp_path / "out" / job_id)
    assert_exactly_once(records, truth)


# --- the worker process itself --------------------------------------------------------


def test_one_pinned_process_per_gpu_restarted_when_it_dies(broker, color_model, tmp_path):
    """--gpus 0,1 on this CPU-only machine: two children, each with its own
    CUDA_VISIBLE_DEVICES set before TensorFlow started; a killed child comes back."""
    worker = Worker(tmp_path / "gpus.log", color_model.keras_path, "gpus", broker.url, gpus="0,1")
    try:
        kids = worker.wait_ready(processes=2)
        assert sorted(k["device"] for k in kids) == ["0", "1"]
        for kid in kids:
            assert environ_of(kid["pid"])["CUDA_VISIBLE_DEVICES"] == kid["device"]
        victim = next(k for k in kids if k["device"] == "1")
        os.kill(victim["pid"], signal.SIGKILL)
        back = wait_for(lambda: [k for k in worker.children()
                                 if k["device"] == "1" and k["pid"] != victim["pid"]], 90, "a new child")
        assert environ_of(back[0]["pid"])["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        code = worker.stop()
    assert code == 0  # SIGTERM: warm shutdown of both children, clean exit


def test_worker_with_a_bad_model_fails_fast(broker, tmp_path):
    worker = Worker(tmp_path / "bad.log", str(tmp_path / "missing.keras"), "bad", broker.url)
    assert worker.process.wait(120) == 3
    assert "model not found" in worker.log() and "stopping" in worker.log()


def test_sigterm_finishes_the_current_chunk_then_exits(broker, heavy_model, tmp_path):
    truth = make_images(tmp_path / "in", 24, seed=8)
    worker = Worker(tmp_path / "a.log", heavy_model, "graceful", broker.url, "--threads", "1")
    worker.wait_ready()
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "graceful", "--chunk-size", "8"))
    current = wait_for(lambda: _chunk_in_progress(broker, job_id), 60, "a chunk in progress")
    os.kill(worker.process.pid, signal.SIGTERM)  # as systemd or docker stop would
    assert worker.process.wait(120) == 0
    client = broker.client()
    assert current <= client.smembers(keys.chunks_done(job_id))  # finished, not abandoned
    assert job_hash(broker, job_id)["state"] == "running"  # the rest waits in the queue
    successor = Worker(tmp_path / "b.log", heavy_model, "graceful", broker.url, "--threads", "1")
    try:
        wait_for(lambda: job_hash(broker, job_id).get("state") == "done", 180, "the job to finish",
                 interval=0.5)
    finally:
        successor.stop()
    assert_exactly_once(shard_records(tmp_path / "out" / job_id), truth)
    assert all(int(n) == 1 for n in client.hvals(keys.deliveries(job_id)))  # nothing redone
