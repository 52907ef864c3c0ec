"""A terminal progress bar with rate and ETA, and a background counter for lazy listings.

The bar draws on stderr only when stderr is a terminal (or when forced), at most ten
times a second, so it costs nothing measurable in the hot loop and never pollutes logs.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class BackgroundCounter:
    """Counts a (second) lazy listing in a daemon thread, so the bar can show a total."""

    def __init__(self, items: Iterable[object]):
        self.total: int | None = None
        self._thread = threading.Thread(target=self._count, args=(items,), daemon=True)
        self._thread.start()

    def _count(self, items: Iterable[object]) -> None:
        n = 0
        try:
            for _ in items:
                n += 1
        except Exception:
            return  # the real listing will report the problem
        self.total = n


class ProgressBar:
    def __init__(
        self,
        label: str = "images",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        total: BackgroundCounter | int | None = None,
    ):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.enabled = enabled
        self.label = label
        self._total = total
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def set_total(self, total: int | None) -> None:
        self._total = total

    @property
    def total(self) -> int | None:
        t = self._total
        return t.total if isinstance(t, BackgroundCounter) else t

    def update(self, done: int, errors: int = 0, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self.stream.write("\r" + self.render(done, errors, now - self._start) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def render(self, done: int, errors: int, elapsed: float) -> str:
        rate = done / elapsed if elapsed > 0 else 0.0
        total = self.total
        err = f", {errors} errors" if errors else ""
        if total:
            frac = min(1.0, done / total)
            eta = (total - done) / rate if rate > 0 else 0.0
            width = max(10, min(40, shutil.get_terminal_size((80, 20)).columns - 60))
            fill = int(frac * width)
            bar = "#" * fill + "-" * (width - fill)
            return (
                f"{frac:4.0%} [{bar}] {done}/{total} {self.label}{err} "
                f"{rate:.1f}/s, {format_duration(elapsed)} elapsed, ETA {format_duration(eta)}"
            )
        return f"{done} {self.label}{err} {rate:.1f}/s, {format_duration(elapsed)} elapsed"

    def close(self, done: int, errors: int = 0) -> None:
        if self.enabled:
            self.update(done, errors, force=True)
            self.stream.write("\n")
            self.stream.flush()
