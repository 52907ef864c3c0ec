"""Real-looking photo variants made from the sample photos that scikit-image ships.

Each variant is a random crop of a base photo, scaled to a random size, possibly flipped
and slightly rotated, with brightness, contrast and colour jitter and sensor-like noise,
then encoded like a camera or a web export would (JPEG at a random quality, or PNG/WebP).
Used for the bundled sample, the tests and the benchmark corpora.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

# class name → scikit-image sample photo (all shipped inside the scikit-image wheel)
BASE_PHOTOS = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "galaxy": "hubble_deep_field",
    "microscopy": "immunohistochemistry",
}


def base_photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, BASE_PHOTOS.get(name, name))()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")


@dataclass
class Variant:
    min_side: int = 240
    max_side: int = 640
    min_crop: float = 0.55   # fraction of the base photo's side kept by the crop


def make_variant(base: Image.Image, rng: np.random.Generator, spec: Variant | None = None) -> Image.Image:
    spec = spec or Variant()
    w, h = base.size
    frac = rng.uniform(spec.min_crop, 1.0)
    cw, ch = int(w * frac * rng.uniform(0.85, 1.0)), int(h * frac * rng.uniform(0.85, 1.0))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = base.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.4:
        im = im.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR, expand=False)
    side = int(rng.integers(spec.min_side, spec.max_side + 1))
    scale = side / max(im.size)
    im = im.resize((max(8, round(im.size[0] * scale)), max(8, round(im.size[1] * scale))),
                   Image.Resampling.LANCZOS)
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.75, 1.25)))
    im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.75, 1.3)))
    im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.7, 1.3)))
    arr = np.asarray(im, dtype=np.float32)
    arr += rng.normal(0, rng.uniform(1.0, 5.0), arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(im: Image.Image, fmt: str, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=int(rng.integers(72, 96)))
    elif fmt == "WEBP":
        im.save(buf, "WEBP", quality=80)
    else:
        im.save(buf, fmt)
    return buf.getvalue()
