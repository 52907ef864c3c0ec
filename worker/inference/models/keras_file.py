"""Keras model files: ``.keras`` archives and legacy ``.h5``, loaded in Keras' safe mode.

``load_keras`` is the one place a Keras file is deserialised — for serving here, and for a
saved base in the trainer — so safe mode and its message are the same everywhere.

A ``.keras`` archive is checked before Keras opens it, because Keras extracts every member
to disk: bulklabel's metadata member must declare no more than ``MAX_METADATA_BYTES``, and
every member must be stored or deflated (reads of those are bounded; bzip2 and lzma inflate
whatever block they are handed).
"""

from __future__ import annotations

import zipfile

from bulklabel.errors import ModelError
from bulklabel.options import ModelOptions

from ..metadata import MAX_METADATA_BYTES, MEMBER, too_large
from .loaded import LoadedModel, describe, output_kind

_BOUNDED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def load_keras(path: str, unsafe: bool = False, what: str = "the model"):
    """The Keras model in ``path``; safe mode (no Lambda layers, no arbitrary code) unless ``unsafe``."""
    import keras

    check_archive(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:
        raise _explain(path, exc, what) from None


def check_archive(path: str) -> None:
    """Refuse a zip archive whose members Keras could not read in bounded memory and disk."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (OSError, zipfile.BadZipFile):
        return  # not an archive Keras can open either; its loader says why
    for info in members:
        if info.compress_type not in _BOUNDED_METHODS:
            raise ModelError(f"cannot load {path!r}: its member {info.filename!r} uses zip compression "
                             f"method {info.compress_type}; Keras archives are stored or deflated")
        if info.filename == MEMBER and info.file_size > MAX_METADATA_BYTES:
            raise ModelError(too_large(f"the metadata member {MEMBER!r} of {path!r}", info.file_size))


def load(path: str, options: ModelOptions) -> LoadedModel:
    model = load_keras(path, options.unsafe)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "bulklabel serves image classifiers with one image input and one output")
    batch, h, w, c = model.inputs[0].shape
    num_classes = model.outputs[0].shape[-1]
    return describe(path, model, lambda x: model(x, training=False), (h, w), c, num_classes,
                    output_kind(model), options, fixed_batch=batch)


def _explain(path: str, exc: Exception, what: str) -> ModelError:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "safe_mode" in text or "unsafe" in text.lower():
        return ModelError(f"refusing to load {path!r} in safe mode: {first} "
                          f"If you trust this file, pass --unsafe-model to allow it.")
    return ModelError(f"cannot load {what} {path!r}: {first}")
