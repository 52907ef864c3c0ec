"""Labeled image folders for training and evaluation.

DATA is a folder (or ``s3://bucket/prefix``) with one subfolder per class — the layout of
``image_dataset_from_directory`` — or with ``train/`` and ``val/`` (or ``validation/``)
subfolders of that shape. Without a validation folder, a seeded split stratified by class
holds out ``val_split`` of each class.

Batches are decoded with ``worker.inference.decode.decode_image`` — the function the engine uses —
so training and serving see the same pixels; augmentation (Keras preprocessing layers)
applies to training batches only, before the model's preprocessing.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bulklabel.errors import ConfigError, ImageError
from bulklabel.sources import walk_images
from bulklabel.storage import open_reader

from ..inference import preprocess
from ..inference.decode import decode_image
from ..inference.engine import usable_cores

VAL_FOLDERS = ("val", "validation")


@dataclass
class LabeledFiles:
    locations: list[str]
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.locations)

    def counts(self) -> dict[str, int]:
        return {name: self.labels.count(i) for i, name in enumerate(self.class_names)}


def _relative_images(root: str) -> Iterator[tuple[str, list[str]]]:
    """(location, path parts relative to root) for every image under root."""
    if root.startswith("s3://"):
        from bulklabel.storage.s3 import list_images

        base = root.rstrip("/") + "/"
        for uri in list_images(base):
            yield uri, uri[len(base):].split("/")
    else:
        if not os.path.isdir(root):
            raise ConfigError(f"DATA must be a folder of class subfolders. Received: {root!r}")
        root = os.path.abspath(root)
        for path in walk_images(root):
            yield path, os.path.relpath(path, root).split(os.sep)


def scan(root: str) -> dict[str, dict[str, list[str]]]:
    """{split: {class: [locations]}} with split '' (no train/val layout), 'train' or 'val'."""
    tree: dict[str, dict[str, list[str]]] = {}
    loose = 0
    for location, parts in _relative_images(root):
        if len(parts) >= 3 and parts[0] in ("train", *VAL_FOLDERS):
            split, cls = ("val" if parts[0] in VAL_FOLDERS else "train"), parts[1]
        elif len(parts) >= 2:
            split, cls = "", parts[0]
        else:
            loose += 1
            continue
        tree.setdefault(split, {}).setdefault(cls, []).append(location)
    if loose:
        print(f"bulklabel: note: {loose} images directly in {root} (not in a class folder) ignored",
              file=sys.stderr)
    return tree


def _labeled(classes: dict[str, list[str]], names: list[str]) -> LabeledFiles:
    locations, labels = [], []
    for index, name in enumerate(names):
        for location in sorted(classes.get(name, [])):
            locations.append(location)
            labels.append(index)
    return LabeledFiles(locations, labels, names)


def load_split(root: str, val_split: float, seed: int) -> tuple[LabeledFiles, LabeledFiles]:
    tree = scan(root)
    if "train" in tree:
        names = sorted(tree["train"])
        unknown = sorted(set(tree.get("val", {})) - set(names))
        if unknown:
            raise ConfigError(f"val/ has classes that train/ lacks: {', '.join(unknown)}")
        if "val" not in tree:
            raise ConfigError(f"{root} has train/ but no val/ (or validation/) folder")
        train, val = _labeled(tree["train"], names), _labeled(tree["val"], names)
    else:
        classes = tree.get("", {})
        names = sorted(classes)
        if not 0.0 < val_split < 1.0:
            raise ConfigError(f"--val-split must be between 0 and 1. Received: {val_split}")
        rng = np.random.default_rng(seed)
        train_part: dict[str, list[str]] = {}
        val_part: dict[str, list[str]] = {}
        for name in names:
            files = sorted(classes[name])
            rng.shuffle(files)
            n_val = max(1, round(len(files) * val_split)) if len(files) > 1 else 0
            val_part[name], train_part[name] = files[:n_val], files[n_val:]
        train, val = _labeled(train_part, names), _labeled(val_part, names)
    if len(names) < 2:
        raise ConfigError(f"DATA needs at least 2 class folders with images; found {names or 'none'} in {root}")
    empty = [n for n, c in train.counts().items() if c == 0]
    if empty:
        raise ConfigError(f"no training images for class(es): {', '.join(empty)}")
    if len(val) == 0:
        raise ConfigError("no validation images: add more images per class or a val/ folder")
    return train, val


def augmentation(seed: int):
    """Keras preprocessing layers for training batches (raw 0-255 pixels)."""
    import keras

    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom(0.12, fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomContrast(0.2, seed=seed + 3),
    ], name="augmentation")


def make_batches(files: LabeledFiles, size: tuple[int, int], mode: str, batch_size: int,
                 augment=None, shuffle: bool = False, seed: int = 0, threads: int = 0,
                 cache: dict | None = None):
    import keras

    class ImageBatches(keras.utils.PyDataset):
        """Decoded, augmented (training only) and preprocessed batches of ``files``."""

        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(files))
            if shuffle:
                self.rng.shuffle(self.order)
            self.reader = open_reader()
            self.pool = ThreadPoolExecutor(threads or max(2, usable_cores()), "bulklabel-train")
            self.cache = cache  # None: decode every epoch (datasets too big to keep)
            self.bad: dict[str, str] = {}

        def __len__(self) -> int:
            return math.ceil(len(files) / batch_size)

        def _pixels(self, i: int):
            if self.cache is not None and i in self.cache:
                return self.cache[i]
            location = files.locations[i]
            try:
                pixels = decode_image(self.reader.read(location), size)
            except ImageError as exc:
                if location not in self.bad:
                    self.bad[location] = exc.reason
                    print(f"bulklabel: skipping {location}: {exc.reason}", file=sys.stderr)
                return None
            if self.cache is not None:
                self.cache[i] = pixels
            return pixels

        def __getitem__(self, index: int):
            picked = self.order[index * batch_size:(index + 1) * batch_size]
            pixels = list(self.pool.map(self._pixels, picked))
            keep = [k for k, p in enumerate(pixels) if p is not None]
            x = np.stack([pixels[k] for k in keep]).astype("float32") if keep else np.zeros((0, *size, 3), "float32")
            y = np.array([files.labels[picked[k]] for k in keep], dtype="int32")
            if augment is not None and len(x):
                x = keras.ops.convert_to_numpy(augment(x, training=True))
            return preprocess.apply_numpy(x, mode), y

        def on_epoch_end(self) -> None:
            if shuffle:
                self.rng.shuffle(self.order)

    return ImageBatches()
