"""Options of the distributed mode, and the display options some commands share."""

from __future__ import annotations

from .. import settings
from ..settings import DEFAULT_CHUNK_SIZE, DEFAULT_QUEUE, DEFAULT_REDIS_URL
from .core import Option

REDIS = Option(
    ("--redis",), metavar="URL", env=("BULKLABEL_REDIS_URL",), default=DEFAULT_REDIS_URL,
    parse=lambda value, what: settings.redis_url(value),
    help=f"Redis URL (default {DEFAULT_REDIS_URL}; redis://:password@host:port/db and rediss:// "
         "work)")
QUEUE = Option(
    ("--queue", "-Q"), default=DEFAULT_QUEUE,
    help=f"the queue: one per model; workers consume it, submit sends to it (default {DEFAULT_QUEUE})")
GPUS = Option(
    ("--gpus",), default="auto",
    help="auto (every visible GPU, else one CPU process), none (CPU), or ids like 0,1")
DEST = Option(
    ("--out", "-o"), metavar="DEST", env=("BULKLABEL_DEST",), required=True,
    help="local folder or s3://bucket/prefix for the results")
CHUNK_SIZE = Option(
    ("--chunk-size",), metavar="N", default=str(DEFAULT_CHUNK_SIZE), parse=settings.positive_int,
    help=f"images per task (default {DEFAULT_CHUNK_SIZE})")
JOB_ID = Option(
    ("--job-id",), metavar="ID", env=None,
    help="name the job (letters, digits, . _ -); refused if it exists in Redis, or if DEST/ID/ "
         "already holds files (see --replace)")
REPLACE = Option(
    ("--replace",), switch=True, default=False, parse=settings.boolean, env=None,
    help="with --job-id: delete the files an earlier job of that name left in DEST/ID/ before "
         "starting (without it, such files make submit refuse)")
WAIT = Option(
    ("--wait",), switch=True, default=False, parse=settings.boolean, env=None,
    help="show progress (done/total, errors, images/s, ETA) until the job ends; exit 1 if it failed")

INCREMENTAL = Option(
    ("--incremental",), switch=True, default=False, parse=settings.boolean, env=None,
    help="label only what is new: skip every source this model already labeled into DEST with the same "
         "content (local files: size and mtime; S3: ETag and size, from the listing). The index of what "
         "is labeled lives in DEST/_index/ (built from the results; survives a Redis flush)")
MODEL_ID = Option(
    ("--model-id",), metavar="ID", env=None,
    help="with --incremental: the model id to skip for (as 'status' shows it, e.g. flowers@1a2b3c4d5e6f). "
         "Default: the model the live workers of the queue serve, else the one that last labeled DEST")

JSON = Option(("--json",), switch=True, default=False, parse=settings.boolean, env=None,
              help="print one JSON object instead of text")
PROGRESS = Option(
    ("--progress",), switch=True, parse=settings.boolean,
    help="always draw the progress bar (default: only on a terminal)")

ALLOW_DEST = Option(
    ("--allow-dest",), metavar="PREFIX", repeat=True, env=("BULKLABEL_ALLOW_DEST",),
    parse=settings.allowed_destinations,
    help="only write results under this local folder or s3://bucket/prefix (repeat for several; the "
         "variable takes a comma-separated list). A chunk for any other destination is refused, logged "
         "and its job failed; nothing is written. Default: any destination the worker can write")
