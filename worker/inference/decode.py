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
* holds at most the picture as decoded and its 8-bit form: wide (16-bit, 32-bit, float),
  alpha and palette modes are converted a strip at a time, so a decode of P pixels peaks
  at about 8 bytes a pixel (RGBA, CMYK), 5 (LA, palette, 32-bit, float), 3 (16-bit gray);
* resizes with ``resize_image`` (bilinear with antialiasing, no crop: the whole picture is
  squeezed to the model's input, as Keras' ``image_dataset_from_directory`` does).

Every failure is an ``ImageError`` whose reason reads well in an error record.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from bulklabel.errors import ImageError
from bulklabel.settings import DEFAULT_MAX_PIXELS

RESIZE_METHOD = "bilinear"  # recorded in model metadata by the trainer

# Only these parsers see the bytes: Pillow's other plugins (EPS runs Ghostscript; PSD,
# FITS, ICO, ...) are refused as unsupported, whatever the file is called.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")  # JPEG includes MPO

# Our own limit (``max_pixels``) is checked against the header before decoding, so
# Pillow's process-wide guard is switched off in favour of it.
Image.MAX_IMAGE_PIXELS = None

# EXIF orientation → the transposition that shows the picture as a viewer would
# (``ImageOps.exif_transpose``'s table); 5 to 8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
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
    # A damaged file makes Pillow warn (EXIF, TIFF tags, truncation) as well as fail: the
    # failure becomes the record's reason, and the warnings would only flood the log.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _decode(data, size, channels, max_pixels)


def _decode(data: bytes, size: tuple[int, int], channels: int, max_pixels: int) -> np.ndarray:
    height, width = size
    try:
        im = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
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
    try:
        if jpeg:
            target = (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)
            im.draft("L" if channels == 1 and im.mode != "CMYK" else None, target)
            # All the bytes to libjpeg in one call: one release of the GIL per image, not one
            # per 64 KiB block (a thread decoding beside a busy Python thread, such as
            # TensorFlow's import, would otherwise wait for the GIL some 20 times a photo).
            im.decodermaxblock = max(im.decodermaxblock, len(data))
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
    try:
        im = _to_working_mode(im, channels)
        if orientation in _TRANSPOSE:  # on 8-bit pixels, before the resize, as a viewer shows it
            im = im.transpose(_TRANSPOSE[orientation])
        im = resize_image(im, (height, width))
        if channels != 1 and im.mode != "RGB":
            im = im.convert("RGB")  # a grayscale source, widened only now that it is small
    except Exception as exc:  # e.g. a mode Pillow cannot convert
        raise ImageError(f"cannot decode image ({_short(exc)})") from None
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def resize_image(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to ``size`` (h, w): the single resize definition shared by training and serving."""
    height, width = size
    if im.size == (width, height):
        return im
    return im.resize((width, height), Image.Resampling.BILINEAR)


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to 8-bit ``RGB`` or ``L`` (transparency composited on white)."""
    if im.mode == mode:
        return im
    return _convert(_to_working_mode(im, 1 if mode == "L" else 3), mode)


# --------------------------------------------------------------------------- memory-lean conversion
#
# A decoded picture is held once, in its own mode (1 to 4 bytes a pixel), and turned into
# 8 bits a channel strip by strip: the only full-size allocation is the 8-bit result (1 or 4
# bytes a pixel), never a wide integer, float, alpha or background copy. Grayscale sources
# stay one channel until after the resize. Every strip is converted exactly as the whole
# image would be, so the pixels are the same as converting in one piece.

_STRIP_PIXELS = 1 << 18  # 256 K pixels: at most a few MB of temporaries per strip
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_WIDE = (*_SIXTEEN_BIT, "I", "F")
_GRAY = ("1", "L", "LA", "La", *_WIDE)  # sources whose 8-bit form is one channel
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _to_working_mode(im: Image.Image, channels: int) -> Image.Image:
    """``im`` in 8-bit ``L`` (one-channel targets and grayscale sources) or ``RGB``."""
    mode = "L" if channels == 1 or im.mode in _GRAY else "RGB"
    if im.mode == mode:
        return im
    if im.mode in _WIDE:
        return _strips(im, mode, _wide_to_l(im))
    if im.mode in _ALPHA or (im.mode == "P" and "transparency" in im.info):
        return _strips(im, mode, _composite_on_white)
    return _strips(im, mode, _convert)


def _boxes(im: Image.Image):
    """Boxes of horizontal strips of about ``_STRIP_PIXELS`` covering ``im``."""
    width, height = im.size
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        yield (0, top, width, min(height, top + rows))


def _strips(im: Image.Image, mode: str, convert) -> Image.Image:
    """A new ``mode`` image made by ``convert(strip, mode)`` on horizontal strips of ``im``."""
    out = Image.new(mode, im.size)
    for box in _boxes(im):
        out.paste(_convert(convert(im.crop(box), mode), mode), box)
    return out


def _convert(im: Image.Image, mode: str) -> Image.Image:
    """Pillow's ``convert``, through ``RGB`` (``LA`` from ``La``) where it has no direct path
    (``LAB`` to ``L``, ``La`` to anything but ``LA``)."""
    if im.mode == mode:
        return im
    try:
        return im.convert(mode)
    except ValueError:
        via = "LA" if im.mode == "La" else "RGB"
        if im.mode == via:
            raise
        return _convert(im.convert(via), mode)


def _composite_on_white(strip: Image.Image, mode: str) -> Image.Image:
    rgba = _convert(strip, "RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def _wide_to_l(im: Image.Image):
    """A strip converter from 16/32-bit integer or float grayscale to ``L``.

    16-bit modes keep their top byte, however dark the picture; 32-bit ``I`` only shifts
    when its values go past 255; floats scale by 255 when they all lie in [0, 1] (NaN
    aside). Those decisions are made once, for the whole picture.
    """
    if im.mode in _SIXTEEN_BIT:
        return lambda strip, mode: Image.fromarray((np.asarray(strip) >> 8).astype(np.uint8), "L")
    peak = im.getextrema()[1]  # no copy; NaN if the first pixel is NaN, other NaNs are skipped
    if peak != peak:
        peak = np.nan  # fmax ignores NaN, so this ends NaN only if every value is
        for box in _boxes(im):
            peak = np.fmax(peak, np.fmax.reduce(np.asarray(im.crop(box)), axis=None))
    if im.mode == "F":
        scale = 255.0 if peak <= 1.0 else 1.0  # NaN everywhere: False, no scaling

        def floats(strip: Image.Image, mode: str) -> Image.Image:
            values = np.nan_to_num(np.asarray(strip)) * np.float32(scale)
            return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")

        return floats
    shift = 8 if peak > 255 else 0

    def integers(strip: Image.Image, mode: str) -> Image.Image:
        values = np.asarray(strip)
        if shift:
            values = np.clip(values, 0, 65535) >> shift
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")

    return integers


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        return None  # unreadable EXIF is not a reason to lose the picture
    return value if type(value) is int else None  # a damaged tag may hold any type


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_file(path: str, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode a local file (convenience for training and tools)."""
    with open(path, "rb") as f:
        return decode_image(f.read(), size, channels)
