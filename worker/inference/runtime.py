"""Process-wide TensorFlow settings, applied before TensorFlow initialises.

``configure`` is called once per process, by its entry point (the command line's local
commands, a worker process's ``main``), before the first model is loaded: thread pools and
GPU memory growth cannot be changed once TensorFlow has started.
"""

from __future__ import annotations

import contextlib
import os

from bulklabel.options import RuntimeOptions


@contextlib.contextmanager
def _stderr_silenced(enabled: bool):
    """Send fd 2 to /dev/null: TensorFlow's C++ start-up lines are printed before any
    logging setting applies. Python exceptions still surface after the block."""
    if not enabled:
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128


def default_batch_size() -> int:
    """Images per model call when none is asked for: larger on a GPU, which needs the work."""
    try:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return GPU_BATCH_SIZE if tf.config.list_logical_devices("GPU") else CPU_BATCH_SIZE
        if keras.backend.backend() == "jax":
            import jax

            return GPU_BATCH_SIZE if jax.default_backend() == "gpu" else CPU_BATCH_SIZE
    except Exception:
        pass
    return CPU_BATCH_SIZE


def configure(options: RuntimeOptions | None = None) -> None:
    """Start TensorFlow quietly, bound its CPU threads (``tf_threads``; None: its default) and
    let GPU memory grow on demand. Set TF_CPP_MIN_LOG_LEVEL yourself to see its start-up logs.
    ``mixed_precision`` builds models in float16 with float32 variables (fast on GPUs with
    tensor cores); scores are always returned as float32."""
    options = options or RuntimeOptions()
    threads = options.tf_threads
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with _stderr_silenced(quiet):
        import keras

        if options.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        if keras.backend.backend() != "tensorflow":
            return
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised: nothing to do


def tf_thread_counts() -> dict[str, int | str]:
    """TensorFlow's CPU thread pools as they are: ``intra-op``/``inter-op`` threads (TensorFlow's
    default is one per core this process may run on, which it reads from the CPU affinity), or
    ``backend`` when Keras runs on another backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return {"backend": keras.backend.backend()}
    import tensorflow as tf

    from .engine import usable_cores

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {"intra-op": intra or usable_cores(), "inter-op": inter or usable_cores(),
            "chosen by": "--tf-threads" if intra else "TensorFlow (one per usable core)"}
