"""The ``bulklabel`` command line.

Each subcommand imports what it needs when it runs, so the light commands never pay
for TensorFlow. Every option can also come from ``BULKLABEL_<OPTION>`` in the
environment (see ``settings``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import __version__
from .errors import BulkLabelError
from .settings import env_default, positive_int

CLASSIFY_HELP = """\
Classify images with a Keras model in this process (no services needed) and write one
record per image: source, label, score, top_k, model, error.

SOURCE can be a file, a folder (searched recursively for .jpg .jpeg .png .gif .bmp .tif
.tiff .webp, any case), a glob such as 'photos/**/*.jpg', or @list.txt with one path
per line. Give as many as you like.

MODEL can be a .keras file, a legacy .h5 file, a TensorFlow SavedModel folder, or
keras:<Name> for a Keras Applications model with ImageNet weights (keras:Xception,
keras:MobileNetV2, keras:ResNet50, keras:EfficientNetB0, ...).

examples:
  bulklabel classify photos/ --model flowers.keras
  bulklabel classify 'archive/**/*.jpg' --model keras:MobileNetV2 --out labels.parquet
  bulklabel classify @todo.txt --model old.h5 --labels classes.txt --preprocess tf
  bulklabel classify scans/ --model keras:Xception --weights xception.h5 --top-k 3

Images that cannot be read or decoded get a record whose 'error' says why; the job goes
on and exits 0. A bad model, a missing source or a bad flag stops it before any work,
with exit status 2 (configuration) or 3 (model).
"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", default=env_default("--model"), required=env_default("--model") is None,
                   help="a .keras/.h5 file, a SavedModel folder, or keras:<Name>")
    g.add_argument("--labels", default=env_default("--labels"), metavar="FILE",
                   help="class names, one per line in output order (default: from the model's metadata)")
    g.add_argument("--preprocess", default=env_default("--preprocess"),
                   choices=("none", "rescale", "tf", "caffe", "torch"),
                   help="pixel scaling the model expects (default: from the model's metadata, else none "
                        "= raw 0-255; rescale = /255; tf = [-1,1]; caffe, torch as in keras.applications)")
    g.add_argument("--weights", default=env_default("--weights"), metavar="FILE",
                   help="keras:<Name> only: load weights from FILE instead of downloading ImageNet "
                        "weights ('none' = random weights, for benchmarks)")
    g.add_argument("--image-size", default=env_default("--image-size"), metavar="N",
                   help="input size N or HxW, for models that accept any size")
    g.add_argument("--unsafe-model", action="store_true",
                   default=env_default("--unsafe-model", "") not in ("", "0", "false"),
                   help="allow models with Lambda layers or file/Python ops (only for files you trust)")


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--batch-size", default=env_default("--batch-size", "auto"), metavar="N",
                   help="images per model call (default auto: 128 on a GPU, 32 on CPU)")
    g.add_argument("--top-k", default=env_default("--top-k", "5"), metavar="K",
                   help="labels kept per image, best first (default 5)")
    g.add_argument("--decode-threads", default=env_default("--decode-threads", "0"), metavar="N",
                   help="threads reading and decoding images (default: one per core)")
    g.add_argument("--io-threads", default=env_default("--io-threads", "0"), metavar="N",
                   help="reads in flight (default: 128 for s3:// images, none for local files, "
                        "which are read by the decode threads); the S3 connection pool matches it")
    g.add_argument("--threads", default=env_default("--threads"), metavar="N",
                   help="bound TensorFlow's CPU threads (default: TensorFlow decides)")
    g.add_argument("--mixed-precision", action="store_true",
                   default=env_default("--mixed-precision", "") not in ("", "0", "false"),
                   help="float16 compute with float32 scores, for keras:<Name> models on GPUs "
                        "with tensor cores")
    g.add_argument("--max-pixels", default=env_default("--max-pixels", "90000000"), metavar="N",
                   help="refuse images with more pixels than this (default 90000000), "
                        "checked before decoding")


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


TRAIN_HELP = """\
Train an image classifier by transfer learning and save it ready to serve.

DATA is a folder with one subfolder per class (DATA/cat/*.jpg, DATA/dog/*.jpg, ...), or with
train/ and val/ subfolders of that shape; otherwise --val-split of each class is held out
(seeded). s3://bucket/prefix works the same way.

Phase 1 (feature extraction): the pretrained BASE is frozen (BatchNormalization in inference
mode) under a new head: global pooling, dropout, softmax. Phase 2 (fine-tuning): the top
--fine-tune-layers of the base are unfrozen and training continues at --fine-tune-lr, 10-100x
lower. --sizes 150,299 trains at 150 first, then continues at 299. Augmentation (flip,
rotation, zoom, contrast) applies to training images only. The best epoch (by validation
accuracy) is what gets saved, with its class names, preprocessing and input size, so
'bulklabel classify --model MODEL' needs no other flag. history.json and history.png (the
curves) are written next to the model.

examples:
  bulklabel train photos/ --out flowers.keras                              # Xception, ImageNet
  bulklabel train photos/ --base MobileNetV2 --sizes 128,224 --out m.keras --epochs 5
  bulklabel train photos/ --base old_model.keras --out new.keras           # transfer from a model
  bulklabel train photos/ --base EfficientNetB0 --weights b0_notop.h5 --out m.h5 --seed 7
"""


def _add_redis_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", default=None, metavar="URL",
                   help="Redis URL (default: $BULKLABEL_REDIS_URL or redis://127.0.0.1:6379/0; "
                        "redis://:password@host:port/db and rediss:// work)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulklabel",
        description="Label whole image archives with a Keras image classifier.",
        epilog="Run 'bulklabel COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"bulklabel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("classify", help="classify images in this process (no services)",
                       description=CLASSIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files, folders, globs or @list files")
    p.add_argument("--out", "-o", default=env_default("--out", "predictions.jsonl"), metavar="PATH",
                   help="output file; .jsonl, .csv or .parquet (default predictions.jsonl)")
    _add_model_options(p)
    _add_engine_options(p)
    g = p.add_argument_group("display")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always draw the progress bar (default: only on a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")
    g.add_argument("--profile", action="store_true", help="print time spent per stage at the end")
    g.add_argument("--summary-json", metavar="FILE",
                   help="also write the end-of-job summary (counts, seconds, images/s, stage times) as JSON")
    p.set_defaults(run=_classify)

    p = sub.add_parser("worker", help="label queued chunks: one process per GPU",
                       description=WORKER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(p)
    _add_engine_options(p)
    g = p.add_argument_group("worker")
    g.add_argument("--gpus", default=env_default("--gpus", "auto"),
                   help="auto (every visible GPU, else one CPU process), none (CPU), or ids like 0,1")
    g.add_argument("--queue", "-Q", default=env_default("--queue", "bulklabel"), help="queue to consume")
    _add_redis_option(g)
    p.set_defaults(run=_worker)

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
    _add_redis_option(p)
    p.set_defaults(run=_submit)

    p = sub.add_parser("status", help="show a job's progress",
                       description="Show a job's state, counts, speed, models and workers.")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true",
                   help="one JSON object (job_id, state, total, done, errors, ...)")
    p.add_argument("--watch", action="store_true", help="refresh until the job ends")
    _add_redis_option(p)
    p.set_defaults(run=_status)

    p = sub.add_parser("results", help="merge a job's shards into one file",
                       description="Merge DEST/<job_id>/part-*.jsonl into one .jsonl, .csv or .parquet "
                                   "file with exactly one record per image.")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output .jsonl, .csv or .parquet")
    p.add_argument("--partial", action="store_true", help="merge what exists even if the job is not done")
    _add_redis_option(p)
    p.set_defaults(run=_results)

    p = sub.add_parser("train", help="train a classifier by transfer learning",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="folder of class subfolders (or with train/ and val/)")
    p.add_argument("--out", "-o", required=True, metavar="MODEL", help="where to save: .keras (or legacy .h5)")
    p.add_argument("--base", default="Xception",
                   help="a Keras Applications name (default Xception) or a saved model to transfer from")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|none|FILE",
                   help="weights of an application base: ImageNet (downloaded once), none, or a file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--image-size", type=int, metavar="N", help="train at NxN (default: the base's size)")
    g.add_argument("--sizes", metavar="N,M", help="train at N first, then continue at M (e.g. 150,299)")
    p.add_argument("--epochs", type=int, default=10, help="phase 1 epochs (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="phase 1 learning rate (default 1e-3)")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout before the new head (default 0.2)")
    p.add_argument("--fine-tune-layers", type=int, default=30, metavar="N",
                   help="top base layers to unfreeze in phase 2; 0 skips it (default 30)")
    p.add_argument("--fine-tune-epochs", type=int, default=10, help="phase 2 epochs (default 10)")
    p.add_argument("--fine-tune-lr", type=float, default=1e-5, help="phase 2 learning rate (default 1e-5)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random flip, rotation, zoom and contrast on training images (default on)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--val-split", type=float, default=0.2, help="held-out share without val/ (default 0.2)")
    p.add_argument("--seed", type=int, default=1337, help="seed for splits, shuffling, augmentation, init")
    p.add_argument("--patience", type=int, default=4, help="epochs without progress before stopping a phase")
    p.add_argument("--preprocess", choices=("none", "rescale", "tf", "caffe", "torch"),
                   help="pixel scaling of a saved-model base without metadata")
    p.add_argument("--unsafe-model", action="store_true", help="allow a base model with Lambda layers")
    p.add_argument("--decode-threads", type=int, default=0, metavar="N")
    p.set_defaults(run=_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix",
                       description="Label DATA (class subfolders; its val/ split if it has one) through "
                                   "the same path as classify and compare with the folder names.")
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--json", action="store_true", help="print one JSON object (accuracy, per_class, ...)")
    p.add_argument("--plot", nargs="?", const="confusion_matrix.png", metavar="PNG",
                   help="also draw the confusion matrix (default file confusion_matrix.png)")
    g = p.add_argument_group("model")
    g.add_argument("--labels", metavar="FILE")
    g.add_argument("--preprocess", choices=("none", "rescale", "tf", "caffe", "torch"))
    g.add_argument("--weights", metavar="FILE")
    g.add_argument("--image-size", metavar="N")
    g.add_argument("--unsafe-model", action="store_true")
    _add_engine_options(p)
    p.set_defaults(run=_evaluate)
    return parser


def _engine_values(args: argparse.Namespace) -> dict:
    return dict(
        batch_size=0 if str(args.batch_size) == "auto" else positive_int(args.batch_size, "--batch-size"),
        top_k=positive_int(args.top_k, "--top-k"),
        decode_threads=0 if str(args.decode_threads) == "0" else positive_int(args.decode_threads, "--decode-threads"),
        io_threads=0 if str(args.io_threads) == "0" else positive_int(args.io_threads, "--io-threads"),
        max_pixels=positive_int(args.max_pixels, "--max-pixels"),
    )


def _model_values(args: argparse.Namespace) -> dict:
    from worker.models import parse_image_size

    return dict(labels=args.labels, preprocess=args.preprocess, weights=args.weights,
                image_size=parse_image_size(args.image_size), unsafe=args.unsafe_model)


def _threads(args: argparse.Namespace) -> int | None:
    return positive_int(args.threads, "--threads") if args.threads else None


def _classify(args: argparse.Namespace) -> int:
    from worker.classify import ClassifyJob, run
    from worker.engine import EngineOptions
    from worker.models import ModelOptions

    job = ClassifyJob(
        sources=args.sources, model=args.model, out=args.out,
        model_options=ModelOptions(**_model_values(args)),
        engine_options=EngineOptions(**_engine_values(args)), threads=_threads(args),
        mixed_precision=args.mixed_precision, progress=args.progress, profile=args.profile, summary_json=args.summary_json,
    )
    run(job)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .settings import max_deliveries, redis_url, visibility_timeout
    from worker.service import WorkerConfig
    from worker.supervisor import Supervisor, detect_gpus

    config = WorkerConfig(
        model=args.model, queue=args.queue, redis_url=redis_url(args.redis),
        visibility_timeout=visibility_timeout(), max_deliveries=max_deliveries(),
        threads=_threads(args), mixed_precision=args.mixed_precision, model_options=_model_values(args),
        **_engine_values(args),
    )
    return Supervisor(config, detect_gpus(args.gpus)).run()


def _submit(args: argparse.Namespace) -> int:
    from .settings import redis_url
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
    from .settings import redis_url
    from producer.status import status

    job = status(redis_url(args.redis), args.job_id, as_json=args.json, watch=args.watch)
    return 1 if job["state"] == "failed" else 0


def _train(args: argparse.Namespace) -> int:
    from worker import runtime

    sizes: list[int] = []
    if args.sizes:
        try:
            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            from .errors import ConfigError

            raise ConfigError(f"--sizes takes sizes like 150,299. Received: {args.sizes!r}") from None
    elif args.image_size:
        sizes = [args.image_size]
    runtime.configure()
    from worker.trainer import TrainConfig, train

    result = train(TrainConfig(
        data=args.data, out=args.out, base=args.base, weights=args.weights, sizes=sizes,
        epochs=args.epochs, lr=args.lr, dropout=args.dropout, fine_tune_layers=args.fine_tune_layers,
        fine_tune_epochs=args.fine_tune_epochs, fine_tune_lr=args.fine_tune_lr, augment=args.augment,
        batch_size=args.batch_size, val_split=args.val_split, seed=args.seed, patience=args.patience,
        preprocess=args.preprocess, unsafe=args.unsafe_model, threads=args.decode_threads,
    ))
    print(f"saved {result.out}: {len(result.class_names)} classes at {result.image_size[0]}x"
          f"{result.image_size[1]}, best validation accuracy {result.best_val_accuracy:.4f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from worker import runtime

    runtime.configure(_threads(args), args.mixed_precision)
    from worker.engine import EngineOptions
    from worker.evaluate import evaluate, render
    from worker.models import ModelOptions, load_model

    model = load_model(args.model_path, ModelOptions(**_model_values(args)))
    result = evaluate(model, args.data, EngineOptions(**_engine_values(args)))
    if args.plot:
        from worker.plots import confusion_png

        conf = result["confusion"]
        confusion_png(conf["rows"], conf["matrix"], conf["columns"], args.plot)
        result["plot"] = os.path.abspath(args.plot)
    print(json.dumps(result) if args.json else render(result))
    return 0


def _results(args: argparse.Namespace) -> int:
    from .settings import redis_url
    from producer.results import merge

    merge(redis_url(args.redis), args.job_id, args.out, partial=args.partial)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BulkLabelError as exc:
        print(f"bulklabel: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bulklabel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
