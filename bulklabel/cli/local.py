"""Commands that run in this process: classify, train, evaluate.

Each handler configures TensorFlow once (``_runtime``), then imports the worker side.
"""

from __future__ import annotations

import argparse
import os

from .. import STARTED, settings
from ..options import EngineOptions, ModelOptions, Option, RuntimeOptions, TrainOptions, add_options, from_args
from ..options.distributed import JSON, PROGRESS
from ..options.inference import MODEL

CLASSIFY_HELP = """\
Classify images with a Keras model in this process (no services needed) and write one
record per image: source, label, score, top_k, model, error.

SOURCE can be a file, a folder (searched recursively for .jpg .jpeg .png .gif .bmp .tif
.tiff .webp, any case), a glob such as 'photos/**/*.jpg', a file:// URI, or @list.txt
with one path per line. Give as many as you like. A path whose name is not valid UTF-8
is written as a file:// URI with %XX escapes (file:///photos/caf%E9.jpg), losslessly;
see docs/sources.md.

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


TRAIN_HELP = """\
Train an image classifier by transfer learning and save it ready to serve.

DATA is a folder with one subfolder per class (DATA/cat/*.jpg, DATA/dog/*.jpg, ...), or with
train/ and val/ subfolders of that shape; otherwise --val-split of each class is held out
(seeded). s3://bucket/prefix works the same way. Or DATA is a local folder of lists:
DATA/lists/<class>.txt (or DATA/lists/train/<class>.txt and DATA/lists/val/<class>.txt), UTF-8
text, one image per line: an absolute path, a path relative to the list's folder, a file://
or an s3:// URI; blank lines and lines starting with # are skipped. A location listed twice
for a class counts once; one listed for two classes is an error. A DATA folder has class
folders or lists/, not both. Folder and list names are class names with '%', '/', '\\',
control characters and a leading '.' percent-encoded (a%2Fb is the class a/b). Images that
are missing or cannot be decoded are skipped with a message.

Phase 1 (feature extraction): the pretrained BASE is frozen (BatchNormalization in inference
mode) under a new head: global pooling, dropout, softmax. A BASE that is a bulklabel model is
continued: its head starts the new one for every class DATA shares with it (by name); new
classes start fresh, and its classes missing from DATA are no longer predicted (the line
"continuing from ..." says which; training.classes_carried in the saved metadata counts
them). Phase 2 (fine-tuning): the top --fine-tune-layers of the base are unfrozen and
training continues at --fine-tune-lr, 10-100x lower. --sizes 150,299 trains at 150 first,
then continues at 299. Augmentation (flip, rotation, zoom, contrast) applies to training
images only. The best epoch (by validation accuracy) is what gets saved, with its class
names, preprocessing and input size, so 'bulklabel classify --model MODEL' needs no other
flag. history.json and history.png (the curves) are written next to the model.

Training's own options come from the command line only; --weights, --preprocess,
--unsafe-model and --decode-threads also read BULKLABEL_<OPTION> as classify does.

examples:
  bulklabel train photos/ --out flowers.keras                              # Xception, ImageNet
  bulklabel train photos/ --base MobileNetV2 --sizes 128,224 --out m.keras --epochs 5
  bulklabel train photos/ --base old_model.keras --out new.keras           # continue a bulklabel model
  bulklabel train reviewed/ --base serving.keras --out next.keras --epochs 3   # reviewed/lists/*.txt
  bulklabel train photos/ --base EfficientNetB0 --weights b0_notop.h5 --out m.h5 --seed 7
"""


OUT = Option(("--out", "-o"), metavar="PATH", default="predictions.jsonl",
             help="output file; .jsonl, .csv or .parquet (default predictions.jsonl)")
RESUME = Option(("--resume",), switch=True, default=False, parse=settings.boolean,
                help="continue an interrupted job: keep the records already in --out (.jsonl or "
                     ".csv), skip their images, append the rest")
PROFILE = Option(("--profile",), switch=True, default=False, parse=settings.boolean,
                 help="print time spent per stage at the end")
DECODE_AHEAD = Option(("--decode-ahead",), metavar="N", default="auto", parse=settings.auto_or_count,
                      help="images read and decoded while TensorFlow starts and the model loads, on "
                           "the cores that start-up leaves idle (default auto: until the model is "
                           "ready, at most 8 batches and 64 MiB of pixels; 0: none, every image "
                           "waits for the model)")
SUMMARY_JSON = Option(("--summary-json",), metavar="FILE",
                      help="also write the end-of-job summary (counts, seconds, images/s, stage "
                           "times) as JSON")
TRAIN_OUT = Option(("--out", "-o"), metavar="MODEL", required=True, env=None,
                   help="where to save: .keras (or legacy .h5)")


def add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify images in this process (no services)",
                       description=CLASSIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files, folders, globs, file:// URIs or @list files")
    add_options(p, OUT)
    add_options(p, MODEL, ModelOptions, title="model")
    add_options(p, EngineOptions, title="engine")
    add_options(p, DECODE_AHEAD, title="start-up")
    add_options(p, RuntimeOptions, title="TensorFlow")
    add_options(p, PROGRESS, RESUME, PROFILE, SUMMARY_JSON, title="display")
    p.set_defaults(run=_classify)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier by transfer learning",
                       description=TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA",
                   help="folder of class subfolders (or with train/ and val/), or with lists/<class>.txt")
    add_options(p, TRAIN_OUT, TrainOptions)
    p.set_defaults(run=_train)


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class metrics and confusion matrix",
                       description="Label DATA (class subfolders; its val/ split if it has one) through "
                                   "the same path as classify and compare with the folder names.")
    p.add_argument("model_path", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    add_options(p, JSON)
    p.add_argument("--plot", nargs="?", const="confusion_matrix.png", metavar="PNG",
                   help="also draw the confusion matrix (default file confusion_matrix.png)")
    add_options(p, ModelOptions, title="model")
    add_options(p, EngineOptions, title="engine")
    add_options(p, RuntimeOptions, title="TensorFlow")
    p.set_defaults(run=_evaluate)


def _runtime(options: RuntimeOptions) -> None:
    """This process's one TensorFlow set-up, before anything loads a model."""
    from worker.inference import runtime

    runtime.configure(options)


def _classify(args: argparse.Namespace) -> int:
    import time

    from worker.inference.classify import ClassifyJob, prefetch, prepare, run

    job = ClassifyJob(
        sources=args.sources, model=MODEL.value(args), out=OUT.value(args),
        model_options=from_args(ModelOptions, args), engine_options=from_args(EngineOptions, args),
        progress=PROGRESS.value(args), profile=PROFILE.value(args),
        summary_json=SUMMARY_JSON.value(args), resume=RESUME.value(args),
        decode_ahead=DECODE_AHEAD.value(args),
    )
    runtime = from_args(RuntimeOptions, args)
    prepared = prepare(job)  # fail fast (and lock --out), before TensorFlow starts
    head = prefetch(job, prepared)  # the first images decode while TensorFlow starts
    t = time.perf_counter()
    _runtime(runtime)
    startup = {"command": t - STARTED, "TensorFlow import": time.perf_counter() - t}
    run(job, prepared, head, startup)
    return 0


def _train(args: argparse.Namespace) -> int:
    options = from_args(TrainOptions, args)
    _runtime(RuntimeOptions())
    from worker.training.trainer import train

    result = train(args.data, TRAIN_OUT.value(args), options)
    print(f"saved {result.out}: {len(result.class_names)} classes at {result.image_size[0]}x"
          f"{result.image_size[1]}, best validation accuracy {result.best_val_accuracy:.4f}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import json

    model_options, engine_options = from_args(ModelOptions, args), from_args(EngineOptions, args)
    _runtime(from_args(RuntimeOptions, args))
    from worker.inference.models import load_model
    from worker.training.evaluate import evaluate, render

    model = load_model(args.model_path, model_options)
    result = evaluate(model, args.data, engine_options)
    if args.plot:
        from worker.training.plots import confusion_png

        conf = result["confusion"]
        confusion_png(conf["rows"], conf["matrix"], conf["columns"], args.plot)
        result["plot"] = os.path.abspath(args.plot)
    print(json.dumps(result) if JSON.value(args) else render(result))
    return 0
