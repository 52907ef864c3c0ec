"""Loading a model from ``--model`` and the options that describe how to serve it.

``load_model`` accepts a ``.keras`` archive, a legacy ``.h5`` file, a TF SavedModel folder
(as ``model.export(dir)`` writes) or ``keras:<Name>``, and returns a ``LoadedModel``: a
forward function on preprocessed float batches plus everything the engine needs to know
(input size, channels, class names, preprocessing, output kind) and a model id
``<name>@<short hash>`` that every record carries.

Loading is safe by default: Keras' ``safe_mode`` refuses Lambda layers and other
arbitrary code, and a SavedModel whose serving graph touches files or runs Python is
refused. ``--unsafe-model`` lifts both, for files you trust.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from bulklabel.errors import ConfigError, ModelError

from . import applications, preprocess
from .metadata import read_metadata

HASH_LENGTH = 12

# Ops that let a SavedModel graph reach outside the tensors it is given.
UNSAFE_GRAPH_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "Save", "SaveV2", "SaveSlices",
    "MergeV2Checkpoints", "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst",
    "PrintV2", "WriteSummary", "CreateSummaryFileWriter", "DebugIdentityV2",
})


@dataclass
class ModelOptions:
    labels: str | None = None          # a file with one class name per line
    preprocess: str | None = None      # one of preprocess.MODES
    weights: str | None = None         # keras:<Name> only: 'imagenet' (default), 'none' or a file
    image_size: tuple[int, int] | None = None
    unsafe: bool = False


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
    warnings: list[str] = field(default_factory=list)

    def label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)


def parse_image_size(text: str | int | None) -> tuple[int, int] | None:
    if text is None or text == "":
        return None
    raw = str(text).lower().replace(",", "x")
    try:
        parts = [int(p) for p in raw.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8:
        raise ConfigError(f"--image-size takes N or HxW (at least 8). Received: {text!r}")
    return parts[0], parts[1]


def load_model(spec: str, options: ModelOptions | None = None) -> LoadedModel:
    options = options or ModelOptions()
    if options.preprocess is not None:
        preprocess.check_mode(options.preprocess)
    if spec.startswith("keras:"):
        return _load_application(spec[len("keras:"):], options)
    if options.weights not in (None, ""):
        raise ConfigError("--weights applies only to keras:<Name> models; a saved model has its own")
    if not os.path.exists(spec):
        raise ModelError(
            f"model not found: {spec!r}. Give a .keras or .h5 file, a SavedModel folder, "
            f"or keras:<Name> (e.g. keras:Xception)"
        )
    if os.path.isdir(spec):
        return _load_saved_model(spec, options)
    return _load_keras_file(spec, options)


def _load_keras_file(path: str, options: ModelOptions) -> LoadedModel:
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not options.unsafe)
    except Exception as exc:
        raise _explain_load_error(path, exc) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "bulklabel serves image classifiers with one image input and one output")
    _, h, w, c = model.inputs[0].shape
    num_classes = model.outputs[0].shape[-1]
    return _describe(
        path, model, lambda x: model(x, training=False), (h, w), c, num_classes,
        _output_kind(model), options,
    )


def _load_saved_model(path: str, options: ModelOptions) -> LoadedModel:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelError(f"{path!r} is a folder but not a TensorFlow SavedModel (no saved_model.pb)")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ModelError("a TF SavedModel can only be served with the TensorFlow backend "
                         "(KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(path)
        signature = obj.signatures["serving_default"]
    except KeyError:
        raise ModelError(f"the SavedModel {path!r} has no 'serving_default' signature") from None
    except Exception as exc:
        raise ModelError(f"cannot load the SavedModel {path!r}: {exc}") from None
    if not options.unsafe:
        bad = sorted(_graph_ops(signature) & UNSAFE_GRAPH_OPS)
        if bad:
            raise ModelError(
                f"refusing the SavedModel {path!r}: its serving graph uses {', '.join(bad)}, which can "
                f"touch files or run Python. If you trust this model, pass --unsafe-model"
            )
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the SavedModel {path!r} must take one image input and give one output; "
                         f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)}")
    (in_name, in_spec), = inputs.items()
    (out_name, out_spec), = outputs.items()
    _, h, w, c = in_spec.shape.as_list()
    in_dtype = in_spec.dtype

    def forward(x):
        return signature(**{in_name: tf.cast(x, in_dtype)})[out_name]

    return _describe(path, obj, forward, (h, w), c, out_spec.shape[-1], "probabilities", options)


def _graph_ops(signature) -> set[str]:
    graph_def = signature.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(node.op for node in fn.node_def)
    return ops


def _load_application(name: str, options: ModelOptions) -> LoadedModel:
    weights = options.weights or "imagenet"
    if weights.lower() == "none":
        weights = None
    elif weights != "imagenet" and not os.path.isfile(weights):
        raise ConfigError(f"--weights file not found: {weights!r}")
    model = applications.build(name, weights)
    _, h, w, c = model.inputs[0].shape
    num_classes = model.outputs[0].shape[-1]
    meta = {
        "name": f"keras:{name}",
        "preprocess": applications.preprocess_mode(name),
        "class_names": list(applications.imagenet_class_names()) if num_classes == 1000 else None,
    }
    return _describe(
        f"keras:{name}", model, lambda x: model(x, training=False), (h, w), c, num_classes,
        _output_kind(model), options, meta=meta, digest=weights_digest(model),
    )


def _describe(source, model, forward, size, channels, num_classes, output, options,
              meta=None, digest=None) -> LoadedModel:
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
        output=output, handle=model, warnings=notes,
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


def _output_kind(model) -> str:
    """How to turn the model's output into probabilities: from its last layer's activation."""
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
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f]
    except OSError as exc:
        raise ConfigError(f"cannot read --labels {path!r}: {exc.strerror or exc}") from None
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise ConfigError(f"--labels {path!r} must have one non-empty class name per line")
    return names


def _explain_load_error(path: str, exc: Exception) -> ModelError:
    text = str(exc)
    if "safe_mode" in text or "unsafe" in text.lower():
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return ModelError(
            f"refusing to load {path!r} in safe mode: {first} "
            f"If you trust this file, pass --unsafe-model to allow it."
        )
    return ModelError(f"cannot load the model {path!r}: {text.strip().splitlines()[0] if text.strip() else exc!r}")


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
