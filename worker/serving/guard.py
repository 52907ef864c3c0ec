"""Messages no worker can use are moved aside, never fatal and never silently lost.

Anyone who can write to Redis can push anything onto the queue's list. Two layers meet
such an item, and both send it to the dead-letter list ``bulklabel:dead:<queue>`` (with
the reason, its size and its first bytes in the worker's log) and go on serving:

* the transport (``Channel``): an item that is not a message envelope at all (not UTF-8,
  not JSON, JSON of another shape). Kombu's Redis channel would raise while decoding it,
  inside the worker's event loop, and the process would die (and be restarted, reloading
  the model, once per junk item);
* the consumer (``Consumer``): an envelope whose body cannot be decoded (for example a
  pickle, refused because only JSON is accepted), which is not a task, or names an unknown
  task. Celery logs and acknowledges these; they are also kept on the dead-letter list.

Task messages that decode but fail validation (``ChunkMessage.from_json``) are moved aside
by the task itself. ``install`` wires all of this into one worker process's app.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

log = logging.getLogger("bulklabel.worker")

DeadLetter = Callable[[str, bytes, str], None]  # (queue, raw message, reason)
_sink: list[DeadLetter] = []
_ENVELOPE_FIELDS = ("body", "properties")


def install(app, dead_letter: DeadLetter) -> None:
    """Make ``app`` (a worker's) move unusable messages to ``dead_letter``."""
    _sink[:] = [dead_letter]
    if app.conf.broker_url.split("://", 1)[0] in ("redis", "rediss"):
        app.conf.broker_transport = f"{__name__}:Transport"
    app.conf.worker_consumer = f"{__name__}:Consumer"


def preview(raw: bytes, limit: int = 64) -> str:
    """The first bytes of ``raw``, printable (for a log line)."""
    return repr(raw[:limit]) + ("..." if len(raw) > limit else "")


def move_aside(queue: str, raw: bytes | str, reason: str) -> None:
    """Log ``raw`` (its size and first bytes) and keep it on the dead-letter list."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    log.error("moved a message aside from queue %r to %s (%d bytes, starting %s): %s", queue,
              f"bulklabel:dead:{queue}", len(data), preview(data), reason)
    keep(queue, data, reason)


def keep(queue: str, data: bytes, reason: str) -> None:
    """Push ``data`` onto the dead-letter list (no log line: the caller wrote one)."""
    for sink in _sink:
        try:
            sink(queue, data, reason)
        except Exception as exc:  # Redis away: the log line above is what remains
            log.error("could not keep it on the dead-letter list (%s: %s)", type(exc).__name__, exc)


def envelope(item: bytes | str) -> tuple[dict | None, str]:
    """The message envelope in a raw queue item, or (None, why it is not one)."""
    try:
        message = json.loads(item.decode("utf-8") if isinstance(item, bytes) else item)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    if not isinstance(message, dict):
        return None, f"JSON {type(message).__name__}, not a message envelope"
    missing = [f for f in _ENVELOPE_FIELDS if f not in message]
    properties = message.get("properties")
    if missing or not isinstance(properties, dict) or "delivery_tag" not in properties:
        return None, "JSON object that is not a message envelope (no body/properties/delivery_tag)"
    return message, ""


class Channel(kombu_redis.Channel):
    """Kombu's Redis channel, except that an undecodable queue item is moved aside."""

    def _brpop_read(self, **options):
        try:
            try:
                dest_item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # reconnect on the next poll
                raise
            if not dest_item:
                raise kombu_redis.Empty()
            dest, item = dest_item
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            message, why = envelope(item)
            if message is None:
                move_aside(queue, item, why)
            else:
                self.connection._deliver(message, queue)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue):
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    message, why = envelope(item)
                    if message is not None:
                        return message
                    move_aside(queue, item, why)
            raise kombu_redis.Empty()


class Transport(kombu_redis.Transport):
    Channel = Channel


def _raw(message) -> bytes:
    body = message.body
    body = body if isinstance(body, bytes) else str(body).encode("utf-8", "surrogatepass")
    meta = json.dumps({"content_type": message.content_type, "headers": repr(message.headers)[:2000]})
    return meta.encode() + b"\n" + body


def _queue_of(message) -> str:
    info = getattr(message, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("exchange") or "?")


class Consumer(CeleryConsumer):
    """Celery's consumer; what it gives up on is also kept on the dead-letter list."""

    def on_decode_error(self, message, exc):
        move_aside(_queue_of(message), _raw(message), f"body cannot be decoded ({type(exc).__name__}: {exc})")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body, message):
        move_aside(_queue_of(message), _raw(message), "not a task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body, message, exc):
        move_aside(_queue_of(message), _raw(message), f"unknown task ({exc})")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body, message, exc):
        move_aside(_queue_of(message), _raw(message), f"invalid task message ({exc})")
        super().on_invalid_task(body, message, exc)


def destination_refusal(dest: str, allowed: tuple[str, ...]) -> str | None:
    """Why a chunk may not write to ``dest`` under ``--allow-dest`` ``allowed``, or None.

    Local destinations are compared after resolving symbolic links and ``..``; S3 ones by
    bucket and key prefix, at ``/`` boundaries (``s3://b/lab`` does not allow ``s3://b/labels``)."""
    if not allowed:
        return None
    if dest.startswith("s3://"):
        target = dest.rstrip("/")
        ok = any(target == p or target.startswith(p + "/") for p in allowed if p.startswith("s3://"))
    elif "://" in dest:
        ok = False
    else:
        target = os.path.realpath(dest)
        ok = any(target == p or target.startswith(p.rstrip(os.sep) + os.sep)
                 for p in allowed if not p.startswith("s3://"))
    if ok:
        return None
    return f"{dest!r} is not under --allow-dest ({', '.join(allowed)})"
