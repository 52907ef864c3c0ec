"""A synthetic worker for the control-plane benchmark: the real worker path, a stand-in model.

``python -m bench.standin CONFIG_JSON`` runs what ``worker.serving.process.serve`` runs — the
real Celery app (``bulklabel.queue.make_app``), the dead-letter guard, the real task and
``WorkerContext`` (``worker.serving.tasks``), the real ``JobStore`` scripts, the worker's
heartbeat key, task events and their heartbeat (``BULKLABEL_TASK_EVENTS``, default on),
Celery's solo pool — with the model replaced by ``StandInEngine``: a fixed cost per chunk (a
sleep, no CPU) and one prediction record per source. TensorFlow is never imported. Shards are
written to the chunk's DEST as the real worker does. It logs warnings only (the real worker
logs a line per chunk: this worker's cost, not Redis's).

Each call of the job-store scripts is timed client-side (per job); the timings are written
to ``stats`` (a JSON file) when the worker stops (SIGTERM: Celery's warm shutdown).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections import defaultdict
from types import SimpleNamespace

STAND_IN_MODEL = "stand-in@fixed-cost"
TOP_K = [("label-a", 0.61), ("label-b", 0.2), ("label-c", 0.1), ("label-d", 0.05), ("label-e", 0.04)]


class StandInEngine:
    """The engine's interface (``run(sources, emit)``, ``model.model_id``) at a fixed cost per
    chunk: ``cost`` seconds of sleep, then a top-5 prediction record per source."""

    def __init__(self, cost: float):
        self.cost = cost
        self.model = SimpleNamespace(model_id=STAND_IN_MODEL, input_size=(224, 224), channels=3)

    def run(self, sources, emit):
        from bulklabel import records
        from worker.inference.engine import JobStats

        t = time.perf_counter()
        if self.cost > 0:
            time.sleep(self.cost)
        out = [records.prediction(s, STAND_IN_MODEL, TOP_K) for s in sources]
        emit(out)
        stats = JobStats(images=len(out), seconds=time.perf_counter() - t)
        stats.stages["predict"] = stats.seconds
        return stats

    def warmup(self) -> None:
        pass


def timed(fn, sink: dict, name: str):
    """``fn`` recording each call's seconds under ``sink[job_id][name]``."""

    def call(job_id, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(job_id, *args, **kwargs)
        finally:
            sink[job_id][name].append(time.perf_counter() - t)

    return call


def serve(config: dict) -> int:
    """``worker.serving.process.serve`` with ``StandInEngine`` for the model (and no metrics port)."""
    from bulklabel import keys
    from bulklabel.heartbeat import KeyHeartbeat
    from bulklabel.jobs import JobStore, connect
    from bulklabel.queue import make_app, task_events
    from worker.serving import guard
    from worker.serving.process import HEARTBEAT_SECONDS, run_celery_worker
    from worker.serving.tasks import WorkerContext, register, retry_times

    events = task_events()  # BULKLABEL_TASK_EVENTS, default on: part of what Redis carries

    name = f"bulklabel-standin-{os.getpid()}@{socket.gethostname()}"
    visibility = int(config.get("visibility_timeout", 3600))
    jobs = JobStore(connect(config["redis_url"], patience=visibility))
    timings: dict = defaultdict(lambda: defaultdict(list))
    jobs.start_chunk = timed(jobs.start_chunk, timings, "start_chunk")
    jobs.complete_chunk = timed(jobs.complete_chunk, timings, "complete_chunk")
    engine = StandInEngine(float(config.get("cost_ms", 0)) / 1000)
    ctx = WorkerContext(engine=engine, jobs=jobs, name=name, max_deliveries=3, queue=config["queue"],
                        **retry_times(visibility))
    app = make_app(config["redis_url"], visibility, task_events=events)
    guard.install(app, lambda queue, raw, reason: jobs.dead_letter(queue, raw, reason, name))
    register(app, ctx)
    info = {"queue": config["queue"], "model": STAND_IN_MODEL, "device": "stand-in", "pid": os.getpid(),
            "name": name, "host": socket.gethostname(), "started_at": time.time()}
    beat = KeyHeartbeat(jobs.r, keys.worker(name), json.dumps(info), every=HEARTBEAT_SECONDS,
                        ttl=3 * HEARTBEAT_SECONDS)
    beat.start()
    try:
        return run_celery_worker(app, name, config["queue"], events, loglevel="WARNING")  # as the real worker
    finally:
        beat.stop()
        with open(config["stats"], "w") as f:
            json.dump({job: dict(calls) for job, calls in timings.items()}, f)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s [stand-in {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    return serve(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
