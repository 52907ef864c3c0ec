"""Options of the distributed mode, and the display options some commands share."""

from __future__ import annotations

from .. import settings
from ..errors import ConfigError
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
TASK_EVENTS = Option(
    ("--task-events",), switch=True, default=True, parse=settings.boolean, env=("BULKLABEL_TASK_EVENTS",),
    help="send Celery task events and worker heartbeats, so Flower shows the workers, each chunk and its "
         "runtime (Redis pub/sub: about one message per chunk, one per 5 s per worker process). "
         "BULKLABEL_TASK_EVENTS=0 turns them off (read by each worker process)")


def port(value, what: str) -> int | None:
    """A TCP port (1-65535); empty → None."""
    if value in (None, ""):
        return None
    number = settings.positive_int(value, what)
    if number > 65535:
        raise ConfigError(f"{what} must be a TCP port, 1 to 65535. Received: {what}={number}")
    return number


def queue_names(value, what: str) -> tuple[str, ...]:
    """Repeated ``--queue`` flags (a list) or one comma-separated string; none → ()."""
    if value in (None, ""):
        return ()
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


METRICS_PORT = Option(
    ("--metrics-port",), metavar="PORT", parse=port,
    help="serve Prometheus metrics over HTTP on this port (all interfaces: /metrics). With several "
         "GPU processes, process i serves PORT+i (GPUs 0,1 with --metrics-port 9200: 9200 and 9201); "
         "a port already in use stops the worker at start (exit 2). Default: no metrics")
LOG_FORMAT = Option(
    ("--log-format",), default="text", choices=("text", "json"), parse=settings.choice(("text", "json")),
    help="text (default) or json: one JSON object per line with time (ISO 8601, UTC), level, logger, "
         "message, and worker, job_id and chunk while a chunk is being labeled; exc_info holds a traceback")
EXPORTER_PORT = Option(
    ("--port",), metavar="PORT", env=("BULKLABEL_EXPORTER_PORT",), required=True, parse=port,
    help="serve the metrics over HTTP on this port (all interfaces: /metrics)")
EXPORTER_QUEUES = Option(
    ("--queue", "-Q"), metavar="QUEUE", repeat=True, env=("BULKLABEL_EXPORTER_QUEUES",), parse=queue_names,
    help="a queue to report (repeat for several; the variable takes a comma-separated list). Default: "
         "every queue a live worker serves, and every queue seen since the exporter started")

PLAN = Option(
    ("--plan",), switch=True, default=False, parse=settings.boolean, env=None,
    help="print the GPU node plan (CPU cores per GPU that keep it fed, for typical JPEGs, 12 MP photos and "
         "PNGs, and what this host's cores per GPU decode) and exit; needs no --model")
GPU_RATE = Option(
    ("--gpu-rate",), metavar="IMAGES_PER_S", default="3000", parse=settings.positive_int, env=None,
    help="with --plan: the images/s one GPU labels (default 3000: a ResNet50-class model on a modern GPU)")
