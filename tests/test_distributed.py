"""Distributed labeling end to end: a real Redis, real worker processes, S3 over HTTP.

Nothing is mocked: workers are ``bulklabel worker`` processes (Celery, solo pool) started
here, the broker is a private redis-server (password-protected, restartable), S3 is moto's
HTTP server. Every test checks the one invariant that matters: each image ends with
exactly one record, whatever happened to the workers or to Redis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bulklabel import keys
from bulklabel.sinks import read_records

from conftest import (
    CLASSES,
    REDIS_PASSWORD,
    ROOT,
    assert_exactly_once,
    color_photo,
    encoded,
    job_hash,
    job_id_of,
    make_images,
    run_cli,
    shard_records,
    submit,
)
from services import RedisServer, Worker, environ_of, wait_for

pytestmark = pytest.mark.slow


# --- fixtures -------------------------------------------------------------------------


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
    bucket = main_worker.bucket
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
    written = {k for k in keys_after if k.startswith("labels/") and not k.startswith("labels/run/_index/")}
    assert written == {f"labels/run/{job_id}/part-{i:06d}.jsonl" for i in range(4)} | {
        f"labels/run/{job_id}/_SUCCESS", f"labels/run/{job_id}/_JOB"}
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


# --- job lifecycle --------------------------------------------------------------------


def cli(broker, *args, env=None):
    return run_cli(*args, env={"BULKLABEL_REDIS_URL": broker.url, **(env or {})})


def move_queue(broker, source: str, target: str) -> int:
    """Hand every message waiting on queue ``source`` to the workers of ``target``."""
    client, moved = broker.client(), 0
    while client.lmove(source, target, "RIGHT", "LEFT") is not None:
        moved += 1
    return moved


def test_chunk_that_cannot_be_saved_fails_the_job(broker, main_worker, tmp_path):
    """Storage refuses the shard on every delivery: the chunk is delivered again (with a pause)
    up to BULKLABEL_MAX_DELIVERIES times, then the job is failed with the reason."""
    make_images(tmp_path / "in", 3)
    (tmp_path / "out" / "blocked" / "part-000000.jsonl").mkdir(parents=True)  # a folder in the way
    result = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--queue", "main",
                    "--job-id", "blocked", "--wait")
    assert result.returncode == 1 and "job blocked failed" in result.stderr
    status = cli(broker, "status", "blocked")
    assert status.returncode == 1
    assert "job blocked: failed" in status.stdout
    assert "saving chunk 0 failed (IsADirectoryError" in status.stdout
    assert "on each of 3 deliveries" in status.stdout
    assert broker.client().hget(keys.deliveries("blocked"), "0") == "3"
    assert "delivering it again in 3 s" in main_worker.log()


def test_junk_on_the_queue_is_moved_aside_and_the_worker_keeps_serving(broker, main_worker, tmp_path):
    import redis

    pid = main_worker.children()[0]["pid"]
    raw = redis.Redis.from_url(broker.url)
    junk = [b"\xff\xfe not UTF-8", b"plain text, not JSON", b"[1, 2, 3]", b'{"body": "x"}']
    dead = keys.dead_letter("main")
    before = raw.llen(dead)  # the session's worker may have moved other messages aside already
    for item in junk:
        raw.lpush("main", item)
    wait_for(lambda: raw.llen(dead) >= before + len(junk), 30, "the junk on the dead-letter list")
    entries = [json.loads(x) for x in raw.lrange(dead, 0, -1)]
    assert {e["reason"] for e in entries[:4]} == {
        "not UTF-8 text", "not JSON (Expecting value: line 1 column 1 (char 0))",
        "JSON list, not a message envelope",
        "JSON object that is not a message envelope (no body/properties/delivery_tag)"}
    assert {e["size"] for e in entries[:4]} == {len(j) for j in junk}
    log = main_worker.log()
    assert f"moved a message aside from queue 'main' to bulklabel:dead:main ({len(junk[0])} bytes, starting " in log
    assert [kid["pid"] for kid in main_worker.children()] == [pid]  # not restarted
    assert "restarting" not in log
    truth = make_images(tmp_path / "in", 4)
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "main", "--wait"))
    assert_exactly_once(shard_records(tmp_path / "out" / job_id), truth)


def test_cancel_drops_the_queued_chunks(broker, main_worker, tmp_path):
    make_images(tmp_path / "in", 4)
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "parked", "--chunk-size", "1"))
    done = cli(broker, "cancel", job_id, "--reason", "wrong model")
    assert done.returncode == 0 and f"job {job_id} cancelled" in done.stderr
    status = cli(broker, "status", job_id, "--json")
    job = json.loads(status.stdout)
    assert status.returncode == 1 and (job["state"], job["error"]) == ("cancelled", "wrong model")
    again = cli(broker, "cancel", job_id)
    assert again.returncode == 0 and "already cancelled" in again.stderr
    assert move_queue(broker, "parked", "main") == 4  # now the workers reach the chunks
    wait_for(lambda: main_worker.log().count(f"job {job_id} is cancelled: dropping its chunk") == 4, 30,
             "the chunks to be dropped")
    assert [p.name for p in (tmp_path / "out" / job_id).iterdir()] == ["_JOB"]  # no shard written
    assert broker.client().hgetall(keys.deliveries(job_id)) == {}
    assert cli(broker, "cancel", "no-such-job").returncode == 4
    (tmp_path / "empty").mkdir()
    finished = job_id_of(submit(broker, str(tmp_path / "empty"), "--out", str(tmp_path / "out")))
    late = cli(broker, "cancel", finished)
    assert late.returncode == 1 and "already ended (done)" in late.stderr


def test_status_shows_a_job_nobody_serves_as_stalled(broker, tmp_path):
    make_images(tmp_path / "in", 2)
    job_id = job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                              "--queue", "unserved"))
    fresh = cli(broker, "status", job_id, env={"BULKLABEL_VISIBILITY_TIMEOUT": "60"})
    assert fresh.returncode == 0 and f"job {job_id}: queued" in fresh.stdout
    time.sleep(1.2)
    stalled = cli(broker, "status", job_id, "--json", env={"BULKLABEL_VISIBILITY_TIMEOUT": "1"})
    job = json.loads(stalled.stdout)
    assert stalled.returncode == 1 and job["state"] == "stalled" and job["stalled"] is True
    assert "no live worker serves queue 'unserved'" in job["error"]
    assert "bulklabel worker --queue unserved" in job["error"]
    broker.client().delete("unserved")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_listing_fails_the_job_and_its_chunks_are_dropped(broker, main_worker, tmp_path, signum):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4000):
        (folder / f"{i:05d}.jpg").touch()
    queue = f"interrupted-{signum}"
    job_id = f"cut-{signum}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bulklabel", "submit", str(folder), "--out", str(tmp_path / "out"),
         "--queue", queue, "--chunk-size", "1", "--job-id", job_id],
        env={**env, "BULKLABEL_REDIS_URL": broker.url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    wait_for(lambda: int(job_hash(broker, job_id).get("chunks_enqueued", 0)) >= 20, 60, "the listing to start",
             interval=0.01)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    expected = 128 + signum if signum == signal.SIGTERM else 130
    assert process.returncode == expected, (process.returncode, err[-3000:])
    job = job_hash(broker, job_id)
    sent = int(re.match(r"listing interrupted after (\d+) chunks", job["error"]).group(1))
    assert 19 <= sent < 4000 and job["state"] == "failed" and job["listing"] == "1"
    assert int(job["chunks_enqueued"]) in (sent, sent + 1)  # the signal may fall between count and send
    name = signal.Signals(signum).name
    assert job["error"] == f"listing interrupted after {sent} chunks ({sent} images): stopped by {name}"
    assert f"stopped by {name}" in err or signum == signal.SIGINT
    status = cli(broker, "status", job_id)
    assert status.returncode == 1 and "listing interrupted after" in status.stdout
    if signum == signal.SIGTERM:  # the chunks already queued are dropped by the workers
        assert move_queue(broker, queue, "main") == sent
        wait_for(lambda: main_worker.log().count(f"job {job_id} is failed: dropping its chunk") == sent, 60,
                 "the chunks to be dropped")
        assert not list((tmp_path / "out" / job_id).glob("part-*"))
    broker.client().delete(queue)


def test_reusing_a_job_id_over_old_results_needs_replace(broker, tmp_path):
    make_images(tmp_path / "in", 2)
    stale = tmp_path / "out" / "reused" / "part-000007.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"source": "/old/photo.jpg"}\n')
    refused = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--job-id", "reused",
                     "--queue", "nobody")
    assert refused.returncode == 2
    assert "already holds results (reused/part-000007.jsonl ...)" in refused.stderr and "--replace" in refused.stderr
    assert not broker.client().exists(keys.job("reused")) and stale.exists()
    replaced = submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--job-id", "reused",
                      "--queue", "nobody", "--replace")
    assert job_id_of(replaced) == "reused" and "removed 1 files" in replaced.stderr
    assert not stale.exists()


def test_worker_refuses_a_destination_outside_allow_dest(broker, main_worker, tmp_path_factory):
    inside = tmp_path_factory.mktemp("allowed")
    make_images(inside / "in", 2)
    outside = Path(tempfile.mkdtemp(prefix="bulklabel-outside-", dir=os.path.dirname(ROOT)))
    try:
        result = submit(broker, str(inside / "in"), "--out", str(outside), "--queue", "main", "--wait")
        assert result.returncode == 1
        job_id = result.stdout.strip().splitlines()[-1]
        assert "is not under --allow-dest" in job_hash(broker, job_id)["error"]
        written = [p.relative_to(outside).as_posix() for p in outside.rglob("*") if p.is_file()]
        assert written == [f"{job_id}/_JOB"]  # what the submit asked for; no worker wrote anything
        assert f"{str(outside)!r} is not under --allow-dest" in main_worker.log()
    finally:
        shutil.rmtree(outside)


def test_listing_rides_out_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    try:
        folder = tmp_path / "many"
        folder.mkdir()
        for i in range(1000):
            (folder / f"{i:05d}.jpg").touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "bulklabel", "submit", str(folder), "--out", str(tmp_path / "out"),
             "--queue", "later", "--chunk-size", "1", "--job-id", "restarted"],
            env={**env, "BULKLABEL_REDIS_URL": server.url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        wait_for(lambda: int(server.client().hget(keys.job("restarted"), "chunks_enqueued") or 0) >= 20, 60,
                 "the listing to start", interval=0.01)
        server.restart(pause=3)
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        job = server.client().hgetall(keys.job("restarted"))
        assert (job["state"], job["listing"], job["chunks_total"], job["total"]) == ("queued", "0", "1000", "1000")
        assert server.client().llen("later") in (1000, 1001)  # a publish retried after a lost reply may
        # queue a chunk twice: workers drop the second delivery (counted once)
    finally:
        server.stop()
