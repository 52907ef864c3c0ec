"""``bulklabel classify``: the embedded job, one process, no services.

The caller configures the runtime first (``runtime.configure``, once per process).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from bulklabel.options import EngineOptions, ModelOptions
from bulklabel.output_lock import OutputLock
from bulklabel.progress import BackgroundCounter, ProgressBar
from bulklabel.resume import OutputScan, resume_output
from bulklabel.sinks import open_sink, output_format
from bulklabel.sources import check_sources, iter_sources
from bulklabel.storage import s3_lister

from .engine import JobStats, open_engine


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


def run(job: ClassifyJob, prepared: Prepared | None = None) -> JobStats:
    """Label the job's sources into its output (``prepared`` as ``prepare`` returns it)."""
    prepared = prepared or prepare(job)
    try:
        return _run(job, prepared)
    finally:
        prepared.lock.release()


def _run(job: ClassifyJob, prepared: Prepared) -> JobStats:
    from .models import load_model

    done = prepared.done

    t = time.perf_counter()
    model = load_model(job.model, job.model_options)
    for note in model.warnings:
        print(f"bulklabel: note: {note}", file=sys.stderr)
    engine = open_engine(model, job.engine_options)
    engine.warmup()
    load_seconds = time.perf_counter() - t

    def todo():
        return (s for s in iter_sources(job.sources, s3_lister()) if s not in done)

    sink = open_sink(job.out, append=job.resume)
    bar = ProgressBar(enabled=job.progress, total=BackgroundCounter(todo()))
    try:
        stats = engine.run(todo(), sink.write, lambda s: bar.update(s.images, s.errors))
    finally:
        sink.close()
    bar.close(stats.images, stats.errors)
    if job.resume:
        n = len(prepared.scan.damaged) if prepared.scan else 0
        dropped = f"; {n} damaged line{'s' if n != 1 else ''} dropped and {'its image' if n == 1 else 'their images'}"
        print(f"resumed: {len(done)} images already had a record in {job.out} and were skipped"
              + (f"{dropped} labeled again" if n else ""))
    print(
        f"classified {stats.images} images ({stats.errors} errors) in {stats.seconds:.1f} s, "
        f"{stats.rate:.1f} images/s; model {model.model_id} loaded in {load_seconds:.1f} s; "
        f"wrote {os.path.abspath(job.out)}"
    )
    if job.profile:
        print(f"stage times: {stats.profile()}; traces: {engine.predictor.traces}")
    if job.summary_json:
        import json

        with open(job.summary_json, "w", encoding="utf-8") as f:
            json.dump({"images": stats.images, "errors": stats.errors, "seconds": round(stats.seconds, 4),
                       "images_per_second": round(stats.rate, 3), "load_seconds": round(load_seconds, 3),
                       "model": model.model_id, "batch_size": engine.predictor.batch_size,
                       "stages": {k: round(v, 4) for k, v in stats.stages.items()},
                       "traces": engine.predictor.traces, "out": os.path.abspath(job.out)}, f, indent=2)
    return stats
