"""One worker process: pinned device, model loaded once, Celery consuming one chunk at a time.

Started by the supervisor (``worker.serving.supervisor``) with ``CUDA_VISIBLE_DEVICES`` already set
in its environment, so TensorFlow only ever sees its own GPU. Runs Celery's solo pool: the
task runs in this process's main thread, next to the model, with no fork after TensorFlow
started. SIGTERM is Celery's warm shutdown: the current chunk finishes, then the process
exits; a chunk interrupted any other way is redelivered after the visibility timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from bulklabel import __version__, keys, logs
from bulklabel.heartbeat import KeyHeartbeat
from bulklabel.options import EngineOptions, ModelOptions, RuntimeOptions
from bulklabel.settings import redact_url

log = logging.getLogger("bulklabel.worker")
HEARTBEAT_SECONDS = 10
EVENT_HEARTBEAT_SECONDS = 5  # worker-heartbeat events (Flower: offline after two missed)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker process needs: the option sets as given, and where to serve."""

    model: str
    queue: str
    redis_url: str
    visibility_timeout: int
    max_deliveries: int
    model_options: ModelOptions = field(default_factory=ModelOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    device: str = "cpu"                 # 'cpu' or the GPU this process is pinned to
    allow_dest: tuple[str, ...] = ()    # destinations chunks may write under (none: any)
    metrics_port: int | None = None     # serve Prometheus metrics here (none: no metrics)
    log_format: str = "text"            # 'text' or 'json' (bulklabel.logs)

    def on(self, device: str, index: int = 0) -> WorkerConfig:
        """This configuration for the ``index``-th process, pinned to ``device``: its metrics
        port is ``metrics_port + index``."""
        port = self.metrics_port + index if self.metrics_port else None
        return replace(self, device=device, metrics_port=port)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        data = json.loads(text)
        return cls(**{**data, "model_options": ModelOptions(**data["model_options"]),
                      "engine": EngineOptions(**data["engine"]),
                      "runtime": RuntimeOptions(**data["runtime"]),
                      "allow_dest": tuple(data.get("allow_dest", ()))})


def worker_name(config: WorkerConfig) -> str:
    return f"bulklabel-{config.device}-{os.getpid()}@{socket.gethostname()}"


def serve(config: WorkerConfig) -> int:
    from bulklabel.jobs import JobStore, connect
    from bulklabel.queue import make_app, task_events

    from ..inference.engine import open_engine
    from ..inference.models import load_model
    from . import guard
    from .metrics import WorkerMetrics
    from .tasks import WorkerContext, register, retry_times

    events = task_events()  # BULKLABEL_TASK_EVENTS: a bad value fails before the model loads
    name = worker_name(config)
    logs.bind(worker=name, device=config.device)
    metrics = WorkerMetrics()
    if config.metrics_port:  # before the model: a port in use fails at once (exit 2)
        metrics.serve(config.metrics_port)
        log.info("metrics on port %d (/metrics)", config.metrics_port)
    t = time.perf_counter()
    model = load_model(config.model, config.model_options)
    engine = open_engine(model, config.engine)
    engine.warmup()
    for note in model.warnings:
        log.warning("note: %s", note)
    metrics.model_load_seconds.set(time.perf_counter() - t)
    metrics.describe(model.model_id, config.queue, config.device, __version__)
    log.info("model %s loaded and warmed up in %.1f s on %s", model.model_id, time.perf_counter() - t,
             config.device)

    jobs = JobStore(connect(config.redis_url, patience=config.visibility_timeout))
    ctx = WorkerContext(engine=engine, jobs=jobs, name=name, max_deliveries=config.max_deliveries,
                        queue=config.queue, allow_dest=config.allow_dest, metrics=metrics,
                        **retry_times(config.visibility_timeout))
    app = make_app(config.redis_url, config.visibility_timeout, task_events=events)
    guard.install(app, lambda queue, raw, reason: jobs.dead_letter(queue, raw, reason, name))
    register(app, ctx)
    info = {"queue": config.queue, "model": model.model_id, "device": config.device, "pid": os.getpid(),
            "name": name, "host": socket.gethostname(), "started_at": time.time()}
    beat = KeyHeartbeat(jobs.r, keys.worker(name), json.dumps(info), every=HEARTBEAT_SECONDS,
                        ttl=3 * HEARTBEAT_SECONDS)  # for submit and status: who serves which queue
    beat.start()
    log.info("worker %s ready: queue %r on %s", name, config.queue, redact_url(config.redis_url))
    try:
        return run_celery_worker(app, name, config.queue, events)
    finally:
        beat.stop()


def run_celery_worker(app, name: str, queue: str, events: bool, loglevel: str = "INFO") -> int:
    """Consume ``queue`` with Celery's solo pool until told to stop; returns the exit code.
    No gossip or mingle (remote control is off), no event heartbeat on Celery's timer: the
    solo pool stalls it while a chunk runs, so an ``EventHeartbeat`` thread sends them."""
    from bulklabel.queue import EventHeartbeat

    pulse = EventHeartbeat(app, name, every=EVENT_HEARTBEAT_SECONDS) if events else None
    worker = app.Worker(hostname=name, pool="solo", concurrency=1, queues=[queue], loglevel=loglevel,
                        without_gossip=True, without_mingle=True, without_heartbeat=True, quiet=True)
    if pulse:
        pulse.start()
    try:
        worker.start()
    finally:
        if pulse:
            pulse.stop()
    return worker.exitcode or 0


def _die_with_parent() -> None:
    """Linux: get SIGTERM if the supervisor disappears, instead of running on orphaned."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def read_config(argv: list[str]) -> WorkerConfig:
    """The configuration the supervisor sends down the inherited pipe ``--config-fd N``."""
    if len(argv) != 2 or argv[0] != "--config-fd" or not argv[1].isdigit():
        raise SystemExit("usage: python -m worker.serving.process --config-fd FD "
                         "(started by 'bulklabel worker', not by hand)")
    with os.fdopen(int(argv[1]), encoding="utf-8") as pipe:
        return WorkerConfig.from_json(pipe.read())


def main(argv: list[str] | None = None) -> int:
    from bulklabel.errors import BulkLabelError

    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    config = read_config(argv)
    logs.setup(config.log_format,
               f"%(asctime)s [{config.device} pid {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    try:
        from ..inference import runtime

        runtime.configure(config.runtime)  # this process's one runtime set-up, before the model
        return serve(config)
    except BulkLabelError as exc:
        if config.log_format == "json":
            log.error("error: %s", exc)
        else:
            print(f"bulklabel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
