"""The Celery application both sides share: one configuration, JSON only.

Reliability settings (see ARCHITECTURE.md, "Delivery"):

* late acks + reject on worker lost + prefetch 1: a chunk is acknowledged only after its
  shard is written and counted, and a worker holds one chunk at a time;
* the visibility timeout (``BULKLABEL_VISIBILITY_TIMEOUT``) is how long a delivered,
  unacknowledged chunk waits before Redis gives it to another worker; the restore sweep
  runs every tenth of it (1-10 s) so a dead worker's chunk moves on promptly after it;
* pickle is never accepted; results are not stored (progress lives in the job hash);
* chunk messages are zlib-compressed (``task_compression``): a listing's paths and
  fingerprints shrink about 4x, and every byte of a message crosses Redis four times
  (queued, delivered, kept until acknowledged, logged to the append-only file), so
  compression sets how many GPUs one Redis feeds (docs/benchmarks.md, "The control-plane
  limit"). Workers decompress whatever a message's header says.

Monitoring (Flower): workers send task events (received, started, succeeded, failed,
retried; JSON, over the ``celeryev`` fanout, i.e. Redis pub/sub) unless
``BULKLABEL_TASK_EVENTS=0``, and ``EventHeartbeat`` sends their worker-heartbeat events.
An event shows a chunk as ``chunk_repr`` (ids, image count, destination), never its image
paths. Remote control stays off: nobody with Redis access can shut down or reconfigure a
worker (docs/security.md).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cache

from .chunks import TASK_NAME
from .settings import DEFAULT_QUEUE


def make_app(redis_url: str, visibility_timeout: int, task_events: bool = False):
    """The app; ``task_events``: a worker sends task events (producers never send any)."""
    from celery import Celery

    app = Celery("bulklabel", broker=redis_url, set_as_current=False, amqp=_chunk_amqp())
    sweep = max(1, min(10, visibility_timeout // 10))
    transport = {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": sweep,
        "unacked_restore_throttle": 1,
    }
    app.conf.update(
        task_serializer="json",
        task_compression="zlib",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=task_events,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_default_queue=DEFAULT_QUEUE,
    )
    return app


def task_events() -> bool:
    """``BULKLABEL_TASK_EVENTS`` (default on): whether workers send events for Flower."""
    from .options.distributed import TASK_EVENTS
    from .settings import origin

    raw = TASK_EVENTS.raw_default()
    return TASK_EVENTS.parse(raw, origin(raw, TASK_EVENTS.name))


def chunk_repr(fields: Mapping) -> str:
    """A chunk message's keyword arguments as events, Flower and logs show them:
    ``{'job_id': 'J', 'chunk': 12, 'sources': 256 images, 'dest': 's3://b/p'}``."""
    sources = fields.get("sources")
    count = f"{len(sources)} images" if isinstance(sources, (list, tuple)) else "?"
    return (f"{{'job_id': {_short(fields.get('job_id'), 80)}, 'chunk': {_short(fields.get('chunk'), 20)}, "
            f"'sources': {count}, 'dest': {_short(fields.get('dest'), 300)}}}")


def _short(value, limit: int) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@cache
def _chunk_amqp():
    """Celery's message builder, with ``chunk_repr`` as the default ``kwargsrepr`` of a chunk
    message: ``Task.retry`` republishes without one, and Celery's own (1 KiB of the kwargs)
    would put image paths into the task-received events."""
    from celery.app.amqp import AMQP

    class ChunkAMQP(AMQP):
        def as_task_v2(self, task_id, name, args=None, kwargs=None, *more, kwargsrepr=None, **options):
            if kwargsrepr is None and name == TASK_NAME and isinstance(kwargs, Mapping):
                kwargsrepr = chunk_repr(kwargs)
            return super().as_task_v2(task_id, name, args, kwargs, *more, kwargsrepr=kwargsrepr, **options)

    return ChunkAMQP


class EventHeartbeat(threading.Thread):
    """A worker's worker-online, worker-heartbeat (every ``every`` s) and worker-offline events,
    from which Flower shows it online (until two intervals pass without one). Celery's own
    heartbeat runs on the worker's event loop, which the solo pool blocks while a chunk runs:
    it would fall silent during every chunk, so this thread sends them, on its own connection."""

    def __init__(self, app, hostname: str, every: float):
        super().__init__(daemon=True, name="bulklabel-event-heartbeat")
        self.app, self.hostname, self.every = app, hostname, every
        self._stop_event = threading.Event()
        self._connection = self._dispatcher = None

    def run(self) -> None:
        kind = "worker-online"
        while not self._stop_event.is_set():
            self._send(kind)
            kind = "worker-heartbeat"
            self._stop_event.wait(self.every)
        self._send("worker-offline")
        self._close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def _send(self, kind: str) -> None:
        from celery.utils.sysinfo import load_average
        from celery.worker.state import SOFTWARE_INFO, active_requests, all_total_count

        try:
            if self._dispatcher is None:
                self._connection = self.app.connection_for_write()
                self._dispatcher = self.app.events.Dispatcher(
                    self._connection, hostname=self.hostname, groups=["worker"], buffer_while_offline=False)
            self._dispatcher.send(kind, freq=self.every, active=len(active_requests),
                                  processed=all_total_count[0], loadavg=load_average(), **SOFTWARE_INFO)
        except Exception:
            self._close()  # Redis away: reconnect at the next beat (the worker's own connection reports it)

    def _close(self) -> None:
        connection, self._connection, self._dispatcher = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass
