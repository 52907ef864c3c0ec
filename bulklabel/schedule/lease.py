"""The scheduler lease: exactly one scheduler per Redis fires.

A ``redis.lock.Lock`` on ``bulklabel:scheduler:lease`` with a TTL (``seconds``): the holder
renews it every ``seconds / 3`` from a daemon thread, so a holder that dies (even by
SIGKILL) leaves nothing behind — its lease expires and a standby scheduler takes it. A
renewal that fails (the lock is someone else's, or Redis does not answer) loses the lease
at once; the holder also counts it lost once ``2/3`` of the TTL passed without a renewal,
well before Redis could hand it to another. ``bulklabel:scheduler:holder`` (JSON host, pid,
since; the same TTL) says who holds it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from .. import keys

log = logging.getLogger("bulklabel.scheduler")

_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def holder(client) -> dict[str, Any] | None:
    """Who holds the lease now (with ``expires_in`` seconds), or None."""
    pipe = client.pipeline()
    pipe.get(keys.SCHEDULER_HOLDER)
    pipe.pttl(keys.SCHEDULER_LEASE)
    raw, ttl = pipe.execute()
    if not raw or ttl is None or ttl < 0:
        return None
    info = json.loads(raw)
    info["expires_in"] = round(ttl / 1000, 1)
    return info


class Lease:
    def __init__(self, client, seconds: float):
        from redis.lock import Lock

        self.client, self.seconds = client, seconds
        self.lock = Lock(client, keys.SCHEDULER_LEASE, timeout=seconds, thread_local=False)
        self.info = ""
        self._renewed = 0.0           # monotonic time of the last successful acquire or renewal
        self._held = False
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """Held, renewed recently enough that no one else can have it."""
        return (self._held and not self._lost.is_set()
                and time.monotonic() - self._renewed < self.seconds * 2 / 3)

    @property
    def lost(self) -> bool:
        """It was held and is no longer (call ``reset`` to stand by again)."""
        return self._held and not self.held

    def try_acquire(self) -> bool:
        """Take the lease if it is free; starts renewing it."""
        if self._held:
            return self.held
        started = time.monotonic()
        if not self.lock.acquire(blocking=False):
            return False
        self._renewed = started
        self.info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        self._held = True
        self._lost, self._stop = threading.Event(), threading.Event()  # this holding's own
        self._write_holder()
        self._thread = threading.Thread(target=self._renew, args=(self._stop, self._lost),
                                        name="bulklabel-lease", daemon=True)
        self._thread.start()
        return True

    def _write_holder(self) -> None:
        self.client.set(keys.SCHEDULER_HOLDER, self.info, px=int(self.seconds * 1000))

    def _renew(self, stop: threading.Event, lost: threading.Event) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        while not stop.wait(self.seconds / 3):
            started = time.monotonic()
            try:
                self.lock.reacquire()
                self._write_holder()
            except Exception as exc:  # LockNotOwnedError, LockError, any Redis error
                if not stop.is_set():
                    log.warning("lost the scheduler lease: renewal failed (%s: %s)", type(exc).__name__, exc)
                lost.set()
                return
            if not stop.is_set():
                self._renewed = started

    def reset(self) -> None:
        """After a loss: stop renewing and forget the lease (stand by again)."""
        self._stop.set()
        self._held = False
        self.lock.local.token = None

    def release(self) -> None:
        """Give the lease back (a standby takes over at its next try) and stop renewing."""
        self._stop.set()
        if self._thread:
            self._thread.join(self.seconds)
        if self._held and not self._lost.is_set():
            try:
                self.lock.release()
                self.client.eval(_DELETE_IF, 1, keys.SCHEDULER_HOLDER, self.info)
            except Exception as exc:  # not ours any more, or Redis away: it expires anyway
                log.info("could not release the scheduler lease (%s); it expires in %s s", type(exc).__name__,
                         self.seconds)
        self._held = False
