"""Bytes → fixed-size RGB (or grayscale) uint8 pixels: the one decode path.

``decode_image`` is used by the classification engine *and* by the trainer's input
pipeline, so a model is served exactly the pixels it was trained on. It:

* accepts JPEG, PNG, GIF (first frame), BMP, TIFF and WebP, in any mode (grayscale,
  RGBA/LA/palette with transparency composited on white, CMYK, 16-bit);
* applies the EXIF orientation;
* reduces large JPEGs while decoding (libjpeg DCT scaling through ``Image.draft``), so a
  12 MP photo is never decoded at full size just to be shrunk to 224 × 224;
* checks the pixel count from the header *before* allocating anything, so a
  decompression bomb costs nothing;
* resizes with ``resize_image`` (bilinear with antialiasing, no crop: the whole picture is
  squeezed to the model's input, as Keras' ``image_dataset_from_directory`` does).

Every failure is an ``ImageError`` whose reason reads well in an error record.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bulklabel.errors import ImageError
from bulklabel.settings import DEFAULT_MAX_PIXELS

RESIZE_METHOD = "bilinear"  # recorded in model metadata by the trainer

# Our own limit (``max_pixels``) is checked against the header before decoding, so
# Pillow's process-wide guard is switched off in favour of it.
Image.MAX_IMAGE_PIXELS = None

_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


def decode_image(
    data: bytes,
    size: tuple[int, int],
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode ``data`` to a ``(height, width, channels)`` uint8 array of ``size`` (h, w)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    height, width = size
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not a decodable image (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - guard disabled above
        raise ImageError(f"image too large: {exc}") from None
    except Exception as exc:
        text = _short(exc)
        if "truncat" in text.lower():
            raise ImageError(f"truncated or corrupt image data ({text})") from None
        raise ImageError(f"not a decodable image ({text})") from None

    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP is over the limit of "
            f"{max_pixels / 1e6:g} MP (raise it with --max-pixels)"
        )

    # A JPEG's EXIF is read at open, so its orientation can steer the draft. Other formats
    # may decode the whole image to find EXIF (PNG's getexif() calls load()), which must
    # happen inside the error handling below: their orientation is read after the load.
    jpeg = im.format in ("JPEG", "MPO")  # MPO: phone JPEGs with an MPF segment
    orientation = _orientation(im) if jpeg else None
    if jpeg:
        target = (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)
        im.draft("L" if channels == 1 and im.mode != "CMYK" else None, target)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.load()
    except OSError as exc:
        text = _short(exc)
        if "truncated" in text or "broken data stream" in text or "premature end" in text:
            raise ImageError(f"truncated or corrupt image data ({text})") from None
        raise ImageError(f"cannot decode image ({text})") from None
    except Exception as exc:
        raise ImageError(f"cannot decode image ({_short(exc)})") from None

    if not jpeg:
        orientation = _orientation(im)
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
    im = to_mode(im, "L" if channels == 1 else "RGB")
    im = resize_image(im, (height, width))
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def resize_image(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size`` (h, w): the single resize definition shared by training and serving."""
    height, width = size
    if im.size == (width, height):
        return im
    return im.resize((width, height), Image.Resampling.BILINEAR)


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit ``RGB`` or ``L``."""
    if im.mode == mode:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = Image.fromarray(_to_uint8(np.asarray(im), im.mode.startswith("I;16")), "L")
    elif im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert(mode)


def _to_uint8(arr: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """High-bit-depth grayscale to 8 bits: 16-bit ranges shift, floats in [0, 1] scale.

    ``sixteen_bit`` (an ``I;16*`` mode) always shifts, however dark the picture; plain
    32-bit ``I`` data only shifts when its values go past 255.
    """
    if arr.dtype.kind == "f":
        hi = float(np.nanmax(arr)) if arr.size else 0.0
        arr = np.nan_to_num(arr) * (255.0 if hi <= 1.0 else 1.0)
        return np.clip(arr, 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    if arr.size and (sixteen_bit or arr.max() > 255):
        arr = np.clip(arr, 0, 65535) >> 8
    return np.clip(arr, 0, 255).astype(np.uint8)


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:
        return None  # unreadable EXIF is not a reason to lose the picture


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_file(path: str, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode a local file (convenience for training and tools)."""
    with open(path, "rb") as f:
        return decode_image(f.read(), size, channels)
