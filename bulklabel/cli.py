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
    g.add_argument("--batch-size", default=env_default("--batch-size", "32"), metavar="N",
                   help="images per model call (default 32)")
    g.add_argument("--top-k", default=env_default("--top-k", "5"), metavar="K",
                   help="labels kept per image, best first (default 5)")
    g.add_argument("--decode-threads", default=env_default("--decode-threads", "0"), metavar="N",
                   help="threads reading and decoding images (default: one per core)")
    g.add_argument("--threads", default=env_default("--threads"), metavar="N",
                   help="bound TensorFlow's CPU threads (default: TensorFlow decides)")
    g.add_argument("--max-pixels", default=env_default("--max-pixels", "90000000"), metavar="N",
                   help="refuse images with more pixels than this (default 90000000), "
                        "checked before decoding")


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
    p.set_defaults(run=_classify)
    return parser


def _classify(args: argparse.Namespace) -> int:
    from worker.classify import ClassifyJob, run
    from worker.engine import EngineOptions
    from worker.models import ModelOptions, parse_image_size

    engine = EngineOptions(
        batch_size=positive_int(args.batch_size, "--batch-size"),
        top_k=positive_int(args.top_k, "--top-k"),
        decode_threads=int(args.decode_threads) if str(args.decode_threads) != "0" else 0,
        max_pixels=positive_int(args.max_pixels, "--max-pixels"),
    )
    model = ModelOptions(
        labels=args.labels, preprocess=args.preprocess, weights=args.weights,
        image_size=parse_image_size(args.image_size), unsafe=args.unsafe_model,
    )
    job = ClassifyJob(
        sources=args.sources, model=args.model, out=args.out, model_options=model,
        engine_options=engine, threads=positive_int(args.threads, "--threads") if args.threads else None,
        progress=args.progress, profile=args.profile,
    )
    run(job)
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
