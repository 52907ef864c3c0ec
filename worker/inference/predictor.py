"""The model call: batches of uint8 pixels through one traced function.

On TensorFlow the call is traced once for ``(None, H, W, C)`` uint8: any number of images up
to ``batch_size`` runs through the same graph, so the tail batch of a job (and a job smaller
than a batch) computes only its own images, and nothing is traced again whatever the size
of the job. JAX compiles per shape, and a model may insist on one batch size: there every
batch is padded to ``batch_size``.
Casting, preprocessing and turning outputs into scores happen inside the traced call, on
the device, so only uint8 pixels cross to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import preprocess
from .models import LoadedModel


class Predictor:
    def __init__(self, model: LoadedModel, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        h, w = model.input_size
        self.shape = (batch_size, h, w, model.channels)
        self.traces = 0  # times the call was traced (1 in a healthy run); eager backends: calls
        self.computed = 0  # images run through the model, padding included
        self._fn = self._compile()
        from keras import ops

        self._to_numpy = ops.convert_to_numpy  # TF, JAX or torch tensors, on any device

    def _compile(self):
        import keras
        from keras import ops

        model = self.model
        backend = keras.backend.backend()
        # Every call has the full batch shape: for a model whose input insists on one batch
        # size, and on JAX (one compilation per shape). Elsewhere a partial batch runs as is.
        self.pads = model.fixed_batch is not None or backend == "jax"

        def call(x):
            self.traces += 1  # Python side effect: runs only while tracing
            x = preprocess.apply(ops.cast(x, "float32"), model.preprocess)
            y = ops.cast(model.forward(x), "float32")
            return scores(y, model.output)

        if backend == "tensorflow":
            import tensorflow as tf

            batch = self.batch_size if self.pads else None
            return tf.function(
                call, input_signature=[tf.TensorSpec((batch, *self.shape[1:]), tf.uint8)], jit_compile=False,
                reduce_retracing=True,
            )
        if backend == "jax":
            import jax

            return jax.jit(call)
        if backend == "torch":
            import torch

            def eager(x):
                with torch.inference_mode():  # no autograd bookkeeping
                    return call(x)

            return eager
        return call

    def new_batch(self) -> np.ndarray:
        return np.zeros(self.shape, np.uint8)

    def predict(self, batch: np.ndarray, count: int | None = None) -> np.ndarray:
        """Scores (count, classes) float32 for the first ``count`` images of ``batch`` (all of
        them when None), which holds at most ``batch_size`` images of the model's shape."""
        count = len(batch) if count is None else count
        if count > self.batch_size or batch.shape[1:] != self.shape[1:]:
            raise ValueError(f"a batch of at most {self.shape} was expected, got {batch.shape}")
        if self.pads and len(batch) != self.batch_size:
            padded = self.new_batch()
            padded[: len(batch)] = batch
            batch = padded
        elif not self.pads:
            batch = batch[:count]  # a view: only these images are computed
        self.computed += len(batch)
        out = self._to_numpy(self._fn(batch))
        return out[:count]

    def warmup(self, compute: bool = True) -> None:
        """Trace the call, and with ``compute`` also run it once on a batch of zeros.

        Tracing alone costs a fraction of a second and surfaces a model that cannot run at
        this shape; computing a batch of zeros costs a whole batch of the model (seconds for a
        heavy one) but makes the first real batch as fast as the rest. A worker that loads
        once and then waits for chunks computes; a one-off job traces only, and its first
        real batch does the rest."""
        if compute:
            self.predict(self.new_batch())
        elif hasattr(self._fn, "get_concrete_function"):  # TensorFlow: trace, run nothing
            self._fn.get_concrete_function()


def scores(y, output: str):
    from keras import ops

    if output == "logits":
        return ops.softmax(y, axis=-1)
    if output.startswith("binary"):
        p = ops.sigmoid(y) if output == "binary-logits" else y
        return ops.concatenate([1.0 - p, p], axis=-1)
    return y


def top_k(scores_: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best classes per row, best first."""
    k = min(k, scores_.shape[1])
    part = np.argpartition(-scores_, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores_, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def ranked(model: LoadedModel, indices: np.ndarray, values: np.ndarray) -> list[Sequence[tuple[str, float]]]:
    return [
        [(model.label(int(i)), float(v)) for i, v in zip(row_i, row_v)]
        for row_i, row_v in zip(indices, values)
    ]
