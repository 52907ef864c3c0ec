"""Monitoring end to end: the session worker's Prometheus metrics over HTTP, its JSON log
lines, and ``bulklabel exporter``'s queue depth read from the session's real Redis.

The counters of the shared worker only ever grow, so each check reads them before and
after its own job and compares the difference.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bulklabel import __version__, keys, logs

from conftest import ROOT, free_port, job_id_of, make_images, run_cli, submit
from services import wait_for

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset], float]


def scrape(port: int) -> Samples:
    """Every sample at http://127.0.0.1:PORT/metrics, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labels_of(samples: Samples, name: str) -> list[dict]:
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture(scope="module")
def labeled_job(broker, main_worker, tmp_path_factory):
    """One job on the session worker: 7 images and a broken one, in chunks of 3; the worker's
    metrics before it and once its last chunk is accounted for."""
    folder = tmp_path_factory.mktemp("metrics")
    make_images(folder / "in", 7, seed=11)
    (folder / "in" / "broken.jpg").write_bytes(b"not an image at all")
    before = scrape(main_worker.metrics_port)
    started = time.time()
    job_id = job_id_of(submit(broker, str(folder / "in"), "--out", str(folder / "out"), "--queue", "main",
                              "--chunk-size", "3", "--wait"))
    # The job is done once its last chunk is counted; the delivery's metrics follow a moment later.
    want = value(before, "bulklabel_chunks_total", outcome="labeled") + 3
    after = wait_for(lambda: (s := scrape(main_worker.metrics_port))
                     and value(s, "bulklabel_chunks_total", outcome="labeled") >= want and s,
                     20, "the last chunk's metrics")
    return job_id, before, after, started


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_worker_metrics_count_exactly_the_job(labeled_job, main_worker):
    _, before, after, started = labeled_job
    assert delta(before, after, "bulklabel_images_total", outcome="labeled") == 7
    assert delta(before, after, "bulklabel_images_total", outcome="error") == 1
    assert delta(before, after, "bulklabel_chunks_total", outcome="labeled") == 3
    for outcome in ("errors", "abandoned", "duplicate", "dropped", "refused", "failed", "retry"):
        assert ("bulklabel_chunks_total", frozenset({("outcome", outcome)})) in after  # every series, at 0 or more
        assert delta(before, after, "bulklabel_chunks_total", outcome=outcome) == 0, outcome
    assert delta(before, after, "bulklabel_chunk_seconds_count") == 3
    assert delta(before, after, "bulklabel_chunk_seconds_sum") > 0
    assert value(after, "bulklabel_chunk_seconds_bucket", le="+Inf") == value(after, "bulklabel_chunk_seconds_count")
    assert {d["le"] for d in labels_of(after, "bulklabel_chunk_seconds_bucket")} >= {"0.1", "600.0", "+Inf"}
    for stage in ("read", "decode", "predict", "write"):
        assert delta(before, after, "bulklabel_stage_seconds_total", stage=stage) > 0, stage
    assert value(after, "bulklabel_model_load_seconds") > 0
    assert started - 1 <= value(after, "bulklabel_last_chunk_timestamp_seconds") <= time.time() + 1
    [info] = labels_of(after, "bulklabel_worker_info")
    assert info["model_id"].startswith("colors@") and info["version"] == __version__
    assert (info["queue"], info["device"]) == ("main", "cpu")
    assert value(after, "bulklabel_worker_info", **info) == 1
    # Only the fixed labels: no job, chunk or image ever becomes a label.
    names = {label for (_, labels) in after for label, _ in labels}
    assert names <= {"outcome", "stage", "le", "model_id", "queue", "device", "version"}


def test_worker_logs_one_json_object_per_line(labeled_job, main_worker):
    job_id = labeled_job[0]
    lines = [json.loads(line) for line in main_worker.log().splitlines() if line.startswith("{")]
    assert lines, "no JSON log line"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("Z") and datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    [worker] = {line["worker"] for line in lines if "worker" in line}
    assert any(line["message"].startswith("model colors@") and line["worker"] == worker for line in lines)
    chunks = [line for line in lines if line.get("job_id") == job_id]
    assert {line["chunk"] for line in chunks if line["message"].startswith(f"job {job_id} chunk ")} == {0, 1, 2}
    assert all(line["worker"] == worker and line["logger"].startswith("bulklabel") for line in chunks)
    assert any(line["message"] == f"job {job_id} done: 8 images, 1 errors" for line in chunks)


def test_json_formatter_carries_context_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("bulklabel.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning('outside "a" \\ ïmage')
        with logs.context(job_id="j-1", chunk=7, worker="w"):
            try:
                raise ValueError("bad pixels")
            except ValueError:
                logger.exception("chunk failed")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    first, failed, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == 'outside "a" \\ ïmage' and first["level"] == "WARNING"
    assert "job_id" not in first and "job_id" not in after
    assert (failed["job_id"], failed["chunk"], failed["worker"], failed["level"]) == ("j-1", 7, "w", "ERROR")
    assert failed["exc_info"].startswith("Traceback") and "ValueError: bad pixels" in failed["exc_info"]


# --- bulklabel exporter --------------------------------------------------------------


class Exporter:
    """``bulklabel exporter`` in its own process."""

    def __init__(self, broker, *args: str):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
        env["BULKLABEL_REDIS_URL"] = broker.url
        self.process = subprocess.Popen([sys.executable, "-m", "bulklabel", "exporter", "--port", str(self.port),
                                         *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)

    def scrape(self) -> Samples:
        def answer():
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                return scrape(self.port)
            except OSError:
                return None

        return wait_for(answer, 20, "the exporter to answer", interval=0.1)

    def stop(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        assert self.process.returncode == 0, out
        return out


def test_exporter_counts_waiting_and_unacked_messages(broker, main_worker, tmp_path):
    from bulklabel.queue import make_app

    queue = "metrics-parked"
    make_images(tmp_path / "in", 5)
    job_id_of(submit(broker, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--queue", queue,
                     "--chunk-size", "1"))
    app = make_app(broker.url, 3600)
    app.send_task("bulklabel.classify_chunk", kwargs={}, queue=queue, priority=9)  # on a priority list
    client = broker.client()
    assert client.llen(queue) == 5 and client.llen(f"{queue}\x06\x169") == 1
    named = Exporter(broker, "--queue", queue, "--queue", "main", "--log-format", "json")
    found = Exporter(broker)
    try:
        now = named.scrape()
        assert value(now, "bulklabel_queue_messages", queue=queue) == 6
        assert value(now, "bulklabel_queue_unacked_messages", queue=queue) == 0
        assert value(now, "bulklabel_workers", queue=queue) == 0
        assert value(now, "bulklabel_workers", queue="main") == 1
        assert value(now, "bulklabel_dead_letters", queue="main") == client.llen(keys.dead_letter("main"))
        assert value(now, "bulklabel_exporter_redis_up") == 1
        seen = found.scrape()  # by default: the queues of the live workers
        assert value(seen, "bulklabel_workers", queue="main") == 1
        assert {d["queue"] for d in labels_of(seen, "bulklabel_queue_messages")} == {"main"}

        # Two messages delivered and not acknowledged, as a worker holds the chunk it labels.
        with app.connection_for_read() as connection:
            parked = connection.SimpleQueue(queue)
            held = [parked.get_nowait(), parked.get_nowait()]
            now, seen = named.scrape(), found.scrape()
            assert value(now, "bulklabel_queue_messages", queue=queue) == 4
            assert value(now, "bulklabel_queue_unacked_messages", queue=queue) == 2
            assert value(seen, "bulklabel_queue_unacked_messages", queue=queue) == 2  # found by its unacked
            held[0].ack()
            assert value(named.scrape(), "bulklabel_queue_unacked_messages", queue=queue) == 1
            parked.close()
        # Closing the connection gives the unacknowledged message back to the queue.
        now, seen = named.scrape(), found.scrape()
        assert value(now, "bulklabel_queue_messages", queue=queue) == 5
        assert value(now, "bulklabel_queue_unacked_messages", queue=queue) == 0
        assert value(seen, "bulklabel_queue_messages", queue=queue) == 5  # still reported once seen
        lines = [json.loads(line) for line in named.stop().splitlines() if line.startswith("{")]
        assert any(line["message"].startswith("exporter on port") for line in lines)
        assert all(broker.password not in json.dumps(line) for line in lines)
        found.stop()
    finally:
        for exporter in (named, found):
            if exporter.process.poll() is None:
                exporter.process.kill()
                exporter.process.wait()
        client.delete(queue, f"{queue}\x06\x169")


def test_a_port_in_use_fails_fast(broker, main_worker, color_model):
    taken = main_worker.metrics_port
    env = {"BULKLABEL_REDIS_URL": broker.url}
    t = time.monotonic()
    worker = run_cli("worker", "--model", color_model.keras_path, "--gpus", "none", "--queue", "metrics-x",
                     "--metrics-port", str(taken), env=env, timeout=60)
    assert worker.returncode == 2, worker.stderr
    assert f"--metrics-port: port {taken} is already in use" in worker.stderr
    assert "Traceback" not in worker.stderr and time.monotonic() - t < 30  # before any model loads
    # Two GPU processes need PORT and PORT+1: the second is the one taken.
    two = run_cli("worker", "--model", color_model.keras_path, "--gpus", "0,1", "--metrics-port", str(taken - 1),
                  env=env, timeout=60)
    assert two.returncode == 2 and "is already in use" in two.stderr, two.stderr
    assert f"port {taken - 1} " in two.stderr or f"port {taken} " in two.stderr
    high = run_cli("worker", "--model", color_model.keras_path, "--metrics-port", "70000", env=env)
    assert high.returncode == 2 and "--metrics-port must be a TCP port" in high.stderr
    exporter = run_cli("exporter", "--port", str(taken), env=env, timeout=60)
    assert exporter.returncode == 2 and f"port {taken}: it is already in use" in exporter.stderr
    assert "Traceback" not in exporter.stderr
    bad = run_cli("worker", "--model", color_model.keras_path, env={**env, "BULKLABEL_LOG_FORMAT": "xml"})
    assert bad.returncode == 2 and "BULKLABEL_LOG_FORMAT takes one of text, json" in bad.stderr


def test_each_process_gets_its_own_port_through_the_config_pipe():
    from worker.serving.process import WorkerConfig

    config = WorkerConfig(model="m.keras", queue="q", redis_url="redis://127.0.0.1:6379/0", visibility_timeout=60,
                          max_deliveries=3, metrics_port=9200, log_format="json")
    second = WorkerConfig.from_json(config.on("1", 1).to_json())
    assert (second.device, second.metrics_port, second.log_format) == ("1", 9201, "json")
    assert config.on("0", 0).metrics_port == 9200 and WorkerConfig.from_json(
        config.on("cpu").to_json()).metrics_port == 9200
    assert WorkerConfig("m", "q", "redis://h", 60, 3).on("3", 3).metrics_port is None  # no metrics: no port


def test_the_exporter_never_imports_worker_or_tensorflow():
    probe = ("import sys, producer.exporter, bulklabel.logs, prometheus_client; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('worker', 'tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
