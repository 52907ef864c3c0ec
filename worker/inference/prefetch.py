"""The first images of a job, read and decoded while TensorFlow starts and the model loads.

A one-off job spends its first seconds importing TensorFlow and building the model, on one
core. Decoding needs only Pillow and the model's input size, and that size is usually known
before the model is: ``--image-size``, the metadata a bulklabel model carries (read from
the file without TensorFlow), or the standard size of a Keras Applications model. So the
first ``count`` sources are listed and decoded on other threads meanwhile, and handed to
the engine (``Engine.run(prefetched=...)``). If the loaded model turns out to want another
size, they are simply decoded again: a wrong guess costs the head start, never a record.
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
    """Reads and decodes the first ``count`` of ``sources`` on ``threads`` threads, at once."""

    def __init__(self, sources: Iterable[str], size: tuple[int, int], channels: int, max_pixels: int,
                 reader: SourceReader, count: int, threads: int):
        self.size, self.channels, self.max_pixels = size, channels, max_pixels
        self.rest: Iterator[str] = iter(sources)
        self.stats = JobStats()
        self._pool = ThreadPoolExecutor(threads, "bulklabel-prefetch")
        work = ImageWork(reader, size, channels, max_pixels, self.stats, threading.Lock())
        self.head: list[tuple[str, Future]] = []
        self.decoded_ahead = 0  # how many were done when the engine took them over
        for source in itertools.islice(self.rest, count):
            out: Future = Future()
            self._pool.submit(work.read_then_decode, source, out)
            self.head.append((source, out))
        self._pool.shutdown(wait=False)  # its threads end when the head is decoded
        self.whole_job = len(self.head) < count  # the listing ended within the head: the job's size is known

    def handover(self, size: tuple[int, int], channels: int, max_pixels: int,
                 sources: Iterable[str]) -> tuple[list[tuple[str, Future]], Iterable[str]]:
        """(decoded head, the sources still to list) for a model of ``size``/``channels``; an
        empty head (and its sources put back in front) when those are not what was guessed."""
        self.decoded_ahead = sum(1 for _, out in self.head if out.done())
        if (tuple(size), channels, max_pixels) == (self.size, self.channels, self.max_pixels):
            return self.head, sources
        return [], itertools.chain((source for source, _ in self.head), sources)

    def add_stages(self, stats: JobStats) -> None:
        """Count the head's read and decode seconds in the job's ``stats``."""
        for stage in STAGES:
            stats.stages[stage] += self.stats.stages[stage]

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
