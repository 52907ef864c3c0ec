"""``bulklabel train``: transfer learning in two phases, optionally small-then-large.

1. Feature extraction: a pretrained base, frozen, called in inference mode (so its
   BatchNormalization layers keep their statistics), under a new head: global average
   pooling, dropout, a softmax layer for the classes found in DATA.
2. Fine-tuning: the top ``fine_tune_layers`` layers of the base are unfrozen
   (BatchNormalization layers stay frozen) and training goes on at a learning rate 10-100x
   lower.

With several ``sizes`` the model is trained at the first size (both phases), then rebuilt
at each larger size with the weights carried over and fine-tuned again: small first, then
large. Within each size, the weights of the epoch with the best validation accuracy are
kept, so the saved model is the best one, not the last. The saved model carries its class
names, preprocessing and input size (``worker.inference.metadata``), so ``classify`` and ``worker``
serve it with no flags.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from bulklabel.errors import ConfigError, ModelError
from bulklabel.options import TrainOptions

from ..inference import metadata, preprocess
from ..inference.decode import RESIZE_METHOD
from ..inference.models import applications
from ..inference.models.keras_file import load_keras
from . import plots
from .dataset import augmentation, load_split, make_batches

CACHE_BYTES = 2 * 1024**3  # decoded training images are kept in memory up to this size


@dataclass
class TrainResult:
    out: str
    best_val_accuracy: float
    class_names: list[str]
    image_size: tuple[int, int]
    history: list[dict]
    fine_tuned_layers: int = 0


class BestWeights:
    """Keeps the weights of the best epoch (by validation accuracy) in memory."""

    def __init__(self):
        self.best = -1.0
        self.weights = None

    def callback(self):
        import keras

        keeper = self

        class Keep(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                acc = (logs or {}).get("val_accuracy")
                if acc is not None and acc > keeper.best:
                    keeper.best = float(acc)
                    keeper.weights = [w.copy() for w in self.model.get_weights()]

        return Keep()

    def restore(self, model) -> None:
        if self.weights is not None:
            model.set_weights(self.weights)


class HistoryLog:
    def __init__(self):
        self.rows: list[dict] = []

    def callback(self, stage: int, size: tuple[int, int], phase: str):
        import keras

        rows = self.rows

        class Log(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                row = {"stage": stage, "size": list(size), "phase": phase, "epoch": len(rows) + 1}
                row.update({k: float(v) for k, v in (logs or {}).items()})
                lr = self.model.optimizer.learning_rate
                row["learning_rate"] = float(np.asarray(lr.value if hasattr(lr, "value") else lr))
                rows.append(row)

        return Log()


def _resolve_base(cfg: TrainOptions):
    """(builder(size) → base model, preprocess mode, readable base name, () → default size)."""
    if os.path.exists(cfg.base) or cfg.base.endswith((".keras", ".h5")):
        return _saved_base(cfg)
    name = cfg.base[len("keras:"):] if cfg.base.startswith("keras:") else cfg.base
    fn = applications.application(name)
    mode = cfg.preprocess or applications.preprocess_mode(name)
    weights = applications.resolve_weights(cfg.weights)

    def default():
        return fn(weights=None, include_top=True).input_shape[1]

    def build(size, first: bool):
        try:
            return fn(include_top=False, weights=weights if first else None, input_shape=(*size, 3))
        except Exception as exc:
            raise ModelError(f"cannot build {name} at {size[0]}x{size[1]} with weights "
                             f"{cfg.weights or 'imagenet'!r}: {exc}") from None

    return build, mode, name, default


def _saved_base(cfg: TrainOptions):
    """A saved classifier cut below its head: everything up to its last feature map."""
    import keras

    if not os.path.exists(cfg.base):
        raise ModelError(f"base model not found: {cfg.base!r}")
    model = load_keras(cfg.base, cfg.unsafe, what="the base model")
    feature = None
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            feature = layer.output
            break
    if feature is None:
        raise ModelError(f"{cfg.base!r} has no convolutional feature map to transfer from")
    base = keras.Model(model.inputs, feature, name="base")
    meta = metadata.read_metadata(cfg.base) or {}
    mode = cfg.preprocess or meta.get("preprocess")
    if mode is None:
        raise ConfigError(f"{cfg.base!r} has no bulklabel metadata: pass --preprocess for its pixels")
    fixed = base.input_shape[1:3]

    def build(size, first: bool):
        if None not in fixed and tuple(fixed) != tuple(size):
            raise ConfigError(f"the base {cfg.base!r} takes {fixed[0]}x{fixed[1]} images; "
                              f"--image-size/--sizes must be {fixed[0]}")
        return base if first else keras.models.clone_model(base)

    return build, mode, os.path.basename(cfg.base), lambda: fixed[0] or 224


def _classifier(base, size, classes: int, dropout: float, seed: int):
    import keras

    inputs = keras.Input((*size, 3), name="image")
    x = base(inputs, training=False)  # BatchNormalization stays in inference mode, always
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="bulklabel_classifier")


def unfreeze_top(base, count: int) -> int:
    """Unfreeze the top ``count`` layers of ``base`` (BatchNormalization excepted); returns how many."""
    import keras

    base.trainable = True
    layers = [layer for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    cut = max(0, len(layers) - count)
    unfrozen = 0
    for i, layer in enumerate(layers):
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += trainable
    return unfrozen


def train(data: str, out: str, cfg: TrainOptions) -> TrainResult:
    """Train on DATA (class folders) and save the best model to ``out`` with its metadata."""
    import keras

    _check(out, cfg)
    keras.utils.set_random_seed(cfg.seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # same seed, same model
    train_files, val_files = load_split(data, cfg.val_split, cfg.seed)
    names = train_files.class_names
    print(f"bulklabel: {len(train_files)} training and {len(val_files)} validation images, "
          f"{len(names)} classes: {', '.join(names)}", file=sys.stderr)
    build, mode, base_name, default_size = _resolve_base(cfg)
    preprocess.check_mode(mode)
    sizes = [(s, s) for s in (cfg.stage_sizes() or [default_size()])]
    log, keeper, model, base = HistoryLog(), BestWeights(), None, None
    augment = augmentation(cfg.seed) if cfg.augment else None
    unfrozen = 0
    started = time.time()

    for stage, size in enumerate(sizes):
        previous = model
        base = build(size, first=previous is None)
        model = _classifier(base, size, len(names), cfg.dropout, cfg.seed)
        if previous is not None:
            model.set_weights(previous.get_weights())  # same architecture, larger input
        cache = {} if (len(train_files) + len(val_files)) * size[0] * size[1] * 3 <= CACHE_BYTES else None
        train_batches = make_batches(train_files, size, mode, cfg.batch_size, augment, shuffle=True,
                                     seed=cfg.seed + stage, threads=cfg.decode_threads, cache=cache)
        val_batches = make_batches(val_files, size, mode, cfg.batch_size, threads=cfg.decode_threads,
                                   cache={} if cache is not None else None)
        keeper = BestWeights()
        phases = []
        if previous is None:
            phases.append(("feature-extraction", cfg.epochs, cfg.lr, 0))
        if cfg.fine_tune_layers > 0 and cfg.fine_tune_epochs > 0:
            phases.append(("fine-tuning", cfg.fine_tune_epochs, cfg.fine_tune_lr, cfg.fine_tune_layers))
        elif previous is not None:
            phases.append(("feature-extraction", cfg.epochs, cfg.lr, 0))
        for phase, epochs, lr, layers in phases:
            if layers:
                unfrozen = unfreeze_top(base, layers)
            else:
                base.trainable = False
            print(f"bulklabel: {phase} at {size[0]}x{size[1]}: {epochs} epochs, learning rate {lr:g}"
                  + (f", top {unfrozen} base layers trainable" if layers else ", base frozen"),
                  file=sys.stderr)
            model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
            verbose = cfg.verbose if cfg.verbose is not None else (1 if sys.stdout.isatty() else 2)
            model.fit(train_batches, validation_data=val_batches, epochs=epochs, verbose=verbose,
                      callbacks=[keeper.callback(), log.callback(stage, size, phase),
                                 keras.callbacks.EarlyStopping("val_accuracy", patience=cfg.patience),
                                 keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.3,
                                                                   patience=max(1, cfg.patience // 2),
                                                                   min_lr=1e-7)])
        keeper.restore(model)  # the next size, and the saved model, start from the best epoch

    final = sizes[-1]
    meta = {
        "name": os.path.splitext(os.path.basename(out))[0], "class_names": names,
        "preprocess": mode, "image_size": list(final), "resize": RESIZE_METHOD, "base": base_name,
        "training": {"sizes": [s[0] for s in sizes], "best_val_accuracy": keeper.best,
                     "seed": cfg.seed, "seconds": round(time.time() - started, 1)},
    }
    save(model, out, meta)
    folder = os.path.dirname(os.path.abspath(out))
    config = {"data": data, "out": out, **asdict(cfg)}
    with open(os.path.join(folder, "history.json"), "w", encoding="utf-8") as f:
        json.dump({"model": os.path.basename(out), "config": config, "epochs": log.rows}, f, indent=2)
    plots.history_png(log.rows, os.path.join(folder, "history.png"))
    return TrainResult(out, keeper.best, names, final, log.rows, fine_tuned_layers=unfrozen)


def save(model, out: str, meta: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    if out.lower().endswith((".h5", ".hdf5")):
        model.save(out)
        metadata.write_metadata(out, meta, sidecar=True)  # inside the file and beside it
    else:
        model.save(out)
        metadata.write_metadata(out, meta)


def _check(out: str, cfg: TrainOptions) -> None:
    if not out.lower().endswith((".keras", ".h5", ".hdf5")):
        raise ConfigError(f"--out must end in .keras (or .h5 for the legacy format). Received: {out!r}")
    if cfg.sizes and cfg.image_size:
        raise ConfigError("give --image-size N or --sizes N,M, not both")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.fine_tune_layers < 0 or cfg.fine_tune_epochs < 0:
        raise ConfigError("--fine-tune-layers and --fine-tune-epochs cannot be negative")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1). Received: {cfg.dropout}")
    if any(s < 32 for s in cfg.stage_sizes()):
        raise ConfigError(f"sizes must be at least 32 pixels. Received: {cfg.stage_sizes()}")
    if cfg.fine_tune_layers and cfg.fine_tune_lr >= cfg.lr:
        print(f"bulklabel: note: --fine-tune-lr {cfg.fine_tune_lr:g} is not lower than --lr {cfg.lr:g}; "
              "fine-tuning usually wants it 10-100x lower", file=sys.stderr)
