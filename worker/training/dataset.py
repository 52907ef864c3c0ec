"""Labeled images for training and evaluation, in one of two layouts.

Folders: DATA is a folder (or ``s3://bucket/prefix``) with one subfolder per class — the
layout of ``image_dataset_from_directory`` — or with ``train/`` and ``val/`` (or
``validation/``) subfolders of that shape.

Lists: a local DATA folder holds ``lists/<class>.txt`` files (or ``lists/train/<class>.txt``
and ``lists/val/<class>.txt``), each a UTF-8 text file with one image location per line: an
absolute local path, a path relative to the list file's folder, a ``file://`` URI or an
``s3://`` URI; surrounding whitespace, blank lines and lines starting with ``#`` are ignored.
A location listed twice for one class counts once; one listed for two classes (or in both
train and val) is an error. Lists name images where they are (an S3 bucket, say), so a
dataset can be assembled without copying any. A DATA folder with ``lists/`` cannot also have
class folders with images.

Either way a class is named by its folder or list file name decoded with
``bulklabel.classes.from_path_name`` (``a%2Fb`` is the class ``a/b``), and the classes are
those names sorted. Without a validation folder or lists, a seeded split stratified by class
holds out ``val_split`` of each class. An image that is missing or cannot be decoded is
skipped with a message when its batch is made, as an undecodable file is.

Batches are decoded with ``worker.inference.decode.decode_image`` — the function the engine uses —
so training and serving see the same pixels; augmentation (Keras preprocessing layers)
applies to training batches only, before the model's preprocessing.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bulklabel.classes import from_path_name
from bulklabel.errors import ConfigError, ImageError
from bulklabel.names import is_file_uri, local_str, source_text
from bulklabel.sources import walk_images
from bulklabel.storage import open_reader

from ..inference import preprocess
from ..inference.decode import decode_image
from ..inference.engine import usable_cores

VAL_FOLDERS = ("val", "validation")
LISTS = "lists"  # DATA/lists/: the list layout
LIST_SUFFIX = ".txt"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

Tree = dict[str, dict[str, list[str]]]  # {split: {class: [locations]}}, split '', 'train' or 'val'


@dataclass
class LabeledFiles:
    locations: list[str]
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.locations)

    def counts(self) -> dict[str, int]:
        return {name: self.labels.count(i) for i, name in enumerate(self.class_names)}


class ClassNames:
    """Decodes folder and list file names into class names, one split at a time, refusing two
    names on disk that decode to the same class (``%25`` and ``%`` are both ``%``)."""

    def __init__(self, what: str):
        self.what = what
        self.seen: dict[tuple[str, str], str] = {}

    def decode(self, split: str, component: str) -> str:
        name = from_path_name(component)
        other = self.seen.setdefault((split, name), component)
        if other != component:
            first, second = sorted((other, component))
            raise ConfigError(f"the {self.what} {first!r} and {second!r} both stand for the class {name!r}; "
                              "rename one")
        return name


def _relative_images(root: str, skip: str | None = None) -> Iterator[tuple[str, list[str]]]:
    """(location, path parts relative to root) for every image under root, the top-level
    folder ``skip`` left out."""
    if root.startswith("s3://"):
        from bulklabel.storage.s3 import list_images

        base = root.rstrip("/") + "/"
        for uri in list_images(base):
            yield uri, uri[len(base):].split("/")
    else:
        if not os.path.isdir(root):
            raise ConfigError(f"DATA must be a folder of class subfolders (or with lists/). Received: {root!r}")
        root = os.path.abspath(root)
        for path in walk_images(root):
            parts = os.path.relpath(path, root).split(os.sep)
            if parts[0] != skip:
                yield path, parts


def scan(root: str, skip: str | None = None) -> Tree:
    """{split: {class: [locations]}} of the folder layout under ``root`` (the top-level folder
    ``skip`` left out), class names decoded from their folder names."""
    tree: Tree = {}
    names = ClassNames("folders")
    loose = 0
    for location, parts in _relative_images(root, skip):
        if len(parts) >= 3 and parts[0] in ("train", *VAL_FOLDERS):
            split, folder = ("val" if parts[0] in VAL_FOLDERS else "train"), parts[1]
        elif len(parts) >= 2:
            split, folder = "", parts[0]
        else:
            loose += 1
            continue
        tree.setdefault(split, {}).setdefault(names.decode(split, folder), []).append(location)
    if loose:
        print(f"bulklabel: note: {loose} images directly in {root} (not in a class folder) ignored",
              file=sys.stderr)
    return tree


def _list_files(folder: str) -> list[str]:
    """The list files (``*.txt``, not hidden) directly in ``folder``, sorted; none if it is no folder."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list {folder!r}: {exc.strerror or exc}") from None
    return [e.path for e in entries
            if e.name.lower().endswith(LIST_SUFFIX) and not e.name.startswith(".") and e.is_file()]


def _list_splits(folder: str) -> dict[str, list[str]]:
    """{split: [list files]} in ``folder`` (DATA/lists): '' for its own files, 'train' and 'val'
    (from val/ and validation/) for the split layout; empty if there are no lists."""
    splits = {"": _list_files(folder), "train": _list_files(os.path.join(folder, "train")),
              "val": [path for sub in VAL_FOLDERS for path in _list_files(os.path.join(folder, sub))]}
    return {split: files for split, files in splits.items() if files}


def list_location(entry: str, folder: str) -> str:
    """The location a list entry names, in one spelling per image (so duplicates are found):
    an ``s3://`` URI as it is, a local path made absolute from ``folder`` and normalised
    (valid UTF-8 text; a name that is not becomes a ``file://`` URI). ``ValueError`` says why
    an entry names no image."""
    if entry.startswith("s3://"):
        bucket, _, key = entry[len("s3://"):].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ValueError("an s3:// URI must name one object (s3://bucket/key)")
        return entry
    if is_file_uri(entry):
        entry = local_str(entry)  # ValueError: another host, a NUL byte
    elif _SCHEME.match(entry):
        raise ValueError("only local paths, file:// and s3:// URIs can be listed")
    return source_text(os.path.abspath(os.path.join(folder, entry)))


def read_list(path: str) -> Iterator[str]:
    """The locations in the list file ``path`` (``list_location``), in file order, duplicates kept."""
    folder = os.path.dirname(os.path.abspath(path))
    number = 0
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for number, line in enumerate(f, 1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                try:
                    yield list_location(entry, folder)
                except ValueError as exc:
                    raise ConfigError(f"line {number} of {path}: {exc}. Received: {entry!r}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (line {number + 1}); "
                          "write a file:// URI for a file name that is not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read list {path!r}: {exc.strerror or exc}") from None


def scan_lists(folder: str) -> Tree:
    """{split: {class: [locations]}} of the list files in ``folder`` (DATA/lists), class names
    decoded from the file names; each location counted once, and in one class only."""
    splits = _list_splits(folder)
    if "" in splits and len(splits) > 1:
        raise ConfigError(f"{folder} has both <class>.txt lists and train/ or val/ lists; use one layout")
    tree: Tree = {}
    names = ClassNames("lists")
    owners: dict[str, tuple[str, str]] = {}  # location → (split, class)
    for split, files in splits.items():
        for path in files:
            name = names.decode(split, os.path.basename(path)[:-len(LIST_SUFFIX)])
            locations = tree.setdefault(split, {}).setdefault(name, [])
            for location in read_list(path):
                owner = owners.get(location)
                if owner is None:
                    owners[location] = (split, name)
                    locations.append(location)
                elif owner != (split, name):
                    raise ConfigError(_listed_twice(location, owner, (split, name)))
    return tree


def _listed_twice(location: str, first: tuple[str, str], second: tuple[str, str]) -> str:
    """The message for a location listed in two places (split, class)."""
    if first[1] == second[1]:
        return (f"{location} is listed for the class {first[1]!r} in both lists/train/ and lists/val/; "
                "an image can be in one split only")
    return (f"{location} is listed for two classes, {first[1]!r} and {second[1]!r}; "
            "an image can have one class only")


def dataset_tree(root: str) -> tuple[Tree, str]:
    """The tree of DATA (``scan`` or ``scan_lists``) and where its layout lives: '' for class
    folders, 'lists/' for lists (a local DATA folder whose lists/ holds ``*.txt`` files)."""
    folder = os.path.join(root, LISTS)
    if root.startswith("s3://") or not _list_splits(folder):
        return scan(root), ""
    folders = scan(root, skip=LISTS)
    if folders:
        classes = sorted({name for classes in folders.values() for name in classes})
        raise ConfigError(f"{root} has both class folders with images ({', '.join(classes[:5])}"
                          f"{', ...' if len(classes) > 5 else ''}) and lists in {LISTS}/; use one layout: "
                          "remove lists/ to train on the folders, or list their images and move them out")
    return scan_lists(folder), LISTS + "/"


def _labeled(classes: dict[str, list[str]], names: list[str]) -> LabeledFiles:
    locations, labels = [], []
    for index, name in enumerate(names):
        for location in sorted(classes.get(name, [])):
            locations.append(location)
            labels.append(index)
    return LabeledFiles(locations, labels, names)


def load_split(root: str, val_split: float, seed: int) -> tuple[LabeledFiles, LabeledFiles]:
    """(train, val) of DATA: its own train/ and val/ (folders or lists), else a seeded split
    stratified by class; classes are the sorted class names."""
    tree, where = dataset_tree(root)
    if "train" in tree:
        names = sorted(tree["train"])
        unknown = sorted(set(tree.get("val", {})) - set(names))
        if unknown:
            raise ConfigError(f"{where}val/ has classes that {where}train/ lacks: {', '.join(unknown)}")
        if "val" not in tree:
            raise ConfigError(f"{root} has {where}train/ but no {where}val/ (or {where}validation/)")
        train, val = _labeled(tree["train"], names), _labeled(tree["val"], names)
    elif "val" in tree and not tree.get(""):
        raise ConfigError(f"{root} has {where}val/ but no {where}train/")
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
        kind = "class lists" if where else "class folders with images"
        raise ConfigError(f"DATA needs at least 2 {kind}; found {names or 'none'} in {root}")
    empty = [n for n, c in train.counts().items() if c == 0]
    if empty:
        raise ConfigError(f"no training images for class(es): {', '.join(empty)}")
    if len(val) == 0:
        raise ConfigError(f"no validation images: add more images per class or a {where}val/ "
                          f"{'list' if where else 'folder'}")
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
                    sys.stderr.write(f"bulklabel: skipping {location}: {exc.reason}\n")  # one write: threads
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
