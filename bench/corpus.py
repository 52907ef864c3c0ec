"""Benchmark corpora, generated from the photos scikit-image ships (cached in bench/corpus/).

* ``standard``: photos of 0.3-2 MP, JPEG with about one PNG in eight;
* ``phone``: 12 MP (4000x3000) camera-style JPEGs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from tools.photos import BASE_PHOTOS, Variant, base_photo, encode, make_variant

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(HERE, "corpus")


def _phone(base: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 4000x3000 landscape photo: cropped, jittered at base resolution, then upscaled."""
    small = make_variant(base, rng, Variant(min_side=800, max_side=1000, min_crop=0.7))
    big = small.resize((4000, 3000), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 3.0, (750, 1000, 1)).astype(np.float32)  # sensor grain, cheaply
    grain = np.repeat(np.repeat(grain, 4, axis=0), 4, axis=1)
    arr = np.clip(np.asarray(big, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def build(kind: str, count: int, root: str = DEFAULT_ROOT, seed: int = 0) -> str:
    """Create (once) ``count`` images of ``kind``; returns the folder."""
    folder = os.path.join(root, f"{kind}-{count}")
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    os.makedirs(folder, exist_ok=True)
    names = sorted(BASE_PHOTOS)
    bases = {n: base_photo(n) for n in names}

    def one(i: int) -> None:
        rng = np.random.default_rng(seed * 1_000_003 + i)
        base = bases[names[i % len(names)]]
        if kind == "phone":
            im, fmt, ext = _phone(base, rng), "JPEG", "jpg"
        else:
            side = int(rng.integers(700, 1401))  # long side: 0.37-1.96 MP whatever the aspect ratio
            im = make_variant(base, rng, Variant(min_side=side, max_side=side))
            fmt, ext = ("PNG", "png") if i % 8 == 7 else ("JPEG", "jpg")
        with open(os.path.join(folder, f"{kind}_{i:05d}.{ext}"), "wb") as f:
            f.write(encode(im, fmt, rng))

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(one, range(count)))
    open(marker, "w").close()
    return folder


def listing(folder: str, repeat: int = 1, limit: int | None = None) -> list[str]:
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if not n.startswith("."))
    files = files[:limit] if limit else files
    return files * repeat


def write_list(paths: list[str], path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(paths) + "\n")
    return path
