"""``KeyHeartbeat``: a Redis key that exists while its owner runs (a worker, a listing submit).

The key is set with an expiry and refreshed in a daemon thread; ``stop`` deletes it. An
owner killed outright leaves it to expire, which is how others learn it is gone.
"""

from __future__ import annotations

import signal
import threading


class KeyHeartbeat(threading.Thread):
    def __init__(self, client, key: str, value: str, every: float, ttl: float, *,
                 name: str = "bulklabel-heartbeat", block_signals: tuple[int, ...] = ()):
        super().__init__(daemon=True, name=name)
        self.client, self.key, self.value = client, key, value
        self.every, self.ttl = every, int(ttl)
        self.block_signals = block_signals  # signals meant for the main thread only
        self._stop_event = threading.Event()

    def run(self) -> None:
        if self.block_signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.block_signals)
        while not self._stop_event.is_set():
            try:
                self.client.set(self.key, self.value, ex=self.ttl)
            except Exception:
                pass  # Redis away: the owner's own connection reports it; try again next beat
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        try:
            self.client.delete(self.key)
        except Exception:
            pass
