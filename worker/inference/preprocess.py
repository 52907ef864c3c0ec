"""Pixel preprocessing modes, applied to float batches inside the traced model call.

The modes match ``keras.applications``' ``preprocess_input`` functions:

==========  =====================================================================
``none``    raw 0–255 floats (models that rescale inside, e.g. EfficientNet)
``rescale`` x / 255
``tf``      x / 127.5 − 1 (Xception, Inception, MobileNet v1/v2, ResNet v2, NASNet)
``caffe``   RGB→BGR, minus the ImageNet BGR mean (VGG, ResNet v1)
``torch``   x / 255, minus the ImageNet mean, over its std (DenseNet)
==========  =====================================================================

They are written with ``keras.ops`` so they work in whichever backend runs the model.
"""

from __future__ import annotations

import numpy as np

from bulklabel.errors import ConfigError
from bulklabel.settings import PREPROCESS_MODES as MODES

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def check_mode(mode: str, channels: int = 3) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown preprocessing {mode!r}: use one of {', '.join(MODES)}")
    if channels != 3 and mode in ("caffe", "torch"):
        raise ConfigError(f"--preprocess {mode} needs 3-channel (RGB) input; this model takes {channels}")
    return mode


def _preprocess(x, mode: str, flip, constant):
    """The modes, written once over the two array libraries' own flip and constant."""
    if mode == "none":
        return x
    if mode == "rescale":
        return x / 255.0
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return flip(x) - constant(_CAFFE_MEAN_BGR)
    if mode == "torch":
        return (x / 255.0 - constant(_TORCH_MEAN)) / constant(_TORCH_STD)
    raise ConfigError(f"unknown preprocessing {mode!r}")


def apply(x, mode: str):
    """Preprocess a float32 batch ``x`` (N, H, W, C) with keras.ops (any backend)."""
    from keras import ops

    return _preprocess(x, mode, lambda t: ops.flip(t, axis=-1),
                       lambda v: ops.convert_to_tensor(v, dtype=x.dtype))


def apply_numpy(x: np.ndarray, mode: str) -> np.ndarray:
    """The same as ``apply`` in NumPy (reference for tests and for tools without a model)."""
    return _preprocess(x.astype(np.float32), mode, lambda t: t[..., ::-1],
                       lambda v: np.array(v, np.float32))
