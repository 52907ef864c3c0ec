"""TF SavedModels (``model.export(dir)``), served through their ``serving_default`` signature.

In safe mode the SavedModel is audited before TensorFlow loads it — loading runs code from
the model (resource initializers) — and refused if any of its graphs or functions uses an
op outside what inference needs (``graph_audit``, ``allowed_ops``).
"""

from __future__ import annotations

import os

from bulklabel.errors import ModelError
from bulklabel.options import ModelOptions

from .loaded import LoadedModel, describe

# How many refused op names the message lists.
MAX_LISTED_OPS = 12


def load(path: str, options: ModelOptions) -> LoadedModel:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelError(f"{path!r} is a folder but not a TensorFlow SavedModel (no saved_model.pb)")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ModelError("a TF SavedModel can only be served with the TensorFlow backend "
                         "(KERAS_BACKEND=tensorflow)")
    if not options.unsafe:
        audit(path)
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(path)
        signature = obj.signatures["serving_default"]
    except KeyError:
        raise ModelError(f"the SavedModel {path!r} has no 'serving_default' signature") from None
    except Exception as exc:
        raise ModelError(f"cannot load the SavedModel {path!r}: {exc}") from None
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the SavedModel {path!r} must take one image input and give one output; "
                         f"it has inputs {sorted(inputs)} and outputs {sorted(outputs)}")
    (in_name, in_spec), = inputs.items()
    (out_name, out_spec), = outputs.items()
    batch, h, w, c = in_spec.shape.as_list()
    in_dtype = in_spec.dtype

    def forward(x):
        return signature(**{in_name: tf.cast(x, in_dtype)})[out_name]

    return describe(path, obj, forward, (h, w), c, out_spec.shape[-1], "probabilities", options,
                    fixed_batch=batch)


def audit(path: str) -> None:
    """Refuse the SavedModel in ``path`` unless every op in ``saved_model.pb`` is allowed; loads nothing."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    from .graph_audit import refused_ops

    proto = saved_model_pb2.SavedModel()
    try:
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())  # the file tf.saved_model.load parses
    except (OSError, DecodeError) as exc:
        raise ModelError(f"cannot read the SavedModel {path!r}: {exc}") from None
    refused = refused_ops(proto)
    if refused:
        listed = ", ".join(refused[:MAX_LISTED_OPS])
        more = f" and {len(refused) - MAX_LISTED_OPS} more" if len(refused) > MAX_LISTED_OPS else ""
        raise ModelError(
            f"refusing the SavedModel {path!r}: it uses {listed}{more}, outside the ops safe mode "
            f"allows for inference (others can read or write files, run Python or more). "
            f"If you trust this model, pass --unsafe-model"
        )
