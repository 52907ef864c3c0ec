"""Keras model files: ``.keras`` archives and legacy ``.h5``, loaded in Keras' safe mode.

``load_keras`` is the one place a Keras file is deserialised — for serving here, and for a
saved base in the trainer — so safe mode and its message are the same everywhere.
"""

from __future__ import annotations

from bulklabel.errors import ModelError
from bulklabel.options import ModelOptions

from .loaded import LoadedModel, describe, output_kind


def load_keras(path: str, unsafe: bool = False, what: str = "the model"):
    """The Keras model in ``path``; safe mode (no Lambda layers, no arbitrary code) unless ``unsafe``."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:
        raise _explain(path, exc, what) from None


def load(path: str, options: ModelOptions) -> LoadedModel:
    model = load_keras(path, options.unsafe)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "bulklabel serves image classifiers with one image input and one output")
    _, h, w, c = model.inputs[0].shape
    num_classes = model.outputs[0].shape[-1]
    return describe(path, model, lambda x: model(x, training=False), (h, w), c, num_classes,
                    output_kind(model), options)


def _explain(path: str, exc: Exception, what: str) -> ModelError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "safe_mode" in text or "unsafe" in text.lower():
        return ModelError(f"refusing to load {path!r} in safe mode: {first} "
                          f"If you trust this file, pass --unsafe-model to allow it.")
    return ModelError(f"cannot load {what} {path!r}: {first}")
