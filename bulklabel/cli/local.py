"""Commands that run in this process: classify, train, evaluate."""

from __future__ import annotations

import argparse
import os

from ..settings import env_default
from .options import add_engine_options, add_model_options, engine_values, model_values, threads

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


def add_classify(sub) -> None:
    p = sub.add_parser("classify", help="classify images in this process (no services)",
                       description=CLASSIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="files, folders, globs or @list files")
    p.add_argument("--out", "-o", default=env_default("--out", "predictions.jsonl"), metavar="PATH",
                   help="output file; .jsonl, .csv or .parquet (default predictions.jsonl)")
    add_model_options(p)
    add_engine_options(p)
    g = p.add_argument_group("display")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always draw the progress bar (default: only on a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never draw it")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted job: keep the records already in --out (.jsonl or "
                        ".csv), skip their images, append the rest")
    g.add_argument("--profile", action="store_true", help="print time spent per stage at the end")
    g.add_argument("--summary-json", metavar="FILE",
                   help="also write the end-of-job summary (counts, seconds, images/s, stage times) as JSON")
    p.set_defaults(run=_classify)


def add_train(sub) -> None:
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


def add_evaluate(sub) -> None:
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
    add_engine_options(p)
    p.set_defaults(run=_evaluate)


def _classify(args: argparse.Namespace) -> int:
    from worker.classify import ClassifyJob, run
    from worker.engine import EngineOptions
    from worker.models import ModelOptions

    job = ClassifyJob(
        sources=args.sources, model=args.model, out=args.out,
        model_options=ModelOptions(**model_values(args)),
        engine_options=EngineOptions(**engine_values(args)), threads=threads(args),
        mixed_precision=args.mixed_precision, progress=args.progress, profile=args.profile,
        summary_json=args.summary_json, resume=args.resume,
    )
    run(job)
    return 0


def _train(args: argparse.Namespace) -> int:
    from worker import runtime

    sizes: list[int] = []
    if args.sizes:
        try:
            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            from ..errors import ConfigError

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

    runtime.configure(threads(args), args.mixed_precision)
    from worker.engine import EngineOptions
    from worker.evaluate import evaluate, render
    from worker.models import ModelOptions, load_model

    model = load_model(args.model_path, ModelOptions(**model_values(args)))
    result = evaluate(model, args.data, EngineOptions(**engine_values(args)))
    if args.plot:
        from worker.plots import confusion_png

        conf = result["confusion"]
        confusion_png(conf["rows"], conf["matrix"], conf["columns"], args.plot)
        result["plot"] = os.path.abspath(args.plot)
    print(json.dumps(result) if args.json else render(result))
    return 0
