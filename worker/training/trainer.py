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

A saved bulklabel model as the base is continued, not only transferred from: it is cut
below its head, and when that head is a softmax layer over the feature map kept (through
global average pooling and dropout), the new head starts from it for every class DATA
shares with the model's ``class_names`` (matched by name, whatever the order); classes new
to DATA start fresh (with several sizes, at the first one; later sizes start from the
previous size as always). Otherwise the new head starts fresh, as with an application base.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

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


@dataclass
class SavedHead:
    """The softmax layer of a saved bulklabel classifier, to start a new head from."""
    class_names: list[str]
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray    # (classes,)
    source: str         # the model's metadata name, else its file name


@dataclass
class Base:
    """What the trainer builds on: ``build(size, first)`` → the base model, its preprocessing,
    a readable name, ``default_size()``; for a saved model, whether it is one and its head."""
    build: Callable
    mode: str | None
    name: str
    default_size: Callable[[], int]
    saved: bool = False
    head: SavedHead | None = field(default=None, repr=False)


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


def _resolve_base(cfg: TrainOptions) -> Base:
    """The base named by ``--base``: a saved model, else a Keras Applications name."""
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

    return Base(build, mode, name, default)


def _saved_base(cfg: TrainOptions) -> Base:
    """A saved classifier cut below its head: everything up to its last feature map; with
    its head when that can start the new one (``saved_head``)."""
    import keras

    if not os.path.exists(cfg.base):
        raise ModelError(f"base model not found: {cfg.base!r}")
    model = load_keras(cfg.base, cfg.unsafe, what="the base model")
    feature = feature_map(model)
    if feature is None:
        raise ModelError(f"{cfg.base!r} has no convolutional feature map to transfer from")
    base = keras.Model(model.inputs, feature, name="base")
    meta = metadata.read_metadata(cfg.base) or {}
    head = saved_head(model, feature, meta, cfg.base)
    if isinstance(head, str):
        print(f"bulklabel: note: the head of {cfg.base} cannot be continued ({head}); "
              "training a new head from scratch", file=sys.stderr)
        head = None
    mode = cfg.preprocess or meta.get("preprocess")
    if mode is None:
        raise ConfigError(f"{cfg.base!r} has no bulklabel metadata: pass --preprocess for its pixels")
    fixed = base.input_shape[1:3]

    def build(size, first: bool):
        if None not in fixed and tuple(fixed) != tuple(size):
            raise ConfigError(f"the base {cfg.base!r} takes {fixed[0]}x{fixed[1]} images; "
                              f"--image-size/--sizes must be {fixed[0]}")
        return base if first else keras.models.clone_model(base)

    return Base(build, mode, os.path.basename(cfg.base), lambda: fixed[0] or 224, saved=True, head=head)


def _producer(tensor):
    """(the layer call that made ``tensor`` in its model's graph, that call's input tensors)."""
    layer, node_index, _ = tensor._keras_history
    return layer, layer._inbound_nodes[node_index].input_tensors


def feature_map(model):
    """The last 4-D feature map of ``model`` as a tensor of its own graph (for a nested model,
    its output where ``model`` calls it, not inside it): traced back from a single output
    through single-input layers, else the output of the last layer that gives one; None if
    there is none."""
    try:
        tensor = model.outputs[0] if len(model.outputs) == 1 else None
        while tensor is not None and len(tensor.shape) != 4:
            _, inputs = _producer(tensor)
            tensor = inputs[0] if len(inputs) == 1 else None
        if tensor is not None:
            return tensor
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    for layer in reversed(model.layers):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer.output
    return None


def saved_head(model, feature, meta: dict, path: str) -> SavedHead | str:
    """The head of the saved classifier ``model`` (metadata ``meta``) over the tensor ``feature``,
    or why it cannot start a new head: no class names, or not a softmax over that feature map."""
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "it has no bulklabel metadata with class names"
    dense = _softmax_over(model, feature)
    if isinstance(dense, str):
        return dense
    kernel, *rest = (np.asarray(w, "float32") for w in dense.get_weights())
    bias = rest[0] if rest else np.zeros(kernel.shape[1], "float32")
    width = feature.shape[-1]
    if kernel.ndim != 2 or kernel.shape[0] != width:
        return f"its head takes {kernel.shape[0]} features, its feature map has {width}"
    if kernel.shape[1] != len(names):
        return f"its head has {kernel.shape[1]} outputs for {len(names)} class names"
    return SavedHead(list(names), kernel, bias, str(meta.get("name") or os.path.basename(path)))


def _softmax_over(model, feature):
    """The output layer of ``model`` if it is a Dense softmax fed by the tensor ``feature``
    through global average pooling (as the new head is) and dropout only; else why not."""
    import keras

    if len(model.outputs) != 1:
        return "it has more than one output"
    try:
        dense, inputs = _producer(model.outputs[0])
        if not isinstance(dense, keras.layers.Dense) or dense.get_config().get("activation") != "softmax":
            return "its last layer is not a Dense softmax layer"
        pooled = False
        while not (len(inputs) == 1 and inputs[0] is feature):
            if len(inputs) != 1:
                return "its head has a layer with several inputs"
            layer, inputs = _producer(inputs[0])
            if isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims \
                    and layer.data_format == "channels_last":
                pooled = True
            elif not isinstance(layer, keras.layers.Dropout):
                return (f"its head has a {type(layer).__name__} layer ({layer.name}) "
                        "between the features and the softmax")
    except (AttributeError, IndexError, TypeError, ValueError):
        return "its head's inputs cannot be traced back to its feature map"
    return dense if pooled else "its head does not pool its feature map by global average pooling"


def carry_head(model, head: SavedHead, names: list[str]) -> int:
    """Start the softmax layer of ``model`` (classes ``names``) from ``head``: the kernel column
    and bias of every class ``head`` also has, matched by name; classes new to ``names`` keep
    their fresh initialisation. Says what was carried over; returns how many classes."""
    layer = model.get_layer("predictions")
    kernel, bias = (np.array(w) for w in layer.get_weights())
    index = {name: i for i, name in enumerate(head.class_names)}
    shared = [(j, index[name]) for j, name in enumerate(names) if name in index]
    for new, old in shared:
        kernel[:, new], bias[new] = head.kernel[:, old], head.bias[old]
    layer.set_weights([kernel, bias])
    new_names = [name for name in names if name not in index]
    wanted = set(names)
    gone = [name for name in head.class_names if name not in wanted]
    if shared:
        print(f"bulklabel: continuing from {head.source}: {len(shared)} of the {len(names)} classes carried "
              "over from its head" + (f"; new: {_some(new_names)}" if new_names else "")
              + (f"; not in DATA, no longer predicted by the new model: {_some(gone)}" if gone else ""),
              file=sys.stderr)
    else:
        print(f"bulklabel: note: none of the classes of {head.source} ({_some(gone)}) are in DATA; "
              "the new head starts fresh", file=sys.stderr)
    return len(shared)


def _some(names: list[str], most: int = 20) -> str:
    """``names`` for a message: the first ``most``, then how many more."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


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
    source = _resolve_base(cfg)
    mode = source.mode
    preprocess.check_mode(mode)
    sizes = [(s, s) for s in (cfg.stage_sizes() or [source.default_size()])]
    log, keeper, model, base = HistoryLog(), BestWeights(), None, None
    augment = augmentation(cfg.seed) if cfg.augment else None
    unfrozen = carried = 0
    started = time.time()

    for stage, size in enumerate(sizes):
        previous = model
        base = source.build(size, first=previous is None)
        model = _classifier(base, size, len(names), cfg.dropout, cfg.seed)
        if previous is not None:
            model.set_weights(previous.get_weights())  # same architecture, larger input
        elif source.head is not None:
            carried = carry_head(model, source.head, names)
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
    training = {"sizes": [s[0] for s in sizes], "best_val_accuracy": keeper.best,
                "seed": cfg.seed, "seconds": round(time.time() - started, 1)}
    if source.saved:
        training["classes_carried"] = carried
    if carried:
        training["continued_from"] = source.head.source
    meta = {
        "name": os.path.splitext(os.path.basename(out))[0], "class_names": names,
        "preprocess": mode, "image_size": list(final), "resize": RESIZE_METHOD, "base": source.name,
        "training": training,
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
