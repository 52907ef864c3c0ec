"""Thumbnails for the report: read, decode at reduced scale, shrink, embed as a data URI.

Made only for the few sources the page shows (the per-label samples and the lowest-confidence
records), in a thread pool, after the streaming pass. Every source is untrusted: files over
``MAX_BYTES`` are not read, only the common image formats are parsed (Pillow's other plugins,
EPS among them, never see the bytes), the pixel count is checked against the header before
anything is decoded, and a JPEG is decoded at a reduced scale (``Image.draft``). An image that
cannot be shown becomes a ``Thumb`` with a reason and no data, never an exception.
"""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import ImageError
from ...settings import DEFAULT_MAX_PIXELS

MAX_BYTES = 64 * 1024**2
MAX_PIXELS = DEFAULT_MAX_PIXELS
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
QUALITY = 70


@dataclass(frozen=True)
class Thumb:
    uri: str | None = None      # data:image/jpeg;base64,...
    width: int = 0
    height: int = 0
    reason: str | None = None   # why there is no thumbnail

    @property
    def ok(self) -> bool:
        return self.uri is not None


def _rgb(img: Image.Image) -> Image.Image:
    """``img`` as RGB, transparency over white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # deep greys: stretched to 8 bits
        img = img.convert("F") if img.mode != "F" else img
        lo, hi = img.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = img.point(lambda v: (v - lo) * scale).convert("L")
    return img if img.mode == "RGB" else img.convert("RGB")


def thumbnail(data: bytes, px: int) -> Thumb:
    """A JPEG thumbnail of ``data`` fitting ``px`` × ``px``; ImageError, OSError or ValueError if
    it cannot be made."""
    if len(data) > MAX_BYTES:
        raise ImageError(f"file too large for a preview ({len(data):,} bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError("not an image file this report can show") from None
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError("image has no pixels")
        if width * height > MAX_PIXELS:
            raise ImageError(f"too many pixels for a preview ({width:,} × {height:,})")
        img.draft("RGB", (px, px))
        img.thumbnail((px, px))
        img = ImageOps.exif_transpose(img)
        small = _rgb(img)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=QUALITY, optimize=True)
    uri = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return Thumb(uri, small.width, small.height)


def read_thumb(reader, source: str, px: int) -> Thumb:
    """The thumbnail of ``source``, or a Thumb with the reason it has none."""
    try:
        return thumbnail(reader.read(source), px)
    except (ImageError, OSError) as exc:
        return Thumb(reason=str(exc) or type(exc).__name__)
    except Exception as exc:  # a decoder's own error on hostile bytes: a placeholder, never a crash
        return Thumb(reason=f"cannot decode image ({type(exc).__name__}: {exc})")


def make_thumbs(sources, px: int, *, reader=None, threads: int = 8) -> dict[str, Thumb]:
    """Thumbnails of the distinct ``sources``, ``threads`` at a time."""
    if reader is None:
        from ...storage import open_reader

        reader = open_reader(max_bytes=MAX_BYTES)
    unique = list(dict.fromkeys(sources))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(unique))),
                            thread_name_prefix="report-thumb") as pool:
        return dict(zip(unique, pool.map(lambda s: read_thumb(reader, s, px), unique)))
