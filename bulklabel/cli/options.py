"""Option groups and values shared by several commands."""

from __future__ import annotations

import argparse

from ..settings import env_default, positive_int


def add_model_options(p: argparse.ArgumentParser) -> None:
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


def add_engine_options(p: argparse.ArgumentParser) -> None:
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


def add_redis_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", default=None, metavar="URL",
                   help="Redis URL (default: $BULKLABEL_REDIS_URL or redis://127.0.0.1:6379/0; "
                        "redis://:password@host:port/db and rediss:// work)")


def engine_values(args: argparse.Namespace) -> dict:
    return dict(
        batch_size=0 if str(args.batch_size) == "auto" else positive_int(args.batch_size, "--batch-size"),
        top_k=positive_int(args.top_k, "--top-k"),
        decode_threads=0 if str(args.decode_threads) == "0" else positive_int(args.decode_threads, "--decode-threads"),
        io_threads=0 if str(args.io_threads) == "0" else positive_int(args.io_threads, "--io-threads"),
        max_pixels=positive_int(args.max_pixels, "--max-pixels"),
    )


def model_values(args: argparse.Namespace) -> dict:
    from worker.models import parse_image_size

    return dict(labels=args.labels, preprocess=args.preprocess, weights=args.weights,
                image_size=parse_image_size(args.image_size), unsafe=args.unsafe_model)


def threads(args: argparse.Namespace) -> int | None:
    return positive_int(args.threads, "--threads") if args.threads else None
