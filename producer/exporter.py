"""``bulklabel exporter``: queue depth and workers per queue, for Prometheus.

Computed from Redis on each scrape (a custom collector; nothing is polled in between):

    bulklabel_queue_messages{queue}            chunk messages waiting on the queue
    bulklabel_queue_unacked_messages{queue}    delivered to a worker, not acknowledged yet (being
                                               labeled, or held for a retry's countdown)
    bulklabel_workers{queue}                   live worker processes (their heartbeats)
    bulklabel_dead_letters{queue}              messages moved aside to bulklabel:dead:<queue>
    bulklabel_exporter_redis_up                1 if this scrape could read Redis, else 0
    bulklabel_exporter_unacked_truncated       1 if the unacked count stopped at its cap (below)

Where kombu's Redis transport keeps them: a queue is the list ``<queue>`` plus one list per
priority step, ``<queue>\\x06\\x16<3|6|9>`` (``Channel.sep``, ``PRIORITY_STEPS``); waiting
messages are the sum of their ``LLEN``. A delivered message is moved to the hash ``unacked``
(delivery tag → JSON ``[message, exchange, routing_key]``, indexed by time in the sorted set
``unacked_index``) until it is acknowledged, or restored to its queue once the visibility
timeout passes; it is counted under its routing key (bulklabel routes each chunk by its
queue's name).

Cost per scrape: one ``SCAN`` over the worker heartbeats (``GET`` each, in a pipeline), one
pipeline of five ``LLEN`` per queue, and ``HSCAN unacked`` in pages of ``COUNT 200``, reading
at most ``max_unacked`` entries (default 10,000). That hash holds one entry per message in
flight — about one per worker process (prefetch 1) plus retries in their countdown — each
the size of a chunk message, so a scrape normally reads a few kilobytes per worker.

Queues reported: those given (``--queue``), else every queue a live worker heartbeats, every
queue with unacknowledged messages, and every queue seen since the exporter started (so a
series does not vanish while its workers are away: ``bulklabel_workers`` drops to 0).
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Iterator

from bulklabel import keys, logs
from bulklabel.errors import ConfigError
from bulklabel.settings import redact_url

log = logging.getLogger("bulklabel.exporter")

PRIORITY_SEPARATOR = "\x06\x16"  # kombu.transport.redis.Channel.sep
PRIORITY_STEPS = (3, 6, 9)      # kombu.transport.redis.PRIORITY_STEPS other than 0 (the queue's own list)
UNACKED = "unacked"             # kombu.transport.redis.Channel.unacked_key
SCAN_COUNT = 200


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages (one per priority step)."""
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def unacked_queue(value: str) -> str | None:
    """The queue of one ``unacked`` hash entry: its routing key (else the exchange)."""
    try:
        message, exchange, routing_key = json.loads(value)
    except (ValueError, TypeError):
        return None
    if not routing_key and isinstance(message, dict):
        routing_key = message.get("properties", {}).get("delivery_info", {}).get("routing_key")
    return routing_key or exchange or None


class QueueCollector:
    """Reads the queues' state from Redis on every ``collect`` (every scrape)."""

    def __init__(self, client, queues: Iterable[str] = (), max_unacked: int = 10_000):
        self.client = client
        self.queues = tuple(queues)
        self.max_unacked = max_unacked
        self.seen: dict[str, None] = {}  # queues reported before, in order (when none are given)
        self._up = True

    def describe(self) -> list:
        return []  # the label values are only known on a scrape

    def collect(self) -> Iterator:
        import redis
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("bulklabel_exporter_redis_up", "1 if the last scrape could read Redis, else 0")
        try:
            workers, unacked, truncated = self._workers(), *self._unacked()
            queues = self.queues or self._remember([*workers, *unacked])
            waiting, dead = self._lengths(queues)
        except redis.RedisError as exc:
            if self._up:
                log.warning("cannot read Redis (%s: %s); reporting bulklabel_exporter_redis_up 0",
                            type(exc).__name__, exc)
            self._up = False
            up.add_metric([], 0)
            yield up
            return
        if not self._up:
            log.info("Redis is back")
        self._up = True
        up.add_metric([], 1)
        yield up
        families = [
            ("bulklabel_queue_messages", "Chunk messages waiting on the queue", waiting),
            ("bulklabel_queue_unacked_messages", "Chunk messages delivered to a worker and not acknowledged yet",
             unacked),
            ("bulklabel_workers", "Live worker processes serving the queue (heartbeats)", workers),
            ("bulklabel_dead_letters", "Messages moved aside to the queue's dead-letter list", dead),
        ]
        for name, doc, values in families:
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue in queues:
                family.add_metric([queue], values.get(queue, 0))
            yield family
        cut = GaugeMetricFamily("bulklabel_exporter_unacked_truncated",
                                f"1 if more than {self.max_unacked} unacknowledged messages were in Redis: "
                                "the unacked counts cover the first ones read")
        cut.add_metric([], 1 if truncated else 0)
        yield cut

    def _remember(self, found: list[str]) -> tuple[str, ...]:
        self.seen.update(dict.fromkeys(found))
        return tuple(self.seen)

    def _workers(self) -> Counter:
        names = list(self.client.scan_iter(keys.WORKER_PATTERN, count=SCAN_COUNT))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        found: Counter = Counter()
        for raw in pipe.execute() if names else []:
            try:
                queue = json.loads(raw).get("queue") if raw else None
            except (ValueError, AttributeError):
                queue = None
            if queue:
                found[queue] += 1
        return found

    def _unacked(self) -> tuple[Counter, bool]:
        found: Counter = Counter()
        cursor, read = 0, 0
        while True:
            cursor, page = self.client.hscan(UNACKED, cursor, count=SCAN_COUNT)
            for value in page.values():
                queue = unacked_queue(value)
                if queue:
                    found[queue] += 1
            read += len(page)
            if cursor == 0:
                return found, False
            if read >= self.max_unacked:
                return found, True

    def _lengths(self, queues: tuple[str, ...]) -> tuple[dict[str, int], dict[str, int]]:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for name in queue_lists(queue):
                pipe.llen(name)
            pipe.llen(keys.dead_letter(queue))
        lengths = pipe.execute() if queues else []
        step = len(PRIORITY_STEPS) + 2
        waiting, dead = {}, {}
        for i, queue in enumerate(queues):
            row = lengths[i * step:(i + 1) * step]
            waiting[queue], dead[queue] = sum(row[:-1]), row[-1]
        return waiting, dead


def serve(redis_url: str, port: int, queues: tuple[str, ...] = (), log_format: str = "text") -> int:
    """Serve the queue metrics on ``port`` until SIGTERM or SIGINT. Redis unreachable at start,
    or the port in use, is a ``ConfigError`` (exit 2); Redis lost later is
    ``bulklabel_exporter_redis_up 0``."""
    import redis
    from prometheus_client import CollectorRegistry, start_http_server

    from bulklabel.jobs import open_store

    logs.setup(log_format)
    open_store(redis_url)  # fail fast: Redis must answer now
    # No retries on a scrape: Prometheus times it out, and the next one tries again.
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=3, socket_timeout=5)
    registry = CollectorRegistry()
    registry.register(QueueCollector(client, queues))
    try:
        server, _ = start_http_server(port, registry=registry)
    except OSError as exc:
        why = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConfigError(f"--port: cannot serve metrics on port {port}: {why}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("exporter on port %d (/metrics): queues %s on %s", port,
             ", ".join(queues) if queues else "of the live workers", redact_url(redis_url))
    while not stop.wait(1.0):
        pass
    server.shutdown()
    log.info("exporter stopped")
    return 0
