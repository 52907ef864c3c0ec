"""The engine: read → decode → batch → predict → write, streaming, with bounded memory.

One engine serves both ``bulklabel classify`` (embedded) and the Celery workers
(distributed): it takes an iterable of image locations and hands records, in input
order, to an ``emit`` callback one batch at a time.

Reading and decoding run on thread pools (both release the GIL: file/network I/O and
libjpeg), overlapped with inference on the calling thread. At most ``max_inflight``
images are between the listing and the writer at any time, so memory stays flat whatever
the size of the archive. Every image yields exactly one record: a prediction, or an error
with a readable reason.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from bulklabel import records
from bulklabel.errors import ImageError
from bulklabel.options import EngineOptions
from bulklabel.records import Record
from bulklabel.storage import SourceReader, open_reader

from .decode import decode_image
from .models import LoadedModel
from .predictor import Predictor, ranked, top_k

if TYPE_CHECKING:
    from .prefetch import Prefetch

STAGES = ("read", "decode", "wait", "predict", "write")


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decode_threads(options: EngineOptions) -> int:
    """Decode threads to run: as asked, else one per usable core (at least 2)."""
    return options.decode_threads or max(2, usable_cores())


LOW_PRIORITY = 10  # niceness added to decode threads: CFS then gives them ~1/10 of a contended core


def lower_thread_priority(by: int = LOW_PRIORITY) -> None:
    """Make the calling thread nicer (Linux: niceness is per thread). Used as the decode
    pool's initializer with --decode-priority low: where the model is the bottleneck, its
    threads win the cores from decoding the images of batches to come (fewer preempted
    TensorFlow threads holding up a parallel op); where decoding is, the model's threads
    are idle most of the time and decoding gets the cores anyway. Measured in
    docs/benchmarks.md ("Start-up and CPU scheduling")."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except (AttributeError, OSError):  # not Linux, or not allowed: run as is
        pass


class DecodePools:
    """The decode threads, at the priority the job needs now (``--decode-priority``).

    ``low``/``normal``: always that. ``auto`` (the default) looks, after every batch, at how
    many decoded images are ready and waiting for the model: a full batch or more means
    decoding is ahead (the model is the bottleneck: a heavy model, few cores), and new
    decodes go to low-priority threads, so the model's threads win the cores; fewer means
    decoding is behind (big photos, a light model, a fast CPU), and they run at normal
    priority. A thread's niceness cannot be lowered again without privileges, so each
    priority has its own pool (threads start on first use)."""

    def __init__(self, threads: int, priority: str, batch_size: int):
        self.priority, self.batch_size = priority, batch_size
        self.mode = "low" if priority == "low" else "normal"
        self._pools = {"normal": ThreadPoolExecutor(threads, "bulklabel-decode"),
                       "low": ThreadPoolExecutor(threads, "bulklabel-decode-low",
                                                 initializer=lower_thread_priority)}
        self.low_batches = 0

    def submit(self, fn, *args) -> Future:
        return self._pools[self.mode].submit(fn, *args)

    def observe(self, ready: int) -> None:
        """After a batch: ``ready`` decoded images are waiting for the next ones."""
        if self.priority == "auto":
            self.mode = "low" if ready >= self.batch_size else "normal"
        self.low_batches += self.mode == "low"

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class JobStats:
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    first_batch: float | None = None  # seconds from the start of run() to the first records
    low_priority_batches: int = 0     # batches whose images were decoded at low priority (auto)

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def profile(self) -> str:
        """Seconds per stage; read and decode are summed over their threads."""
        return ", ".join(f"{k} {v:.2f}s" for k, v in self.stages.items())


Emit = Callable[[list[Record]], None]
Progress = Callable[[JobStats], None]


def open_engine(model: LoadedModel, options: EngineOptions) -> Engine:
    """An engine reading local files and s3:// objects as ``options`` say."""
    return Engine(model, open_reader(options.io_threads, options.max_bytes), options)


class Engine:
    def __init__(self, model: LoadedModel, reader: SourceReader, options: EngineOptions | None = None):
        self.model = model
        self.reader = reader
        options = options or EngineOptions()
        if not options.batch_size:
            from .runtime import default_batch_size

            options = replace(options, batch_size=default_batch_size())
        self.options = options
        self.predictor = Predictor(model, self.options.batch_size)
        self._lock = threading.Lock()

    def warmup(self, compute: bool = True) -> None:
        """Trace the model (and with ``compute`` run it once: ``Predictor.warmup``)."""
        self.predictor.warmup(compute)

    def run(self, sources: Iterable[str], emit: Emit, progress: Progress | None = None,
            prefetched: Prefetch | None = None) -> JobStats:
        """Label ``sources``; ``prefetched``: the first of them, read and decoded already
        (``worker.inference.prefetch``), used as they are when decoded at this model's size."""
        opts = self.options
        stats = JobStats()
        start = time.perf_counter()
        head: list[tuple[str, Future]] = []
        if prefetched is not None:
            head, sources = prefetched.handover(self.model.input_size, self.model.channels,
                                                self.options.max_pixels, sources)
        listing = iter(sources)
        first = head[0][0] if head else next(listing, None)
        exhausted = first is None
        if first is not None and not head:
            listing = itertools.chain([first], listing)
        io_threads = opts.io_threads
        if not io_threads and first is not None and hasattr(self.reader, "io_threads_for"):
            io_threads = self.reader.io_threads_for(first)
        decode_pool = DecodePools(decode_threads(opts), opts.decode_priority, opts.batch_size)
        work = ImageWork(self.reader, self.model.input_size, self.model.channels, opts.max_pixels, stats, self._lock)
        io_pool = ThreadPoolExecutor(io_threads, "bulklabel-read") if io_threads else None
        max_inflight = 2 * opts.batch_size + io_threads + decode_threads(opts)
        batch = self.predictor.new_batch()
        inflight: deque[tuple[str, Future]] = deque(head)
        pending: list[tuple[str, int | str]] = []  # (source, batch row) or (source, error reason)
        filled = 0

        def flush() -> None:
            nonlocal filled, pending
            out: list[Record] = []
            if filled:
                t = time.perf_counter()
                scores = self.predictor.predict(batch, filled)
                idx, val = top_k(scores, opts.top_k)
                stats.stages["predict"] += time.perf_counter() - t
                decode_pool.observe(sum(1 for _, f in inflight if f.done()))
                best = ranked(self.model, idx, val)
            for source, slot in pending:
                if isinstance(slot, int):
                    out.append(records.prediction(source, self.model.model_id, best[slot]))
                else:
                    out.append(records.failure(source, self.model.model_id, slot))
                    stats.errors += 1
            t = time.perf_counter()
            emit(out)
            stats.stages["write"] += time.perf_counter() - t
            if stats.first_batch is None:
                stats.first_batch = time.perf_counter() - start
            stats.images += len(out)
            stats.seconds = time.perf_counter() - start
            pending, filled = [], 0
            if progress:
                progress(stats)

        try:
            while True:
                while not exhausted and len(inflight) < max_inflight:
                    source = next(listing, None)
                    if source is None:
                        exhausted = True
                    else:
                        inflight.append((source, self._submit(source, work, decode_pool, io_pool)))
                if not inflight:
                    break
                source, future = inflight.popleft()
                t = time.perf_counter()
                result = future.result()
                stats.stages["wait"] += time.perf_counter() - t
                if isinstance(result, np.ndarray):
                    batch[filled] = result
                    pending.append((source, filled))
                    filled += 1
                else:
                    pending.append((source, result))
                # Full batch; or only errors waiting (emit them now); or a long run of errors.
                if filled == opts.batch_size or (pending and not filled) or len(pending) >= 8 * opts.batch_size:
                    flush()
            if pending:
                flush()
        finally:
            decode_pool.shutdown()
            if io_pool:
                io_pool.shutdown(wait=True, cancel_futures=True)
        stats.seconds = time.perf_counter() - start
        stats.low_priority_batches = decode_pool.low_batches
        if prefetched is not None:
            prefetched.add_stages(stats)
        return stats

    def _submit(self, source: str, work: ImageWork, decode_pool, io_pool) -> Future:
        """Start reading and decoding ``source``; the future holds pixels or an error reason."""
        out: Future = Future()
        if io_pool is None:
            decode_pool.submit(work.read_then_decode, source, out)
        else:
            def fetched() -> None:
                data = work.read(source, out)
                if data is not None:
                    decode_pool.submit(work.decode, data, out)

            io_pool.submit(fetched)
        return out


@dataclass
class ImageWork:
    """Read and decode one image into a future: pixels, or the reason it cannot be used.
    Stage seconds are added to ``stats`` (under ``lock``: the work runs on pool threads)."""

    reader: SourceReader
    size: tuple[int, int]
    channels: int
    max_pixels: int
    stats: JobStats
    lock: threading.Lock

    def _add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.stats.stages[stage] += seconds

    def decode(self, data: bytes, out: Future) -> None:
        t = time.perf_counter()
        try:
            out.set_result(decode_image(data, self.size, self.channels, self.max_pixels))
        except ImageError as exc:
            out.set_result(exc.reason)
        except Exception as exc:  # a decoder bug must not stop the job
            out.set_result(f"cannot decode image ({type(exc).__name__}: {exc})")
        finally:
            self._add("decode", time.perf_counter() - t)

    def read(self, source: str, out: Future) -> bytes | None:
        t = time.perf_counter()
        try:
            return self.reader.read(source)
        except ImageError as exc:
            out.set_result(exc.reason)
        except Exception as exc:
            out.set_result(f"cannot read ({type(exc).__name__}: {exc})")
        finally:
            self._add("read", time.perf_counter() - t)
        return None

    def read_then_decode(self, source: str, out: Future) -> None:
        data = self.read(source, out)
        if data is not None:
            self.decode(data, out)
