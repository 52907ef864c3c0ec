"""TF SavedModels (``model.export(dir)``), served through their ``serving_default`` signature.

In safe mode a SavedModel whose serving graph can touch files or run Python is refused.
"""

from __future__ import annotations

import os

from bulklabel.errors import ModelError
from bulklabel.options import ModelOptions

from .loaded import LoadedModel, describe

# Ops that let a SavedModel graph reach outside the tensors it is given.
UNSAFE_GRAPH_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "Save", "SaveV2", "SaveSlices",
    "MergeV2Checkpoints", "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst",
    "PrintV2", "WriteSummary", "CreateSummaryFileWriter", "DebugIdentityV2",
})


def load(path: str, options: ModelOptions) -> LoadedModel:
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
        bad = sorted(graph_ops(signature) & UNSAFE_GRAPH_OPS)
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

    return describe(path, obj, forward, (h, w), c, out_spec.shape[-1], "probabilities", options)


def graph_ops(signature) -> set[str]:
    graph_def = signature.graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        ops.update(node.op for node in fn.node_def)
    return ops
