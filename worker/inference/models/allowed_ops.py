"""The TensorFlow ops a SavedModel may hold to be served in safe mode (``graph_audit``).

An allow-list, measured: every op here was found in a real inference export — the project's
trained classifier (MobileNetV2 base), Keras Applications built with ``weights=None``
(MobileNet, MobileNetV2, MobileNetV3Small, EfficientNetB0, EfficientNetV2B0, ResNet50,
ResNet50V2, Xception, InceptionV3, InceptionResNetV2, ConvNeXtTiny, DenseNet121,
NASNetMobile, VGG16), also in mixed precision, with and without bulklabel's preprocessing
in the model (Rescaling, Normalization, Resizing, CenterCrop, the ``preprocess`` modes), a
model of most Keras layers and activations, and a hand-written ``tf.function`` serving
wrapper — each exported with ``model.export`` and with ``tf.saved_model.save`` (Keras 3.15,
TensorFlow 2.21). Every one computes on tensors in memory: none opens a file, a socket, a
dataset, a summary writer or Python. An op missing here refuses the model, naming it, until
``--unsafe-model``; add one only after seeing it in a real export, and only if it is that pure.
"""

from __future__ import annotations

INFERENCE_OPS = frozenset({
    # Graph plumbing: inputs, constants, calls of the model's own functions (audited in
    # turn), pass-throughs.
    "Const", "Identity", "IdentityN", "NoOp", "PartitionedCall", "Placeholder",
    "StatefulPartitionedCall", "StopGradient",
    # Variables: resource handles in memory, read by the model; assigned and checked by the
    # TF1-compatible initializer nodes every TF2 export carries.
    "AssignVariableOp", "ReadVariableOp", "VarHandleOp", "VarIsInitializedOp",
    # Shapes and layout.
    "BatchToSpaceND", "ConcatV2", "ExpandDims", "GatherV2", "Pack", "Pad", "Range", "Reshape",
    "ReverseV2", "Shape", "SpaceToBatchND", "Squeeze", "StridedSlice", "Tile", "Transpose",
    "ZerosLike",
    # Arithmetic, comparisons, reductions.
    "AddV2", "BatchMatMulV2", "BiasAdd", "Cast", "Cumsum", "Einsum", "Erfc", "Exp", "Expm1",
    "Greater", "Less", "LessEqual", "MatMul", "Max", "Maximum", "Mean", "Minimum", "Mul", "Neg",
    "Pow", "Prod", "RealDiv", "Rsqrt", "SelectV2", "Sqrt", "Square", "SquaredDifference", "Sub",
    "Sum", "TopKV2",
    # Convolution, pooling, resizing.
    "AvgPool", "Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "MaxPool", "ResizeArea",
    "ResizeBicubic", "ResizeBilinear", "ResizeNearestNeighbor",
    # Activations.
    "Elu", "LeakyRelu", "LogSoftmax", "Relu", "Relu6", "Selu", "Sigmoid", "Softmax", "Softplus",
    "Softsign", "Tanh",
})

# Checkpoint I/O and its filename plumbing, found only in the saver's own functions. SaveV2
# and MergeV2Checkpoints write files and RestoreV2 reads them, so each is allowed only in a
# function that nothing but saver_def's save (or restore) node calls (see graph_audit).
SAVE_OPS = frozenset({
    "DisableCopyOnRead", "MergeV2Checkpoints", "SaveV2", "Select", "ShardedFilename",
    "StaticRegexFullMatch", "StringJoin",
})
RESTORE_OPS = frozenset({"RestoreV2"})
