"""Regenerate the bundled sample: ``sample/images`` and ``sample/model.keras``.

    python -m tools.make_sample            # needs scikit-image (pip install -e '.[sample]')

The model is a small CNN trained on photo variants decoded by bulklabel's own decoder
(so training and serving see the same pixels), saved with its class names, preprocessing
and input size. The sample images are fresh variants the model never saw, in several
formats and modes, plus one truncated file that shows an error record.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil

import numpy as np
from PIL import Image

from tools.photos import BASE_PHOTOS, Variant, base_photo, encode, make_variant

IMAGE_SIZE = (64, 64)
CLASSES = sorted(BASE_PHOTOS)


def training_set(per_class: int, seed: int):
    from worker.inference.decode import decode_image

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        base = base_photo(name)
        for _ in range(per_class):
            data = encode(make_variant(base, rng, Variant(min_side=96, max_side=320)), "JPEG", rng)
            xs.append(decode_image(data, IMAGE_SIZE))
            ys.append(label)
    return np.stack(xs), np.array(ys)


def train_model(out: str, per_class: int, epochs: int, seed: int) -> float:
    import keras

    from worker.inference.metadata import write_metadata

    keras.utils.set_random_seed(seed)
    x, y = training_set(per_class, seed)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.85)
    model = keras.Sequential([
        keras.Input((*IMAGE_SIZE, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(48, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.2),
        keras.layers.Dense(len(CLASSES), activation="softmax"),
    ], name="sample_photos")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    xf = x.astype("float32") / 255.0
    model.fit(xf[:split], y[:split], validation_data=(xf[split:], y[split:]),
              epochs=epochs, batch_size=32, verbose=2)
    _, acc = model.evaluate(xf[split:], y[split:], verbose=0)
    model.save(out)
    write_metadata(out, {
        "name": "sample-photos", "class_names": CLASSES, "preprocess": "rescale",
        "image_size": list(IMAGE_SIZE), "resize": "bilinear",
    })
    return float(acc)


def write_images(folder: str, per_class: int, seed: int) -> list[tuple[str, str]]:
    """Held-out variants in mixed formats and modes; returns (file name, true class)."""
    rng = np.random.default_rng(seed + 1000)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    truth, n = [], 0
    for name in CLASSES:
        base = base_photo(name)
        for i in range(per_class):
            n += 1
            lossless = i == 1 or (i == 4 and name == "coffee")
            im = make_variant(base, rng, Variant(min_side=240, max_side=320 if lossless else 560))
            fmt, ext = ("PNG", "png") if lossless else ("JPEG", "jpg")
            if i == 2 and name in ("cat", "rocket"):
                fmt, ext = "WEBP", "webp"
            file = f"IMG_{n:04d}.{ext}"
            path = os.path.join(folder, file)
            if i == 3 and name == "astronaut":  # a portrait photo stored sideways + EXIF rotation
                exif = Image.Exif()
                exif[0x0112] = 6
                im.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif)
            elif i == 4 and name == "coffee":   # an RGBA PNG
                im.putalpha(255)
                im.save(path, "PNG")
            else:
                with open(path, "wb") as f:
                    f.write(encode(im, fmt, rng))
            truth.append((file, name))
    # Spaces and non-ASCII characters in names work too.
    os.rename(os.path.join(folder, truth[0][0]), os.path.join(folder, "première photo.jpg"))
    truth[0] = ("première photo.jpg", truth[0][1])
    # One damaged file: the job records why and goes on.
    buf = io.BytesIO()
    make_variant(base_photo("cat"), rng).save(buf, "JPEG")
    with open(os.path.join(folder, "damaged_upload.jpg"), "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 3])
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("Not an image: ignored when the folder is classified.\n")
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="sample")
    ap.add_argument("--per-class", type=int, default=6, help="sample images per class")
    ap.add_argument("--train-per-class", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    acc = train_model(os.path.join(args.out, "model.keras"), args.train_per_class, args.epochs, args.seed)
    truth = write_images(os.path.join(args.out, "images"), args.per_class, args.seed)
    with open(os.path.join(args.out, "truth.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label"])
        w.writerows(truth)
    print(f"validation accuracy {acc:.3f}; {len(truth)} sample images in {args.out}/images")


if __name__ == "__main__":
    main()
