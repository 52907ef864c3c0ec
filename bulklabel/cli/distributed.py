"""Commands of the distributed mode: worker, submit, status, cancel, results, snapshot, exporter."""

from __future__ import annotations

import argparse
import sys

from .. import settings
from ..options import EngineOptions, ModelOptions, Option, RuntimeOptions, add_options, from_args
from ..options.distributed import (
    ALLOW_DEST,
    CHUNK_SIZE,
    DEST,
    EXPORTER_PORT,
    EXPORTER_QUEUES,
    GPU_RATE,
    GPUS,
    INCREMENTAL,
    JOB_ID,
    JSON,
    LOG_FORMAT,
    METRICS_PORT,
    MODEL_ID,
    PLAN,
    PROGRESS,
    QUEUE,
    REDIS,
    REPLACE,
    WAIT,
)
from ..options.inference import MODEL

WORKER_HELP = """\
Run a worker: load the model once per process, warm it up, then label the chunks that
'bulklabel submit' queues in Redis, writing one shard per chunk to the job's destination.

One process runs per GPU, pinned with CUDA_VISIBLE_DEVICES before TensorFlow starts, and is
restarted if it dies; with no GPU, one CPU process runs. Start workers on as many machines
as you like against the same Redis: they share the queue. Serve one model per queue.

SIGTERM (or Ctrl-C) lets each process finish its current chunk, then exit; a second one
stops at once. A chunk whose worker dies is handed to another worker once the visibility
timeout passes (BULKLABEL_VISIBILITY_TIMEOUT, seconds, default 3600: keep it above your
slowest chunk); a chunk that kills BULKLABEL_MAX_DELIVERIES (3) workers gets error records.

Monitoring: --metrics-port PORT serves Prometheus metrics at http://HOST:PORT/metrics, one
port per process counting up from PORT (the process on the i-th GPU listed gets PORT+i):
bulklabel_images_total{outcome}, bulklabel_chunks_total{outcome}, bulklabel_chunk_seconds,
bulklabel_stage_seconds_total{stage}, bulklabel_model_load_seconds,
bulklabel_last_chunk_timestamp_seconds and bulklabel_worker_info. A port already in use stops
the worker at start (exit 2). Queue depth comes from 'bulklabel exporter'. --log-format json
writes one JSON object per log line (time, level, logger, message; worker, job_id and chunk
while a chunk is labeled).

examples:
  bulklabel worker --model flowers.keras                       # every GPU here, or the CPU
  bulklabel worker --model keras:Xception --gpus 0,1 --queue xception
  bulklabel worker --model m.keras --gpus none --threads 1     # a CPU worker sharing a host
  BULKLABEL_REDIS_URL=rediss://:secret@redis.internal:6380/0 bulklabel worker --model m.keras
  bulklabel worker --model m.keras --gpus 0,1 --metrics-port 9200 --log-format json  # 9200, 9201
  bulklabel worker --plan --gpu-rate 5000     # CPU cores per GPU that keep a 5,000 images/s GPU fed
"""

EXPORTER_HELP = """\
Serve queue metrics for Prometheus, read from Redis on each scrape (run one per Redis):

  bulklabel_queue_messages{queue}            chunks waiting on the queue
  bulklabel_queue_unacked_messages{queue}    chunks delivered to a worker, not acknowledged yet
  bulklabel_workers{queue}                   live worker processes on the queue
  bulklabel_dead_letters{queue}              messages moved aside (bulklabel:dead:<queue>)
  bulklabel_exporter_redis_up                0 while Redis cannot be read

Each scrape costs a SCAN of the worker heartbeats, five LLEN per queue and an HSCAN of
kombu's 'unacked' hash (one entry per chunk in flight; at most 10,000 read). Worker
throughput comes from each worker's own --metrics-port.

examples:
  bulklabel exporter --port 9300                              # the queues live workers serve
  bulklabel exporter --port 9300 --queue xception --queue flowers --log-format json
"""


SUBMIT_HELP = """\
Queue a labeling job: list SOURCEs lazily and enqueue chunks of image locations for the
workers. Prints the job id as the last line of standard output.

SOURCE is what 'classify' takes (files, folders, globs, file:// URIs, @list.txt) plus s3://bucket/prefix
(every image key under it); lines of a list may be s3:// URIs. Workers read the images
themselves, so local paths must be visible to them (one host, or a shared mount).

DEST (--out) is a local folder (shared with the workers) or s3://bucket/prefix. Each
chunk writes DEST/<job_id>/part-<chunk>.jsonl; when the job completes,
DEST/<job_id>/_SUCCESS holds its summary. Merge with 'bulklabel results'.

--incremental labels only what is new: a source this model already labeled into DEST,
unchanged since (same size and mtime; on S3 the same ETag and size), is skipped. A night's
cost follows what changed, not the size of the archive. Sources that got an error record
are tried again. 'bulklabel snapshot DEST' gives the latest label of every source; for
nightly runs, see 'bulklabel scheduler'.

examples:
  bulklabel submit /archive/2024 --out /shared/labels --wait
  bulklabel submit s3://photos/raw/ --out s3://photos/labels --chunk-size 500
  bulklabel submit @nightly.txt --out s3://b/labels --job-id nightly-$(date +%F)
  bulklabel submit s3://photos/raw/ --out s3://photos/labels --incremental   # only what is new
"""

SNAPSHOT_HELP = """\
Write the standing "labels as of now" table of a destination: one record per source, its
latest successful label across every job that wrote to DEST (incremental or not), or its
latest error if no job labeled it. Reads the results in storage only (no Redis).

examples:
  bulklabel snapshot s3://photos/labels --out labels-today.parquet
  bulklabel snapshot /shared/labels --out now.csv --model flowers@1a2b3c4d5e6f
"""

STATUS_HELP = """\
Show a job's state, counts, speed, models and workers.

states: queued (no worker started it yet), running, done, failed (the reason is shown),
cancelled, and stalled: queued or running with no progress for longer than the
visibility timeout (BULKLABEL_VISIBILITY_TIMEOUT) while no live worker serves its queue
(it resumes when a worker comes back), or with its listing unfinished while the submit
that listed it is gone (killed outright); cancel it and submit again.

Exit status: 0 for queued, running and done; 1 for failed, cancelled and stalled;
2 when Redis cannot be reached; 4 for an unknown job.
"""

CANCEL_HELP = """\
Cancel a queued or running job: it is marked cancelled at once, the submit still
listing it stops, and workers drop its remaining chunks as they reach them (a chunk being
labeled right now is finished and counted). The shards already written stay in
DEST/<job_id>/; 'bulklabel results JOB --partial' merges them.

Exit status: 0 if the job is now cancelled (also when it already was), 1 if it had
already ended (done or failed: nothing changes), 4 for an unknown job.

examples:
  bulklabel cancel nightly-2026-11-22
  bulklabel cancel 20261122-101500-3f2a --reason "wrong model"
"""

REASON = Option(("--reason",), metavar="TEXT", default="cancelled by the user", env=None,
                help="why (shown by status; default: cancelled by the user)")

WATCH = Option(("--watch",), switch=True, default=False, parse=settings.boolean, env=None,
               help="refresh until the job ends")
RESULTS_OUT = Option(("--out", "-o"), metavar="FILE", required=True, env=None,
                     help="output .jsonl, .csv or .parquet")
SNAPSHOT_MODEL = Option(("--model",), metavar="ID", env=None,
                        help="the model whose labels to take (default: the newest job's model)")
PARTIAL = Option(("--partial",), switch=True, default=False, parse=settings.boolean, env=None,
                 help="merge what exists even if the job is not done")


def add_worker(sub) -> None:
    p = sub.add_parser("worker", help="label queued chunks: one process per GPU",
                       description=WORKER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, MODEL, ModelOptions, title="model")
    add_options(p, EngineOptions, title="engine")
    add_options(p, RuntimeOptions, title="TensorFlow")
    add_options(p, GPUS, QUEUE, REDIS, ALLOW_DEST, title="worker")
    add_options(p, METRICS_PORT, LOG_FORMAT, title="monitoring")
    add_options(p, PLAN, GPU_RATE, title="GPU node plan")
    for action in p._actions:  # --plan needs no model: _worker asks for one otherwise
        if action.dest == MODEL.dest:
            action.required = False
    p.set_defaults(run=_worker)


def add_exporter(sub) -> None:
    p = sub.add_parser("exporter", help="serve queue depth and workers per queue for Prometheus",
                       description=EXPORTER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, EXPORTER_PORT, EXPORTER_QUEUES, REDIS, LOG_FORMAT)
    p.set_defaults(run=_exporter)


def add_submit(sub) -> None:
    p = sub.add_parser("submit", help="queue a job for the workers",
                       description=SUBMIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    add_options(p, DEST, QUEUE, CHUNK_SIZE, JOB_ID, REPLACE, INCREMENTAL, MODEL_ID, WAIT, PROGRESS, REDIS)
    p.set_defaults(run=_submit)


def add_snapshot(sub) -> None:
    p = sub.add_parser("snapshot", help="the latest label of every source in DEST, across jobs",
                       description=SNAPSHOT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", metavar="DEST", help="the local folder or s3://bucket/prefix that jobs wrote to")
    add_options(p, RESULTS_OUT, SNAPSHOT_MODEL)
    p.set_defaults(run=_snapshot)


def add_status(sub) -> None:
    from .schedule import LIMIT, STATUS_SCHEDULE

    p = sub.add_parser("status", help="show a job's progress (or a schedule's runs)",
                       description=STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="With --schedule FILE (and no JOB_ID): the recent runs of each scheduled job, "
                              "newest first, and\nwho holds the scheduler lease; exit 1 if a job's newest run "
                              "failed, was cancelled or is stalled.\n\n"
                              "examples:\n  bulklabel status 20261122-101500-3f2a --watch\n"
                              "  bulklabel status --schedule nightly.toml --limit 5")
    p.add_argument("job_id", metavar="JOB_ID", nargs="?", help="the job (not with --schedule)")
    add_options(p, JSON, WATCH, REDIS, STATUS_SCHEDULE, LIMIT)
    p.set_defaults(run=_status)


def add_cancel(sub) -> None:
    p = sub.add_parser("cancel", help="cancel a job: workers drop its queued chunks",
                       description=CANCEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id", metavar="JOB_ID")
    add_options(p, REASON, REDIS)
    p.set_defaults(run=_cancel)


def add_results(sub) -> None:
    p = sub.add_parser("results", help="merge a job's shards into one file",
                       description="Merge DEST/<job_id>/part-*.jsonl into one .jsonl, .csv or .parquet "
                                   "file with exactly one record per image.")
    p.add_argument("job_id", metavar="JOB_ID")
    add_options(p, RESULTS_OUT, PARTIAL, REDIS)
    p.set_defaults(run=_results)


def _worker(args: argparse.Namespace) -> int:
    from worker.serving.process import WorkerConfig
    from worker.serving.supervisor import Supervisor, detect_gpus

    if PLAN.value(args):
        return _plan(args, detect_gpus(GPUS.value(args)))
    if not MODEL.value(args):
        from ..errors import ConfigError

        raise ConfigError("worker needs --model MODEL (or BULKLABEL_MODEL); only --plan runs without one")
    config = WorkerConfig(
        model=MODEL.value(args), queue=QUEUE.value(args), redis_url=REDIS.value(args),
        visibility_timeout=settings.visibility_timeout(), max_deliveries=settings.max_deliveries(),
        model_options=from_args(ModelOptions, args), engine=from_args(EngineOptions, args),
        runtime=from_args(RuntimeOptions, args), allow_dest=ALLOW_DEST.value(args),
        metrics_port=METRICS_PORT.value(args), log_format=LOG_FORMAT.value(args) or "text",
    )
    return Supervisor(config, detect_gpus(GPUS.value(args))).run()


def _plan(args: argparse.Namespace, devices: list[str]) -> int:
    """Print the GPU node plan for this host (its usable cores, the GPU processes --gpus gives)."""
    from worker.inference.engine import usable_cores
    from worker.serving.plan import plan, render

    gpus = len([d for d in devices if d != "cpu"])
    print(render(plan(GPU_RATE.value(args), cores=usable_cores() if gpus else None, gpus=gpus or None)), end="")
    return 0


def _exporter(args: argparse.Namespace) -> int:
    from producer.exporter import serve

    return serve(REDIS.value(args), EXPORTER_PORT.value(args), EXPORTER_QUEUES.value(args),
                 log_format=LOG_FORMAT.value(args) or "text")


def _submit(args: argparse.Namespace) -> int:
    from producer.status import wait
    from producer.submit import Submission, submit

    url = REDIS.value(args)
    job_id = submit(Submission(sources=args.sources, dest=DEST.value(args), redis_url=url,
                               queue=QUEUE.value(args), chunk_size=CHUNK_SIZE.value(args),
                               job_id=JOB_ID.value(args), replace=REPLACE.value(args),
                               incremental=INCREMENTAL.value(args), model_id=MODEL_ID.value(args)))
    code = 0
    if WAIT.value(args):
        job = wait(url, job_id, progress=PROGRESS.value(args))
        skipped = f", {job['skipped']} skipped" if job.get("incremental") else ""
        print(f"job {job_id} {job['state']}: {job['done']} images, {job['errors']} errors{skipped}, "
              f"{job['seconds']:.1f} s, {job['images_per_second']} images/s", file=sys.stderr)
        code = 0 if job["state"] == "done" else 1
    print(job_id, flush=True)
    return code


def _status(args: argparse.Namespace) -> int:
    from producer.status import status

    from ..errors import ConfigError
    from .schedule import LIMIT, STATUS_SCHEDULE

    schedule_file = STATUS_SCHEDULE.value(args)
    if schedule_file:
        if args.job_id or WATCH.value(args):
            raise ConfigError("status: give a JOB_ID or --schedule FILE, not both (--watch needs a JOB_ID)")
        from producer.schedule_status import schedule_status

        from ..schedule import load_schedule

        return schedule_status(REDIS.value(args), load_schedule(schedule_file), as_json=JSON.value(args),
                               limit=LIMIT.value(args))
    if not args.job_id:
        raise ConfigError("status needs a JOB_ID (or --schedule FILE for a schedule's runs)")
    job = status(REDIS.value(args), args.job_id, as_json=JSON.value(args),
                 watch=WATCH.value(args))
    return 0 if job["state"] in ("queued", "running", "done") else 1


def _cancel(args: argparse.Namespace) -> int:
    from producer.status import cancel

    return cancel(REDIS.value(args), args.job_id, reason=REASON.value(args))


def _snapshot(args: argparse.Namespace) -> int:
    from producer.snapshot import snapshot
    from producer.submit import normalise_dest

    snapshot(normalise_dest(args.dest), RESULTS_OUT.value(args), model=SNAPSHOT_MODEL.value(args))
    return 0


def _results(args: argparse.Namespace) -> int:
    from producer.results import merge

    merge(REDIS.value(args), args.job_id, RESULTS_OUT.value(args), partial=PARTIAL.value(args))
    return 0
