"""``keras:<Name>`` models: any Keras Applications architecture with ImageNet weights.

Each family is served with its own preprocessing (the mode its ``preprocess_input``
implements) and the 1000 ImageNet class names shipped with bulklabel, so nothing but
the weights themselves is ever downloaded.
"""

from __future__ import annotations

import difflib
import json
import os
from functools import lru_cache
from importlib import resources

from bulklabel.errors import ConfigError, ModelError
from bulklabel.options import ModelOptions

from .loaded import LoadedModel, describe, output_kind, weights_digest

# Keras Applications module → preprocessing mode of its ``preprocess_input``.
FAMILY_PREPROCESS = {
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "densenet": "torch",
    # These models rescale inside the network: raw 0–255 pixels go in.
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
    "mobilenet_v3": "none",
}


def application_names() -> list[str]:
    import keras

    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def application(name: str):
    """The constructor of Keras Applications model ``name``, or a ModelError with suggestions."""
    import keras

    fn = getattr(keras.applications, name, None) if name[:1].isupper() else None
    if not callable(fn):
        close = difflib.get_close_matches(name, application_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join('keras:' + c for c in close)}?" if close else ""
        raise ModelError(
            f"keras:{name} is not a Keras Applications model.{hint} "
            f"Known: {', '.join(application_names())}"
        )
    return fn


def family(name: str) -> str:
    return application(name).__module__.rsplit(".", 1)[-1]


def preprocess_mode(name: str) -> str:
    fam = family(name)
    try:
        return FAMILY_PREPROCESS[fam]
    except KeyError:
        raise ModelError(
            f"keras:{name} belongs to family {fam!r}, whose preprocessing bulklabel does not "
            f"know; load it from a file with --preprocess instead"
        ) from None


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the models' output order (shipped, never downloaded)."""
    text = resources.files(__package__).joinpath("data/imagenet_class_index.json").read_text("utf-8")
    index = json.loads(text)
    return tuple(index[str(i)][1] for i in range(len(index)))


def build(name: str, weights: str | None):
    """Build ``keras.applications.<name>`` with ``weights`` ('imagenet', None or a file path)."""
    fn = application(name)
    try:
        return fn(weights=weights)
    except Exception as exc:
        what = "ImageNet weights" if weights == "imagenet" else f"weights {weights!r}"
        hint = (
            " The weights are downloaded on first use; with no network, pass --weights FILE "
            "(a weights file for this architecture)."
            if weights == "imagenet"
            else ""
        )
        raise ModelError(f"cannot build keras:{name} with {what}: {exc}.{hint}") from None


def resolve_weights(weights: str | None) -> str | None:
    """``--weights`` as Keras takes it: 'imagenet' (also for None), None for 'none', or a file."""
    if weights in (None, "", "imagenet"):
        return "imagenet"
    if weights.lower() == "none":
        return None
    if not os.path.isfile(weights):
        raise ConfigError(f"--weights file not found: {weights!r}")
    return weights


def load(name: str, options: ModelOptions) -> LoadedModel:
    """``keras:<name>`` with its family's preprocessing and, for 1000 outputs, ImageNet's classes."""
    weights = resolve_weights(options.weights)
    model = build(name, weights)
    _, h, w, c = model.inputs[0].shape
    num_classes = model.outputs[0].shape[-1]
    meta = {
        "name": f"keras:{name}",
        "preprocess": preprocess_mode(name),
        "class_names": list(imagenet_class_names()) if num_classes == 1000 else None,
    }
    return describe(f"keras:{name}", model, lambda x: model(x, training=False), (h, w), c,
                    num_classes, output_kind(model), options, meta=meta, digest=weights_digest(model))
