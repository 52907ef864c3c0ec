"""``bulklabel classify``: the embedded job, one process, no services.

The caller configures the runtime first (``runtime.configure``, once per process).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bulklabel.options import EngineOptions, ModelOptions
from bulklabel.output_lock import OutputLock
from bulklabel.progress import BackgroundCounter, ProgressBar
from bulklabel.resume import OutputScan, resume_output
from bulklabel.sinks import open_sink, output_format
from bulklabel.sources import check_sources, iter_sources
from bulklabel.storage import s3_lister

from .engine import JobStats, open_engine

if TYPE_CHECKING:
    from .prefetch import Prefetch


@dataclass
class ClassifyJob:
    sources: list[str]
    model: str
    out: str
    model_options: ModelOptions
    engine_options: EngineOptions
    progress: bool | None = None   # None: when stderr is a terminal
    profile: bool = False
    summary_json: str | None = None  # also write the summary as JSON here
    resume: bool = False             # skip sources already in --out and append the rest
    decode_ahead: int | None = None  # images decoded while the model loads (None: ahead_limit, 0: none)


@dataclass
class Prepared:
    done: set[str]       # sources already recorded in --out (when resuming)
    lock: OutputLock     # held until the job ends: one writer per output
    scan: OutputScan | None = None  # what --resume found in --out, and dropped from it


def prepare(job: ClassifyJob) -> Prepared:
    """Check everything that needs no model (fail fast) and take the output's lock. With
    ``resume``, make --out safe to append to (``resume_output``: damaged lines and a partial
    last record are dropped, so their images are labeled again) and say what was dropped."""
    output_format(job.out)
    check_sources(job.sources)
    lock = OutputLock(job.out)
    try:
        if not job.resume:
            return Prepared(set(), lock)
        scan = resume_output(job.out)
        for note in scan.notes(job.out):
            print(f"bulklabel: {note}", file=sys.stderr)
        return Prepared(scan.done, lock, scan)
    except BaseException:
        lock.release()
        raise


def prefetch(job: ClassifyJob, prepared: Prepared) -> Prefetch | None:
    """Start reading and decoding the job's first images (``worker.inference.prefetch``), before
    TensorFlow starts, on every core but the one that starts it, until the model is ready (at
    most ``job.decode_ahead`` images, or ``ahead_limit``); None when the model's input size cannot
    be told without loading it, or ``job.decode_ahead`` is 0."""
    from bulklabel.storage import open_reader

    from .engine import decode_threads, usable_cores
    from .prefetch import Prefetch, ahead_limit, ahead_threads, expected_input
    from .runtime import CPU_BATCH_SIZE

    expected = None if job.decode_ahead == 0 else expected_input(job.model, job.model_options)
    if expected is None:
        return None
    opts = job.engine_options
    size, channels = expected
    limit = job.decode_ahead or ahead_limit(size, channels, opts.batch_size or CPU_BATCH_SIZE)
    return Prefetch(_todo(job, prepared.done), size, channels, opts.max_pixels,
                    open_reader(opts.io_threads, opts.max_bytes), limit,
                    ahead_threads(decode_threads(opts), usable_cores()))


def run(job: ClassifyJob, prepared: Prepared | None = None, head: Prefetch | None = None,
        startup: dict[str, float] | None = None) -> JobStats:
    """Label the job's sources into its output (``prepared`` as ``prepare`` returns it; ``head``
    as ``prefetch`` returns it; ``startup``: seconds of the stages before, for --profile)."""
    prepared = prepared or prepare(job)
    try:
        return _run(job, prepared, head, dict(startup or {}))
    finally:
        prepared.lock.release()
        if head is not None:
            head.cancel()


def _todo(job: ClassifyJob, done: set[str]) -> Iterator[str]:
    return (s for s in iter_sources(job.sources, s3_lister()) if s not in done)


def _run(job: ClassifyJob, prepared: Prepared, head: Prefetch | None, startup: dict[str, float]) -> JobStats:
    from .models import load_model

    t = time.perf_counter()
    model = load_model(job.model, job.model_options)
    for note in model.warnings:
        print(f"bulklabel: note: {note}", file=sys.stderr)
    engine = open_engine(model, job.engine_options)
    startup["model load"] = time.perf_counter() - t
    t = time.perf_counter()
    engine.warmup(compute=False)  # trace only: the first real batch runs the model first
    startup["trace"] = time.perf_counter() - t
    load_seconds = startup["model load"] + startup["trace"]

    sink = open_sink(job.out, append=job.resume)
    bar = ProgressBar(enabled=job.progress, total=BackgroundCounter(_todo(job, prepared.done)))
    todo = head.rest if head is not None else _todo(job, prepared.done)
    try:
        stats = engine.run(todo, sink.write, lambda s: bar.update(s.images, s.errors), prefetched=head)
    finally:
        sink.close()
    bar.close(stats.images, stats.errors)
    if stats.first_batch is not None:
        startup["first batch"] = stats.first_batch
    if head is not None:
        startup["decoded ahead"] = float(head.decoded_ahead)
    if job.resume:
        n = len(prepared.scan.damaged) if prepared.scan else 0
        dropped = f"; {n} damaged line{'s' if n != 1 else ''} dropped and {'its image' if n == 1 else 'their images'}"
        print(f"resumed: {len(prepared.done)} images already had a record in {job.out} and were skipped"
              + (f"{dropped} labeled again" if n else ""))
    print(
        f"classified {stats.images} images ({stats.errors} errors) in {stats.seconds:.1f} s, "
        f"{stats.rate:.1f} images/s; model {model.model_id} loaded in {load_seconds:.1f} s; "
        f"wrote {os.path.abspath(job.out)}"
    )
    concurrency = _concurrency(job.engine_options, head)
    if job.profile:
        print(f"start-up: {_startup_text(startup)}")
        print(f"concurrency: {_concurrency_text(concurrency)}")
        print(f"stage times: {stats.profile()}; traces: {engine.predictor.traces}; decode priority low for "
              f"{stats.low_priority_batches} of {-(-stats.images // engine.predictor.batch_size)} batches")
    if job.summary_json:
        import json

        with open(job.summary_json, "w", encoding="utf-8") as f:
            json.dump({"images": stats.images, "errors": stats.errors, "seconds": round(stats.seconds, 4),
                       "images_per_second": round(stats.rate, 3), "load_seconds": round(load_seconds, 3),
                       "model": model.model_id, "batch_size": engine.predictor.batch_size,
                       "stages": {k: round(v, 4) for k, v in stats.stages.items()},
                       "traces": engine.predictor.traces, "images_computed": engine.predictor.computed,
                       "startup": {k: round(v, 4) for k, v in startup.items()}, "concurrency": concurrency,
                       "out": os.path.abspath(job.out)}, f, indent=2)
    return stats


def _concurrency(options: EngineOptions, head: Prefetch | None) -> dict:
    """The threads this job ran with, and who chose them (for --profile and --summary-json)."""
    from .engine import decode_threads, usable_cores
    from .runtime import tf_thread_counts

    return {"usable cores": usable_cores(), "decode threads": decode_threads(options),
            "decode priority": options.decode_priority,
            "decode-ahead threads": head.threads if head is not None else 0,
            "TensorFlow": tf_thread_counts()}


def _concurrency_text(c: dict) -> str:
    tf = c["TensorFlow"]
    model = (f"TensorFlow intra-op {tf['intra-op']}, inter-op {tf['inter-op']} (chosen by {tf['chosen by']})"
             if "intra-op" in tf else f"Keras backend {tf['backend']}")
    return (f"{c['usable cores']} usable cores; decode {c['decode threads']} threads (priority "
            f"{c['decode priority']}), decode ahead {c['decode-ahead threads']}; {model}")


def _startup_text(startup: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f} images" if k == "decoded ahead" else f"{k} {v:.2f}s" for k, v in startup.items()]
    return ", ".join(parts)
