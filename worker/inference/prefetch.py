"""The first images of a job, read and decoded while TensorFlow starts and the model loads.

A one-off job spends its first seconds importing TensorFlow and building the model, on one
core. Decoding needs only Pillow and the model's input size, and that size is usually known
before the model is: ``--image-size``, the metadata a bulklabel model carries (read from
the file without TensorFlow), or the standard size of a Keras Applications model. So the
job's first sources are listed and decoded on the other cores meanwhile, for as long as the
model takes to load (within a memory bound), and handed to the engine
(``Engine.run(prefetched=...)``). If the loaded model turns out to want another size, they
are simply decoded again: a wrong guess costs the head start, never a record.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from bulklabel.options import ModelOptions
from bulklabel.storage import SourceReader

from .engine import STAGES, ImageWork, JobStats

# Keras Applications whose default input is not 224x224 (the rest take 224).
_APPLICATION_SIZES = {
    "Xception": 299, "InceptionV3": 299, "InceptionResNetV2": 299, "NASNetLarge": 331,
    "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300, "EfficientNetB4": 380,
    "EfficientNetB5": 456, "EfficientNetB6": 528, "EfficientNetB7": 600,
    "EfficientNetV2B1": 240, "EfficientNetV2B2": 260, "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384, "EfficientNetV2M": 480, "EfficientNetV2L": 480,
}


def expected_input(spec: str, options: ModelOptions) -> tuple[tuple[int, int], int] | None:
    """(size, channels) the model will most likely want, found without TensorFlow; None if unknown."""
    if options.image_size:
        return tuple(options.image_size), 3
    if spec.startswith("keras:"):
        return (_APPLICATION_SIZES.get(spec[len("keras:"):], 224),) * 2, 3
    try:
        from .metadata import read_metadata

        size = (read_metadata(spec) or {}).get("image_size")
    except Exception:  # the loader will say what is wrong with the file; here it only costs the head start
        return None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
        return (size[0], size[1]), 3
    return None


class Prefetch:
    """Reads and decodes the first of ``sources`` on ``threads`` threads while the model loads.

    A feeder thread lists the sources and keeps ``2 × threads`` images read or decoding until
    ``handover`` (the engine is ready) or until ``limit`` images are ahead: decoding the job's
    first images uses the cores that TensorFlow's start-up leaves idle (it imports and builds
    on one), so the more of them are done by then, the sooner the job ends. ``limit`` bounds
    the memory they hold (``ahead_limit``)."""

    def __init__(self, sources: Iterable[str], size: tuple[int, int], channels: int, max_pixels: int,
                 reader: SourceReader, limit: int, threads: int):
        self.size, self.channels, self.max_pixels = size, channels, max_pixels
        self.rest: Iterator[str] = iter(sources)
        self.stats = JobStats()
        self.head: list[tuple[str, Future]] = []
        self.decoded_ahead = 0  # how many were done when the engine took them over
        self._limit = max(1, limit)
        self.threads = threads
        self._work = ImageWork(reader, size, channels, max_pixels, self.stats, threading.Lock())
        self._pool = ThreadPoolExecutor(threads, "bulklabel-prefetch")
        self._slots = threading.Semaphore(2 * threads)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, name="bulklabel-prefetch-list", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        try:
            while len(self.head) < self._limit:
                self._slots.acquire()  # a decode finished, or _halt woke it
                if self._stop.is_set():  # checked before a source is taken: none is lost
                    return
                source = next(self.rest, None)
                if source is None:
                    return
                out: Future = Future()
                out.add_done_callback(lambda _: self._slots.release())
                self._pool.submit(self._work.read_then_decode, source, out)
                self.head.append((source, out))
        except BaseException as exc:  # the listing failed: raised again by handover
            self._error = exc
        finally:
            self._pool.shutdown(wait=False)  # its threads end when the head is decoded

    def _halt(self) -> None:
        self._stop.set()
        self._slots.release()  # wakes a feeder waiting for a slot
        self._feeder.join()

    def handover(self, size: tuple[int, int], channels: int, max_pixels: int,
                 sources: Iterable[str]) -> tuple[list[tuple[str, Future]], Iterable[str]]:
        """Stop reading ahead; (decoded head, the sources still to list) for a model of
        ``size``/``channels``; an empty head (and its sources put back in front) when those
        are not what was guessed."""
        self._halt()
        if self._error is not None:
            raise self._error
        self.decoded_ahead = sum(1 for _, out in self.head if out.done())
        if (tuple(size), channels, max_pixels) == (self.size, self.channels, self.max_pixels):
            return self.head, sources
        self._pool.shutdown(wait=False, cancel_futures=True)  # decoded at the wrong size: stop
        return [], itertools.chain((source for source, _ in self.head), sources)

    def add_stages(self, stats: JobStats) -> None:
        """Count the head's read and decode seconds in the job's ``stats``."""
        for stage in STAGES:
            stats.stages[stage] += self.stats.stages[stage]

    def cancel(self) -> None:
        self._halt()
        self._pool.shutdown(wait=False, cancel_futures=True)


AHEAD_BYTES = 64 << 20  # pixels decoded ahead at most (224 × 224 RGB: 445 images)


def ahead_limit(size: tuple[int, int], channels: int, batch_size: int) -> int:
    """Images to decode ahead at most: 8 batches, within ``AHEAD_BYTES`` of pixels, at least 2 batches."""
    fit = AHEAD_BYTES // max(1, size[0] * size[1] * channels)
    return max(2 * batch_size, min(8 * batch_size, fit))


def ahead_threads(decode_threads: int, cores: int) -> int:
    """Threads decoding ahead: one core is TensorFlow's start-up (one thread), the others decode."""
    return max(1, min(decode_threads, cores - 1))
