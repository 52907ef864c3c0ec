"""``LoadedModel``: a model ready to serve, and how it is described from model, metadata and flags.

Every format's loader ends in ``describe``: it combines what the model itself says (input
size, channels, classes, output activation), the bulklabel metadata stored with it and the
flags (flags win), and names the model ``<name>@<short hash>`` for every record.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bulklabel.errors import ConfigError, ModelError
from bulklabel.options import ModelOptions

from .. import preprocess
from ..metadata import read_capped, read_metadata

HASH_LENGTH = 12


@dataclass
class LoadedModel:
    name: str
    model_id: str
    forward: Callable[[Any], Any]
    input_size: tuple[int, int]
    channels: int
    num_classes: int
    class_names: Sequence[str] | None
    preprocess: str
    # How outputs become scores: 'probabilities' (as is), 'logits' (softmax), 'sigmoid'
    # (independent scores), or 'binary-sigmoid' / 'binary-logits' (one unit → 2 classes).
    output: str = "probabilities"
    handle: Any = None   # the object that owns the weights (Keras model or loaded SavedModel)
    fixed_batch: int | None = None  # the batch size the model's input insists on, if any (else any)
    warnings: list[str] = field(default_factory=list)

    def label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)


def describe(source, model, forward, size, channels, num_classes, output, options: ModelOptions,
             meta=None, digest=None, fixed_batch: int | None = None) -> LoadedModel:
    """Combine what the model says, its metadata and the flags (flags win) into a LoadedModel."""
    notes: list[str] = []
    if meta is None:
        meta = read_metadata(source) or {}
    name = meta.get("name") or os.path.splitext(os.path.basename(source.rstrip("/\\")))[0]
    digest = digest or file_digest(source)

    image_size = _input_size(size, options.image_size, meta.get("image_size"), source)
    if channels not in (1, 3):
        raise ModelError(f"{source!r} takes {channels}-channel images; bulklabel feeds RGB (3) or grayscale (1)")

    mode = options.preprocess or meta.get("preprocess")
    if mode is None:
        mode = "none"
        notes.append("the model has no bulklabel metadata: feeding raw 0-255 pixels "
                     "(pass --preprocess to change that)")
    preprocess.check_mode(mode, channels)

    names = read_labels(options.labels) if options.labels else meta.get("class_names")
    if names is not None and num_classes is not None and len(names) != num_classes and num_classes != 1:
        raise ConfigError(f"{len(names)} class names were given but the model outputs {num_classes} "
                          f"classes: check --labels or the model")
    if names is None:
        notes.append("no class names: labels will be class indices (pass --labels FILE)")
    if model is not None and not str(source).startswith("keras:") and _mixed_precision():
        notes.append("--mixed-precision applies to keras:<Name> models; this saved model keeps "
                     "the precision it was saved with")
    if num_classes == 1:  # a single sigmoid unit: served as two classes [negative, positive]
        output = "binary-logits" if output == "logits" else "binary-sigmoid"
        num_classes = 2
        if names is not None and len(names) != 2:
            raise ConfigError(f"a single-output binary model needs 2 class names; got {len(names)}")
    return LoadedModel(
        name=name, model_id=f"{name}@{digest[:HASH_LENGTH]}", forward=forward,
        input_size=image_size, channels=int(channels), num_classes=int(num_classes),
        class_names=list(names) if names is not None else None, preprocess=mode,
        output=output, handle=model, fixed_batch=fixed_batch, warnings=notes,
    )


def _mixed_precision() -> bool:
    import keras

    return keras.mixed_precision.global_policy().name != "float32"


def _input_size(model_size, flag_size, meta_size, source) -> tuple[int, int]:
    h, w = model_size
    if h is not None and w is not None:
        if flag_size and tuple(flag_size) != (h, w):
            raise ConfigError(f"{source!r} takes {h}x{w} images; --image-size {flag_size[0]}x{flag_size[1]} "
                              f"conflicts with it (leave --image-size out)")
        return int(h), int(w)
    size = flag_size or (tuple(meta_size) if meta_size else None)
    if not size:
        raise ConfigError(f"{source!r} accepts images of any size: pass --image-size N (e.g. 224)")
    return int(size[0]), int(size[1])


def output_kind(model) -> str:
    """How to turn a Keras model's output into probabilities: from its last layer's activation."""
    try:
        layer = model.outputs[0]._keras_history[0]
    except Exception:
        layer = model.layers[-1] if getattr(model, "layers", None) else None
    if type(layer).__name__ == "Softmax":
        return "probabilities"
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if activation == "linear":
        return "logits"
    if activation == "sigmoid":
        return "sigmoid"
    return "probabilities"


def read_labels(path: str) -> list[str]:
    data = read_capped(path, f"--labels {path!r}", ConfigError)  # size-checked, bounded read
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
        names = [line.strip() for line in text.split("\n")]
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--labels {path!r} is not UTF-8 text: {exc}") from None
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise ConfigError(f"--labels {path!r} must have one non-empty class name per line")
    return names


def file_digest(path: str) -> str:
    """sha256 of a model file, or of every file in a model folder (names included)."""
    digest = hashlib.sha256()
    files = [path]
    if os.path.isdir(path):
        files = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(path) for name in names
        )
    for name in files:
        if os.path.isdir(path):
            digest.update(os.path.relpath(name, path).encode("utf-8") + b"\0")
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(memoryview(weight.numpy()).cast("B"))
    return digest.hexdigest()
