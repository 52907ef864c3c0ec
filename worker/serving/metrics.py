"""Prometheus metrics of one worker process (``bulklabel worker --metrics-port``).

Each process keeps its own ``CollectorRegistry`` (nothing in prometheus_client's global
one) and serves it over HTTP on its own port: the supervisor gives process ``i`` the port
``--metrics-port + i``. Labels are few and fixed (outcomes, stages): never a job, chunk or
image, so the number of series stays constant however many jobs run.

    bulklabel_images_total{outcome}              records written: labeled | error
    bulklabel_chunks_total{outcome}              chunk deliveries by what became of them (below)
    bulklabel_chunk_seconds                      histogram: one delivery, the task from start to end
    bulklabel_stage_seconds_total{stage}         engine time: read | decode (summed over their
                                                 threads), predict, write
    bulklabel_model_load_seconds                 loading and warming up the model
    bulklabel_last_chunk_timestamp_seconds       when the last delivery ended (Unix time)
    bulklabel_worker_info{model_id,queue,device,version}

Chunk outcomes are what ``tasks.process_chunk`` returns (labeled, errors, abandoned,
duplicate, dropped, refused, failed), ``retry`` for a delivery that will be retried later
(``RetryLater``), and ``invalid`` for a message moved to the dead-letter list.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from bulklabel.errors import ConfigError

CHUNK_OUTCOMES = ("labeled", "errors", "abandoned", "duplicate", "dropped", "refused", "failed", "retry",
                  "invalid")
IMAGE_OUTCOMES = ("labeled", "error")
STAGES = ("read", "decode", "predict", "write")
# Chunks take from a tenth of a second (a few small images, a dropped delivery) to minutes.
CHUNK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class WorkerMetrics:
    """The metrics of one worker process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.images = Counter("bulklabel_images", "Image records written, by outcome: labeled or error",
                              ["outcome"], registry=r)
        self.chunks = Counter("bulklabel_chunks", "Chunk deliveries handled, by outcome", ["outcome"], registry=r)
        self.chunk_seconds = Histogram("bulklabel_chunk_seconds",
                                       "Seconds the task took for one chunk delivery, whatever its outcome",
                                       buckets=CHUNK_BUCKETS, registry=r)
        self.stage_seconds = Counter("bulklabel_stage_seconds",
                                     "Engine seconds by stage (read and decode summed over their threads)",
                                     ["stage"], registry=r)
        self.model_load_seconds = Gauge("bulklabel_model_load_seconds",
                                        "Seconds spent loading and warming up the model", registry=r)
        self.last_chunk = Gauge("bulklabel_last_chunk_timestamp_seconds",
                                "Unix time when the last chunk delivery was handled", registry=r)
        self.info = Info("bulklabel_worker", "What this worker process serves", registry=r)
        for outcome in IMAGE_OUTCOMES:  # every series exists from the start, at 0
            self.images.labels(outcome)
        for outcome in CHUNK_OUTCOMES:
            self.chunks.labels(outcome)
        for stage in STAGES:
            self.stage_seconds.labels(stage)

    def describe(self, model_id: str, queue: str, device: str, version: str) -> None:
        self.info.info({"model_id": model_id, "queue": queue, "device": device, "version": version})

    def chunk_done(self, outcome: str, seconds: float) -> None:
        self.chunks.labels(outcome).inc()
        self.chunk_seconds.observe(seconds)
        self.last_chunk.set(time.time())

    def images_written(self, images: int, errors: int) -> None:
        self.images.labels("labeled").inc(images - errors)
        self.images.labels("error").inc(errors)

    def stages(self, seconds: dict[str, float]) -> None:
        for stage in STAGES:
            if seconds.get(stage):
                self.stage_seconds.labels(stage).inc(seconds[stage])

    def serve(self, port: int) -> None:
        """Serve /metrics on ``port`` (all interfaces) from a daemon thread; a port in use is a
        ``ConfigError``."""
        from prometheus_client import start_http_server

        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            raise ConfigError(port_problem(port, exc)) from None


def port_problem(port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"--metrics-port: port {port} is already in use (another worker or program serves it)"
    return f"--metrics-port: cannot serve metrics on port {port} ({exc.strerror or exc})"


def check_ports(ports: Iterable[int]) -> None:
    """Fail fast, before any process starts: each port must be free to listen on (as the
    metrics server will: all interfaces, address reuse on)."""
    for port in ports:
        if port > 65535:
            raise ConfigError(f"--metrics-port: one port per GPU process needs port {port}, above 65535")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise ConfigError(port_problem(port, exc)) from None
