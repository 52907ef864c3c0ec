"""Commands of the distributed mode: worker, submit, status, results."""

from __future__ import annotations

import argparse
import sys

from ..settings import env_default, positive_int
from .options import (
    add_engine_options, add_model_options, add_redis_option, engine_values, model_values, threads,
)

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

examples:
  bulklabel worker --model flowers.keras                       # every GPU here, or the CPU
  bulklabel worker --model keras:Xception --gpus 0,1 --queue xception
  bulklabel worker --model m.keras --gpus none --threads 1     # a CPU worker sharing a host
  BULKLABEL_REDIS_URL=rediss://:secret@redis.internal:6380/0 bulklabel worker --model m.keras
"""


SUBMIT_HELP = """\
Queue a labeling job: list SOURCEs lazily and enqueue chunks of image locations for the
workers. Prints the job id as the last line of standard output.

SOURCE is what 'classify' takes (files, folders, globs, @list.txt) plus s3://bucket/prefix
(every image key under it); lines of a list may be s3:// URIs. Workers read the images
themselves, so local paths must be visible to them (one host, or a shared mount).

DEST (--out) is a local folder (shared with the workers) or s3://bucket/prefix. Each
chunk writes DEST/<job_id>/part-<chunk>.jsonl; when the job completes,
DEST/<job_id>/_SUCCESS holds its summary. Merge with 'bulklabel results'.

examples:
  bulklabel submit /archive/2024 --out /shared/labels --wait
  bulklabel submit s3://photos/raw/ --out s3://photos/labels --chunk-size 500
  bulklabel submit @nightly.txt --out s3://b/labels --job-id nightly-$(date +%F)
"""


def add_worker(sub) -> None:
    p = sub.add_parser("worker", help="label queued chunks: one process per GPU",
                       description=WORKER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p)
    add_engine_options(p)
    g = p.add_argument_group("worker")
    g.add_argument("--gpus", default=env_default("--gpus", "auto"),
                   help="auto (every visible GPU, else one CPU process), none (CPU), or ids like 0,1")
    g.add_argument("--queue", "-Q", default=env_default("--queue", "bulklabel"), help="queue to consume")
    add_redis_option(g)
    p.set_defaults(run=_worker)


def add_submit(sub) -> None:
    p = sub.add_parser("submit", help="queue a job for the workers",
                       description=SUBMIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", "-o", required=env_default("--dest") is None, default=env_default("--dest"),
                   metavar="DEST", help="local folder or s3://bucket/prefix for the results")
    p.add_argument("--queue", "-Q", default=env_default("--queue", "bulklabel"),
                   help="queue of the workers serving the model you want (default bulklabel)")
    p.add_argument("--chunk-size", default=env_default("--chunk-size", "256"), metavar="N",
                   help="images per task (default 256)")
    p.add_argument("--job-id", default=None, metavar="ID",
                   help="name the job (letters, digits, . _ -); refused if it exists")
    p.add_argument("--wait", action="store_true",
                   help="show progress (done/total, errors, images/s, ETA) until the job ends; "
                        "exit 1 if it failed")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="with --wait: always draw the progress bar (default: only on a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")
    add_redis_option(p)
    p.set_defaults(run=_submit)


def add_status(sub) -> None:
    p = sub.add_parser("status", help="show a job's progress",
                       description="Show a job's state, counts, speed, models and workers.")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true",
                   help="one JSON object (job_id, state, total, done, errors, ...)")
    p.add_argument("--watch", action="store_true", help="refresh until the job ends")
    add_redis_option(p)
    p.set_defaults(run=_status)


def add_results(sub) -> None:
    p = sub.add_parser("results", help="merge a job's shards into one file",
                       description="Merge DEST/<job_id>/part-*.jsonl into one .jsonl, .csv or .parquet "
                                   "file with exactly one record per image.")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output .jsonl, .csv or .parquet")
    p.add_argument("--partial", action="store_true", help="merge what exists even if the job is not done")
    add_redis_option(p)
    p.set_defaults(run=_results)


def _worker(args: argparse.Namespace) -> int:
    from ..settings import max_deliveries, redis_url, visibility_timeout
    from worker.service import WorkerConfig
    from worker.supervisor import Supervisor, detect_gpus

    config = WorkerConfig(
        model=args.model, queue=args.queue, redis_url=redis_url(args.redis),
        visibility_timeout=visibility_timeout(), max_deliveries=max_deliveries(),
        threads=threads(args), mixed_precision=args.mixed_precision, model_options=model_values(args),
        **engine_values(args),
    )
    return Supervisor(config, detect_gpus(args.gpus)).run()


def _submit(args: argparse.Namespace) -> int:
    from ..settings import redis_url
    from producer.status import wait
    from producer.submit import Submission, submit

    url = redis_url(args.redis)
    job_id = submit(Submission(sources=args.sources, dest=args.out, redis_url=url, queue=args.queue,
                               chunk_size=positive_int(args.chunk_size, "--chunk-size"),
                               job_id=args.job_id))
    code = 0
    if args.wait:
        job = wait(url, job_id, progress=args.progress)
        print(f"job {job_id} {job['state']}: {job['done']} images, {job['errors']} errors, "
              f"{job['seconds']:.1f} s, {job['images_per_second']} images/s", file=sys.stderr)
        code = 0 if job["state"] == "done" else 1
    print(job_id, flush=True)
    return code


def _status(args: argparse.Namespace) -> int:
    from ..settings import redis_url
    from producer.status import status

    job = status(redis_url(args.redis), args.job_id, as_json=args.json, watch=args.watch)
    return 1 if job["state"] == "failed" else 0


def _results(args: argparse.Namespace) -> int:
    from ..settings import redis_url
    from producer.results import merge

    merge(redis_url(args.redis), args.job_id, args.out, partial=args.partial)
    return 0
