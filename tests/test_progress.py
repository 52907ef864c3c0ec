"""Progress bar, background counter, durations."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from bulklabel import progress
from bulklabel.progress import BackgroundCounter, ProgressBar, format_duration


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=c))
    return c


def frames(out: str) -> list[str]:
    return [f for f in out.split("\r")[1:]]


# --- format_duration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds,text",
    [(59, "00:59"), (3661, "1:01:01"), (0, "00:00"), (60, "01:00"), (59.9, "00:59"),
     (3599, "59:59"), (3600, "1:00:00"), (90061, "25:01:01"), (-5, "00:00")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- render -----------------------------------------------------------------------------


def test_render_without_total() -> None:
    bar = ProgressBar(stream=io.StringIO(), enabled=False)
    assert bar.total is None
    assert bar.render(25, 0, 10.0) == "25 images 2.5/s, 00:10 elapsed"
    assert bar.render(25, 3, 10.0) == "25 images, 3 errors 2.5/s, 00:10 elapsed"


def test_render_without_total_custom_label_and_zero_elapsed() -> None:
    bar = ProgressBar(label="files", stream=io.StringIO(), enabled=False)
    assert bar.render(0, 0, 0.0) == "0 files 0.0/s, 00:00 elapsed"


def test_render_with_total() -> None:
    bar = ProgressBar(stream=io.StringIO(), enabled=False, total=100)
    line = bar.render(50, 2, 10.0)
    assert "50/100 images" in line
    assert "5.0/s" in line
    assert "ETA 00:10" in line
    assert "00:10 elapsed" in line
    assert ", 2 errors" in line
    assert line.lstrip().startswith("50%")
    inner = re.search(r"\[([#-]+)\]", line).group(1)
    assert 10 <= len(inner) <= 40
    assert inner.count("#") == len(inner) // 2


def test_render_with_total_no_errors_shows_none() -> None:
    bar = ProgressBar(stream=io.StringIO(), enabled=False, total=1000)
    line = bar.render(100, 0, 100.0)
    assert "error" not in line
    assert "100/1000" in line and "1.0/s" in line and "ETA 15:00" in line


def test_render_total_edge_cases() -> None:
    bar = ProgressBar(stream=io.StringIO(), enabled=False, total=10)
    start = bar.render(0, 0, 0.0)  # no rate yet: no division error, no ETA guess
    assert "0/10" in start and "ETA 00:00" in start and "0%" in start
    over = bar.render(12, 0, 4.0)  # more done than the estimate
    assert over.lstrip().startswith("100%") and "ETA 00:00" in over
    assert "-" not in re.search(r"\[(.*)\]", over).group(1)


def test_render_uses_background_counter_total() -> None:
    gate = threading.Event()

    def slow():
        yield from range(7)
        gate.wait(5)

    counter = BackgroundCounter(slow())
    bar = ProgressBar(stream=io.StringIO(), enabled=False, total=counter)
    assert bar.total is None
    assert "/" not in bar.render(3, 0, 1.0).split(" ")[0]
    gate.set()
    counter._thread.join(5)
    assert bar.total == 7
    assert "3/7 images" in bar.render(3, 0, 1.0)


# --- BackgroundCounter ------------------------------------------------------------------


def test_background_counter_eventually_counts() -> None:
    counter = BackgroundCounter(iter(range(12345)))
    deadline = time.monotonic() + 5
    while counter.total is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert counter.total == 12345
    assert counter._thread.daemon


def test_background_counter_waits_for_the_end() -> None:
    release = threading.Event()

    def items():
        yield 1
        yield 2
        release.wait(5)
        yield 3

    counter = BackgroundCounter(items())
    time.sleep(0.05)
    assert counter.total is None  # not a partial count
    release.set()
    counter._thread.join(5)
    assert counter.total == 3


def test_background_counter_swallows_listing_errors() -> None:
    def broken():
        yield 1
        raise OSError("listing failed")

    counter = BackgroundCounter(broken())
    counter._thread.join(5)
    assert not counter._thread.is_alive()
    assert counter.total is None


def test_background_counter_empty() -> None:
    counter = BackgroundCounter([])
    counter._thread.join(5)
    assert counter.total == 0


# --- enabling, drawing, throttling ------------------------------------------------------


def test_disabled_when_not_a_tty() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, total=10)
    assert bar.enabled is False
    bar.update(1, force=True)
    bar.update(5, errors=2)
    bar.close(10, 2)
    assert stream.getvalue() == ""


def test_enabled_on_a_tty_unless_dumb(monkeypatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert ProgressBar(stream=TTY()).enabled is True
    monkeypatch.setenv("TERM", "dumb")
    assert ProgressBar(stream=TTY()).enabled is False
    assert ProgressBar(stream=TTY(), enabled=True).enabled is True
    assert ProgressBar(stream=io.StringIO(), enabled=True).enabled is True


def test_enabled_false_wins_on_a_tty(monkeypatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    stream = TTY()
    bar = ProgressBar(stream=stream, enabled=False)
    bar.update(3, force=True)
    bar.close(3)
    assert stream.getvalue() == ""


def test_default_stream_is_stderr() -> None:
    assert ProgressBar().stream is sys.stderr


def test_enabled_writes_frames_and_newline_on_close(clock) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True, total=4)
    clock.now += 1.0
    bar.update(1)
    clock.now += 1.0
    bar.update(2, errors=1)
    out = stream.getvalue()
    assert out.startswith("\r") and "\n" not in out
    drawn = frames(out)
    assert len(drawn) == 2
    assert all(f.endswith("\x1b[K") for f in drawn)  # each frame clears the rest of the line
    assert "1/4" in drawn[0] and "2/4" in drawn[1] and "1 errors" in drawn[1]
    bar.close(4, errors=1)
    out = stream.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1
    last = frames(out.rstrip("\n"))[-1]
    assert "4/4" in last and "100%" in last


def test_close_draws_even_within_throttle(clock) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    bar.update(1)
    bar.close(2)  # same instant: still drawn, forced
    drawn = frames(stream.getvalue().rstrip("\n"))
    assert drawn[-1].startswith("2 images")


def test_throttled_to_ten_draws_per_second(clock) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    for i in range(200):  # 200 updates spread over 1.99 s
        clock.now = 1000.0 + i * 0.01
        bar.update(i)
    n = len(frames(stream.getvalue()))
    assert 15 <= n <= 20


def test_throttle_draws_again_after_interval(clock) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    bar.update(1)
    clock.now += 0.05
    bar.update(2)
    assert len(frames(stream.getvalue())) == 1
    clock.now += 0.06
    bar.update(3)
    drawn = frames(stream.getvalue())
    assert len(drawn) == 2 and drawn[1].startswith("3 images")


def test_forced_updates_are_not_throttled(clock) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    for i in range(50):
        bar.update(i, force=True)
    assert len(frames(stream.getvalue())) == 50


def test_real_clock_tight_loop_is_throttled() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < 0.25:
        bar.update(i)
        i += 1
    assert i > 100
    assert len(frames(stream.getvalue())) <= 4  # 0.25 s: at most 3 draws, plus slack
