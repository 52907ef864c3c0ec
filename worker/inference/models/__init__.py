"""Loading a model from ``--model``: a thin dispatcher, one module per format.

``load_model`` accepts a ``.keras`` archive or a legacy ``.h5`` file (``keras_file``), a TF
SavedModel folder (``saved_model``) or ``keras:<Name>`` (``applications``), and returns a
``LoadedModel`` (``loaded``): a forward function on preprocessed float batches plus what the
engine needs to know, and the model id ``<name>@<short hash>`` every record carries.

Loading is safe by default: Keras' ``safe_mode`` refuses Lambda layers and other
arbitrary code, and a SavedModel holding any op outside an allow-list of inference ops
(file and dataset readers and writers, Python calls...) is refused before TensorFlow loads
it. ``--unsafe-model`` lifts both, for files you trust.
"""

from __future__ import annotations

import os

from bulklabel.errors import ConfigError, ModelError
from bulklabel.options import ModelOptions

from .. import preprocess
from .loaded import LoadedModel

__all__ = ["LoadedModel", "ModelOptions", "load_model"]


def load_model(spec: str, options: ModelOptions | None = None) -> LoadedModel:
    options = options or ModelOptions()
    if options.preprocess is not None:
        preprocess.check_mode(options.preprocess)
    if spec.startswith("keras:"):
        from . import applications

        return applications.load(spec[len("keras:"):], options)
    if options.weights is not None:
        raise ConfigError("--weights applies only to keras:<Name> models; a saved model has its own")
    if not os.path.exists(spec):
        raise ModelError(
            f"model not found: {spec!r}. Give a .keras or .h5 file, a SavedModel folder, "
            f"or keras:<Name> (e.g. keras:Xception)"
        )
    if os.path.isdir(spec):
        from . import saved_model

        return saved_model.load(spec, options)
    from . import keras_file

    return keras_file.load(spec, options)
