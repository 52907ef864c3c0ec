"""One benchmark pipeline per process: ``python -m bench.pipelines NAME LIST MODEL OUT``.

Every pipeline builds the same model (Keras Applications architecture, random weights:
cost does not depend on the weights), labels every image in LIST with its top 5 classes
and prints one JSON line: images, job seconds (after model build and warm-up), and the
process's start-up seconds. bulklabel itself runs as its own command (see bench.run).

* bound    — the images' count as tensors already in memory, fixed-shape batches through one
             traced call: no decode, no I/O (the limit of the machine for the model);
* tfdata   — tf.data: parallel read + decode_image + resize + preprocess, batch, prefetch,
             then model.predict; ``tfdata-cold`` is the same without the warm-up call (as
             people write it; for whole-process start-up timings);
* tutorial — the classic loop: load_img, img_to_array, preprocess_input, predict per image.
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
BATCH = int(os.environ.get("BENCH_BATCH", "32"))


def _model(name: str):
    import keras

    module = {"MobileNetV2": keras.applications.mobilenet_v2, "Xception": keras.applications.xception}[name]
    model = getattr(keras.applications, name)(weights=None)
    return model, module.preprocess_input, model.input_shape[1:3]


def _write(out: str, sources, probs) -> None:
    import numpy as np

    top = np.argsort(-probs, axis=1)[:, :5]
    with open(out, "a", encoding="utf-8") as f:
        for s, idx, p in zip(sources, top, probs):
            f.write(json.dumps({"source": s, "top_k": [[int(i), float(p[i])] for i in idx]}) + "\n")


def bound(paths, model_name, out):
    import numpy as np
    import tensorflow as tf

    model, preprocess, (h, w) = _model(model_name)
    n = len(paths)
    data = np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    call = tf.function(lambda x: model(preprocess(tf.cast(x, tf.float32)), training=False),
                       input_signature=[tf.TensorSpec((BATCH, h, w, 3), tf.uint8)])
    call(np.zeros((BATCH, h, w, 3), np.uint8))
    start = time.perf_counter()
    batch = np.zeros((BATCH, h, w, 3), np.uint8)
    for i in range(0, n, BATCH):
        part = data[i:i + BATCH]
        batch[: len(part)] = part
        probs = call(batch).numpy()[: len(part)]
        np.argsort(-probs, axis=1)[:, :5]
    return n, time.perf_counter() - start


def tfdata(paths, model_name, out, warm: bool = True):
    import tensorflow as tf

    model, preprocess, (h, w) = _model(model_name)
    if warm:
        model.predict(tf.zeros((BATCH, h, w, 3)), verbose=0)  # warm-up: the job's time is the steady rate

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), (h, w))
        return preprocess(image)

    start = time.perf_counter()
    ds = (tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(BATCH).prefetch(tf.data.AUTOTUNE))
    probs = model.predict(ds, verbose=0)
    _write(out, paths, probs)
    return len(paths), time.perf_counter() - start


def tutorial(paths, model_name, out):
    import keras
    import numpy as np

    model, preprocess, (h, w) = _model(model_name)
    model.predict(np.zeros((1, h, w, 3), "float32"), verbose=0)
    start = time.perf_counter()
    for path in paths:
        img = keras.utils.load_img(path, target_size=(h, w))
        x = preprocess(np.expand_dims(keras.utils.img_to_array(img), 0))
        _write(out, [path], model.predict(x, verbose=0))
    return len(paths), time.perf_counter() - start


def main() -> None:
    name, list_file, model_name, out = sys.argv[1:5]
    with open(list_file, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    open(out, "w").close()
    startup = time.perf_counter() - T0
    cold = lambda *a: tfdata(*a, warm=False)  # noqa: E731  (as people write it: whole-process timings)
    images, seconds = {"bound": bound, "tfdata": tfdata, "tfdata-cold": cold,
                       "tutorial": tutorial}[name](paths, model_name, out)
    print(json.dumps({"pipeline": name, "images": images, "seconds": round(seconds, 4),
                      "images_per_second": round(images / seconds, 3),
                      "process_seconds": round(time.perf_counter() - T0, 3), "import_seconds": round(startup, 3)}))


if __name__ == "__main__":
    main()
