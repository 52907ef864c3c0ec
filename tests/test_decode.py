"""Tests for worker.inference.decode: the single bytes → pixels path shared by training and serving.

Every image is made here, in memory (Pillow/numpy) or under tmp_path; real photo content
comes from skimage.data. TensorFlow and Keras are never imported.
"""

from __future__ import annotations

import gc
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, features

from bulklabel.errors import BulkLabelError, ImageError
from bulklabel.settings import DEFAULT_MAX_PIXELS
from worker.inference import decode
from worker.inference.decode import decode_image, load_file, resize_image, to_mode

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


# --------------------------------------------------------------------------- helpers


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference on the 0..255 scale."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def reference(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """What a correct decode of ``im`` to ``size`` (h, w) looks like."""
    h, w = size
    return np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))


def solid(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


def quadrants(width: int, height: int) -> Image.Image:
    """TL red, TR green, BL blue, BR yellow: any rotation or flip changes the layout."""
    arr = np.zeros((height, width, 3), np.uint8)
    hh, hw = height // 2, width // 2
    arr[:hh, :hw] = RED
    arr[:hh, hw:] = GREEN
    arr[hh:, :hw] = BLUE
    arr[hh:, hw:] = YELLOW
    return Image.fromarray(arr)


def quadrant_colors(arr: np.ndarray) -> list[tuple[int, int, int]]:
    """Colour at the centre of each quadrant: TL, TR, BL, BR."""
    h, w = arr.shape[:2]
    pts = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return [tuple(int(v) for v in arr[y, x]) for y, x in pts]


def assert_close_color(actual, expected, tol=12):
    assert all(abs(int(a) - int(e)) <= tol for a, e in zip(actual, expected)), (actual, expected)


def closest(color, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda k: sum((int(a) - b) ** 2 for a, b in zip(color, palette[k])))


def png_with_claimed_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim ``width`` x ``height`` (CRC fixed)."""
    raw = bytearray(encode(solid("1", (8, 8), 1), "PNG"))
    # signature (8) + chunk length (4) + b"IHDR" (4) → width at 16, height at 20.
    assert raw[12:16] == b"IHDR"
    raw[16:24] = struct.pack(">II", width, height)
    ihdr = bytes(raw[12:29])  # type + 13 data bytes
    raw[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(raw)


def gif_with_claimed_size(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen and first image descriptor claim ``width`` x ``height``."""
    raw = bytearray(encode(solid("P", (8, 8), 0), "GIF"))
    raw[6:10] = struct.pack("<HH", width, height)
    sep = raw.index(b"\x2c", 13)  # image descriptor: 0x2C, left, top, width, height
    raw[sep + 5 : sep + 9] = struct.pack("<HH", width, height)
    return bytes(raw)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """Real photo content (chelsea the cat, 451 x 300), reduced for speed."""
    from skimage import data as skdata  # imported here: the memory probe runs this file without it

    return Image.fromarray(skdata.chelsea()).resize((240, 160), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def big_photo() -> Image.Image:
    """A 4000 x 3000 (12 MP) picture made by upscaling a real photo."""
    from skimage import data as skdata

    return Image.fromarray(skdata.astronaut()).resize((4000, 3000), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def big_jpeg(big_photo) -> bytes:
    return encode(big_photo, "JPEG", quality=90)


@pytest.fixture
def resize_spy(monkeypatch):
    """Records the size of every image handed to resize_image (i.e. as decoded)."""
    seen: list[tuple[int, int]] = []
    real = decode.resize_image

    def spy(im, size):
        seen.append(im.size)
        return real(im, size)

    monkeypatch.setattr(decode, "resize_image", spy)
    return seen


@pytest.fixture
def draft_spy(monkeypatch):
    """Records each JPEG draft request and the image size it produced."""
    calls: list[dict] = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        before = self.size
        result = real(self, mode, size)
        calls.append({"mode": mode, "requested": size, "before": before, "after": self.size})
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


# --------------------------------------------------------------------------- 1. formats

FORMATS = [
    ("JPEG", {"quality": 95}, 6.0),
    ("PNG", {}, 1.0),
    ("BMP", {}, 1.0),
    ("TIFF", {}, 1.0),
    pytest.param(
        "WEBP",
        {"quality": 95},
        8.0,
        marks=pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP"),
    ),
]


@pytest.mark.parametrize(("fmt", "params", "tol"), FORMATS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("size", [(48, 80), (80, 48), (64, 64)], ids=["wide", "tall", "square"])
def test_format_decodes_to_requested_size(photo, fmt, params, tol, size):
    raw = encode(photo, fmt, **params)
    out = decode_image(raw, size)
    assert out.shape == (size[0], size[1], 3)
    assert out.dtype == np.uint8
    # The content is the photo, squeezed (not cropped, not transposed) to the size.
    assert mad(out, reference(photo, size)) < tol
    assert out.std() > 20  # a real picture, not a blank frame


def test_size_is_height_then_width(photo):
    out = decode_image(encode(quadrants(200, 100), "PNG"), (30, 70))
    assert out.shape == (30, 70, 3)
    assert quadrant_colors(out) == [RED, GREEN, BLUE, YELLOW]


def test_animated_gif_gives_first_frame():
    frames = [solid("RGB", (40, 30), c) for c in (RED, GREEN, BLUE)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    raw = buf.getvalue()
    with Image.open(io.BytesIO(raw)) as check:
        assert check.n_frames == 3  # really animated

    out = decode_image(raw, (20, 25))
    assert out.shape == (20, 25, 3) and out.dtype == np.uint8
    assert np.all(out == RED)


def test_animated_gif_first_frame_with_real_content(photo):
    first = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    second = ImageOps.invert(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=50)
    out = decode_image(buf.getvalue(), (80, 120))
    assert mad(out, reference(first, (80, 120))) < 3
    assert mad(out, reference(second, (80, 120))) > 40


# --------------------------------------------------------------------------- 2. modes


def test_grayscale_l_becomes_rgb():
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))  # 16 x 64
    out = decode_image(encode(Image.fromarray(ramp, "L"), "PNG"), (16, 64))
    assert out.shape == (16, 64, 3)
    assert np.array_equal(out[..., 0], ramp)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_fully_transparent_rgba_is_white():
    im = solid("RGBA", (32, 32), (0, 0, 0, 0))  # transparent *black*
    out = decode_image(encode(im, "PNG"), (16, 16))
    assert out.min() >= 250


def test_rgba_composited_on_white():
    arr = np.zeros((20, 40, 4), np.uint8)
    arr[:, :20] = (200, 0, 0, 255)  # opaque red-ish
    arr[:, 20:] = (0, 0, 255, 0)  # transparent blue → white
    arr[:10, :20, 3] = 128  # half-transparent red → pink
    out = decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"), (20, 40))
    assert tuple(out[15, 5]) == (200, 0, 0)
    assert tuple(out[5, 35]) == (255, 255, 255)
    assert_close_color(out[5, 5], (227, 127, 127), tol=2)  # 50 % over white


def test_la_composited_on_white():
    arr = np.zeros((10, 20, 2), np.uint8)
    arr[:, :10] = (60, 255)
    arr[:, 10:] = (0, 0)
    out = decode_image(encode(Image.fromarray(arr, "LA"), "PNG"), (10, 20))
    assert tuple(out[5, 2]) == (60, 60, 60)
    assert tuple(out[5, 17]) == (255, 255, 255)


def _palette_image(transparent_index: int | None) -> Image.Image:
    im = Image.new("P", (30, 20), 0)
    im.putpalette([*RED, *GREEN, *BLUE] + [0, 0, 0] * 253)
    px = np.zeros((20, 30), np.uint8)
    px[:, 10:20] = 1
    px[:, 20:] = 2
    im.putdata(px.ravel().tolist())
    if transparent_index is not None:
        im.info["transparency"] = transparent_index
    return im


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_palette_without_transparency(fmt):
    out = decode_image(encode(_palette_image(None), fmt), (20, 30))
    assert [tuple(out[10, x]) for x in (5, 15, 25)] == [RED, GREEN, BLUE]


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_is_white(fmt):
    im = _palette_image(transparent_index=1)  # green is transparent
    raw = encode(im, fmt, transparency=1)
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == "P" and "transparency" in check.info
    out = decode_image(raw, (20, 30))
    assert [tuple(out[10, x]) for x in (5, 15, 25)] == [RED, (255, 255, 255), BLUE]


def test_cmyk_jpeg():
    arr = np.zeros((20, 40, 4), np.uint8)
    arr[:, :20] = (0, 255, 255, 0)  # red
    arr[:, 20:] = (255, 255, 0, 0)  # blue
    raw = encode(Image.fromarray(arr, "CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == "CMYK"
    out = decode_image(raw, (20, 40))
    assert out.shape == (20, 40, 3)
    assert_close_color(out[10, 5], RED, tol=20)
    assert_close_color(out[10, 35], BLUE, tol=20)


def test_cmyk_jpeg_grayscale_channel():
    raw = encode(solid("CMYK", (16, 16), (0, 0, 0, 255)), "JPEG", quality=95)  # black ink
    out = decode_image(raw, (8, 8), channels=1)
    assert out.shape == (8, 8, 1)
    assert out.max() < 20


@pytest.mark.parametrize("channels", [3, 1])
def test_lab_tiff(channels):
    # Pillow converts LAB to RGB but not to L: the grayscale decode once escaped as a
    # ValueError (found by test_decode_properties.py) instead of going through RGB.
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = RED
    arr[:, 10:] = BLUE
    raw = encode(Image.fromarray(arr).convert("LAB"), "TIFF")
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == "LAB"
    out = decode_image(raw, (10, 20), channels=channels)
    assert out.shape == (10, 20, channels)
    if channels == 3:
        assert_close_color(out[5, 2], RED, tol=25)
        assert_close_color(out[5, 15], BLUE, tol=25)
    else:  # luma of red (76) and blue (29)
        assert abs(int(out[5, 2, 0]) - 76) <= 10 and abs(int(out[5, 15, 0]) - 29) <= 15


def test_premultiplied_la_converts():
    im = Image.new("La", (4, 4), (100, 128))  # premultiplied: 100 is ~199 at half opacity
    assert np.asarray(to_mode(im, "L")).tolist() == [[227] * 4] * 4  # 199 half over white
    assert to_mode(im, "RGB").getpixel((0, 0)) == (227, 227, 227)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit(fmt):
    arr = np.zeros((16, 32), bool)
    arr[:, 16:] = True
    out = decode_image(encode(Image.fromarray(arr), fmt), (16, 32))
    assert out.shape == (16, 32, 3)
    assert np.all(out[:, :16] == 0) and np.all(out[:, 16:] == 255)


def _sixteen_bit(values: np.ndarray, fmt: str) -> bytes:
    im = Image.fromarray(values.astype(np.uint16))
    assert im.mode == "I;16"
    raw = encode(im, fmt)
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode.startswith("I;16") or check.mode == "I", check.mode
    return raw


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grayscale_scaled_not_clipped(fmt):
    values = np.zeros((4, 40), np.uint16)
    values[0] = 65535
    values[1] = 32768
    values[2] = 4096
    values[3] = np.linspace(0, 65535, 40).astype(np.uint16)
    out = decode_image(_sixteen_bit(values, fmt), (4, 40))
    assert out.shape == (4, 40, 3)
    assert np.all(np.abs(out[0].astype(int) - 255) <= 1)
    assert np.all(np.abs(out[1].astype(int) - 128) <= 1)
    assert np.all(np.abs(out[2].astype(int) - 16) <= 1)
    ramp = out[3, :, 0].astype(int)
    assert np.all(np.diff(ramp) >= 0) and ramp[0] <= 1 and ramp[-1] >= 254
    assert np.count_nonzero(ramp == 255) <= 2  # not saturated


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_dark_sixteen_bit_stays_dark(fmt):
    # 200 / 65535 is nearly black: a 16-bit picture must not be read as 8-bit because
    # none of its values happens to pass 255.
    values = np.full((8, 8), 200, np.uint16)
    values[:, 4:] = 255
    out = decode_image(_sixteen_bit(values, fmt), (8, 8))
    assert out.max() <= 1


def test_float_mode_tiff():
    values = np.zeros((4, 10), np.float32)
    values[0] = 1.0
    values[1] = 0.5
    values[2] = 0.0
    values[3] = np.linspace(0, 1, 10)
    raw = encode(Image.fromarray(values, "F"), "TIFF")
    with Image.open(io.BytesIO(raw)) as check:
        assert check.mode == "F"
    out = decode_image(raw, (4, 10))
    assert out.shape == (4, 10, 3) and out.dtype == np.uint8
    assert np.all(out[0] >= 254)
    assert np.all(np.abs(out[1].astype(int) - 128) <= 1)
    assert np.all(out[2] == 0)
    assert np.all(np.diff(out[3, :, 0].astype(int)) > 0)


def test_to_mode_float_already_in_byte_range_is_not_rescaled():
    values = np.array([[0.0, 10.0, 100.0, 300.0]], np.float32)
    out = np.asarray(to_mode(Image.fromarray(values, "F"), "L"))
    assert out.tolist() == [[0, 10, 100, 255]]


def test_to_mode_same_mode_is_identity_and_converts_otherwise():
    rgb = solid("RGB", (4, 4), RED)
    assert to_mode(rgb, "RGB") is rgb
    gray = to_mode(rgb, "L")
    assert gray.mode == "L" and gray.getpixel((0, 0)) == 76  # ITU-R 601-2 luma of red


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_channels_one_returns_single_channel(photo, fmt):
    raw = encode(photo, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    out = decode_image(raw, (40, 60), channels=1)
    assert out.shape == (40, 60, 1) and out.dtype == np.uint8
    expected = np.asarray(photo.convert("L").resize((60, 40), Image.Resampling.BILINEAR))
    assert mad(out[..., 0], expected) < 4


def test_channels_one_of_pure_colours():
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = RED
    arr[:, 10:] = (255, 255, 255)
    out = decode_image(encode(Image.fromarray(arr), "PNG"), (10, 20), channels=1)
    assert out[5, 2, 0] == 76 and out[5, 17, 0] == 255


# --------------------------------------------------------------------------- 3. EXIF orientation


def _with_orientation(im: Image.Image, orientation: int, **params) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    params.setdefault("quality", 95)
    return encode(im, params.pop("format", "JPEG"), exif=exif.tobytes(), **params)


# Stored layout TL red, TR green, BL blue, BR yellow; what a viewer shows:
VIEWED = {
    1: [RED, GREEN, BLUE, YELLOW],
    3: [YELLOW, BLUE, GREEN, RED],  # rotated 180°
    6: [BLUE, RED, YELLOW, GREEN],  # rotated 90° clockwise
    8: [GREEN, YELLOW, RED, BLUE],  # rotated 90° anticlockwise
}
NAMES = {"red": RED, "green": GREEN, "blue": BLUE, "yellow": YELLOW}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    stored = quadrants(120, 60)  # wide as stored
    raw = _with_orientation(stored, orientation)

    # Ask for the viewer's aspect: tall for 6 and 8.
    size = (120, 60) if orientation in (6, 8) else (60, 120)
    out = decode_image(raw, size)
    assert out.shape == (*size, 3)

    got = [closest(c, NAMES) for c in quadrant_colors(out)]
    want = [closest(c, NAMES) for c in VIEWED[orientation]]
    assert got == want

    # Same as Pillow's own viewer transform of the file.
    with Image.open(io.BytesIO(raw)) as im:
        viewed = ImageOps.exif_transpose(im)
        assert (viewed.height, viewed.width) == size
        assert mad(out, np.asarray(viewed.convert("RGB"))) < 4


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_orientation_in_other_formats(fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    params = {"quality": 95} if fmt == "WEBP" else {}
    raw = _with_orientation(quadrants(120, 60), 6, format=fmt, **params)
    with Image.open(io.BytesIO(raw)) as check:
        assert check.getexif().get(0x0112) == 6
    out = decode_image(raw, (120, 60))
    assert [closest(c, NAMES) for c in quadrant_colors(out)] == [
        closest(c, NAMES) for c in VIEWED[6]
    ]


def test_exif_orientation_with_real_photo_and_resize(photo):
    raw = _with_orientation(photo, 6)  # photo is 240 x 160 as stored
    out = decode_image(raw, (90, 60))  # viewer sees it 160 wide x 240 tall
    with Image.open(io.BytesIO(raw)) as im:
        expected = reference(ImageOps.exif_transpose(im), (90, 60))
    assert mad(out, expected) < 6
    # Not the unrotated photo squeezed into the same box.
    assert mad(out, reference(photo, (90, 60))) > 20


def test_exif_orientation_with_draft_keeps_enough_pixels(big_photo, draft_spy, resize_spy):
    # Stored 2000 x 1000, orientation 6 → shown 1000 wide x 2000 tall; ask for 200 x 400 (w x h).
    stored = big_photo.resize((2000, 1000), Image.Resampling.BILINEAR)
    raw = _with_orientation(stored, 6, quality=85)
    out = decode_image(raw, (400, 200))
    assert out.shape == (400, 200, 3)
    # The draft request is expressed in stored coordinates: (w=400, h=200).
    assert draft_spy and draft_spy[0]["requested"] == (400, 200)
    # Decoded (after transposing) at least as large as the target, and 1/4 scale.
    (decoded,) = resize_spy
    assert decoded == (250, 500)


# --------------------------------------------------------------------------- 4. draft


def test_large_jpeg_is_reduced_while_decoding(big_jpeg, draft_spy, resize_spy):
    out = decode_image(big_jpeg, (224, 224))
    assert out.shape == (224, 224, 3)

    assert len(draft_spy) == 1
    call = draft_spy[0]
    assert call["before"] == (4000, 3000)
    assert call["requested"] == (224, 224)
    # libjpeg DCT scaling: 1/8 of 4000 x 3000, still >= 224 on both sides.
    assert call["after"] == (500, 375)
    (decoded,) = resize_spy
    assert decoded == (500, 375)
    assert decoded[0] * decoded[1] <= 4000 * 3000 // 32

    # Visually the same as decoding at full size and resizing.
    with Image.open(io.BytesIO(big_jpeg)) as full:
        full.load()
        assert full.size == (4000, 3000)
        expected = reference(full, (224, 224))
    assert mad(out, expected) < 8


def test_large_jpeg_grayscale_draft(big_jpeg, draft_spy, resize_spy):
    out = decode_image(big_jpeg, (100, 150), channels=1)
    assert out.shape == (100, 150, 1)
    assert draft_spy[0]["mode"] == "L"
    (decoded,) = resize_spy
    assert decoded[0] <= 1000 and decoded[1] <= 750
    assert decoded[0] >= 150 and decoded[1] >= 100


def test_mpo_jpeg_is_reduced_too(big_photo, draft_spy, resize_spy):
    # Many phone photos carry an MPF segment (a second, smaller picture): Pillow opens
    # them as MPO, a JPEG subclass, and they must be reduced the same way.
    buf = io.BytesIO()
    big_photo.save(buf, "MPO", save_all=True, append_images=[big_photo.resize((160, 120))])
    raw = buf.getvalue()
    with Image.open(io.BytesIO(raw)) as check:
        assert check.format == "MPO"
    out = decode_image(raw, (224, 224))
    assert out.shape == (224, 224, 3)
    assert draft_spy and resize_spy == [(500, 375)]
    assert mad(out, reference(big_photo, (224, 224))) < 8


def test_small_jpeg_is_not_reduced(photo, resize_spy):
    out = decode_image(encode(photo, "JPEG", quality=95), (150, 220))
    assert out.shape == (150, 220, 3)
    assert resize_spy == [(240, 160)]  # scaling would drop below the target


def test_png_is_not_drafted(photo, draft_spy, resize_spy):
    decode_image(encode(photo, "PNG"), (20, 30))
    assert draft_spy == []
    assert resize_spy == [(240, 160)]


# --------------------------------------------------------------------------- 5. errors


def _reason(data: bytes, size=(32, 32), **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, size, **kwargs)
    err = info.value
    assert isinstance(err.reason, str) and err.reason
    assert str(err) == err.reason
    assert "\n" not in err.reason and len(err.reason) < 300  # fits an error record
    return err.reason


def test_image_error_is_not_a_job_ending_error():
    assert not isinstance(ImageError("x"), BulkLabelError)


def test_empty_bytes():
    assert "empty" in _reason(b"")


@pytest.mark.parametrize(
    "payload",
    [
        np.random.default_rng(1234).bytes(4096),
        "This is a text file, not an image.\nLine two — ünïcødé.\n".encode() * 50,
        b"%PDF-1.7\n" + b"0" * 500,
    ],
    ids=["random", "text", "pdf"],
)
def test_not_an_image(payload):
    assert "not a decodable image" in _reason(payload)


def test_text_file_via_load_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("just words\n" * 20, encoding="utf-8")
    with pytest.raises(ImageError, match="not a decodable image"):
        load_file(str(path), (16, 16))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(photo, fmt):
    raw = encode(photo, fmt)
    reason = _reason(raw[: len(raw) // 2])
    assert "truncated" in reason or "corrupt" in reason
    # The full file is fine: it is the truncation that is reported.
    assert decode_image(raw, (32, 32)).shape == (32, 32, 3)


def test_corrupt_png_data(photo):
    raw = bytearray(encode(photo, "PNG"))
    start = raw.index(b"IDAT") + 4
    raw[start + 10 : start + 400] = b"\x00" * 390  # trash the zlib stream
    with Image.open(io.BytesIO(bytes(raw))) as check, pytest.raises(OSError):
        check.load()  # Pillow itself sees the damage...
    reason = _reason(bytes(raw))  # ...and it is reported, not turned into garbage pixels
    assert "truncated" in reason or "corrupt" in reason


@pytest.mark.parametrize("maker", [png_with_claimed_size, gif_with_claimed_size], ids=["png", "gif"])
def test_decompression_bomb_refused_from_header(maker, monkeypatch):
    raw = maker(20000, 20000)
    assert len(raw) < 1000
    with Image.open(io.BytesIO(raw)) as check:  # the header really claims 400 MP
        assert check.size == (20000, 20000)

    loads: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(
        ImageFile.ImageFile, "load", lambda self: (loads.append(self), real_load(self))[1]
    )
    Image.core.reset_stats()
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as info:
            decode_image(raw, (224, 224))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    reason = info.value.reason
    assert "too large" in reason
    assert "20000x20000" in reason and "400.0 MP" in reason
    assert f"{DEFAULT_MAX_PIXELS / 1e6:g} MP" in reason
    # Nothing of the claimed size was allocated: no pixel buffer at all.
    assert Image.core.get_stats()["new_count"] == 0
    assert loads == []
    assert peak < 50 * 1024 * 1024


def test_custom_max_pixels():
    raw = encode(solid("RGB", (100, 100), GREEN), "PNG")
    reason = _reason(raw, max_pixels=1000)
    assert "too large" in reason and "100x100" in reason
    # The limit is inclusive: exactly at it is fine.
    assert decode_image(raw, (8, 8), max_pixels=10_000).shape == (8, 8, 3)
    assert "too large" in _reason(raw, max_pixels=9_999)


def test_default_limit_lets_big_photos_through(monkeypatch):
    # 81 MP is under the default limit: it goes on to decoding (stopped here, so that
    # nothing that size is allocated) instead of being refused from the header.
    class Reached(Exception):
        pass

    def stop(self):
        raise Reached

    monkeypatch.setattr(ImageFile.ImageFile, "load", stop)
    with pytest.raises(ImageError) as info:
        decode_image(png_with_claimed_size(9000, 9000), (8, 8))
    assert "too large" not in info.value.reason
    assert "Reached" in info.value.reason


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "EPS", "SGI", "QOI", "DDS"])
def test_other_pillow_formats_are_refused(fmt):
    # Pillow can read these, but only the documented formats' parsers see untrusted bytes
    # (EPS would run Ghostscript), whatever the file is called.
    raw = encode(solid("RGB", (16, 16), RED), fmt)
    with Image.open(io.BytesIO(raw)) as check:
        assert check.format == fmt  # a real file of that format
    assert _reason(raw) == "not a decodable image (unrecognised or unsupported format)"


def test_damaged_file_warnings_stay_quiet(recwarn):
    # Truncated EXIF makes Pillow warn; the picture still decodes, and nothing reaches the
    # log (a bulk job of damaged files would otherwise print a warning per file).
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "a camera maker long enough to be stored out of line"
    raw = encode(solid("RGB", (16, 8), RED), "JPEG", exif=exif.tobytes()[:-10])
    with pytest.warns(UserWarning):
        with Image.open(io.BytesIO(raw)) as check:
            check.getexif()
    recwarn.clear()
    assert decode_image(raw, (8, 8)).shape == (8, 8, 3)
    assert [str(w.message) for w in recwarn] == []


# --------------------------------------------------------------------------- 6. resize_image


def test_resize_image_same_size_returns_same_object(photo):
    assert resize_image(photo, (160, 240)) is photo


@pytest.mark.parametrize("size", [(160, 239), (100, 50), (50, 100), (1, 1), (500, 700)])
def test_resize_image_exact_size(photo, size):
    out = resize_image(photo, size)
    assert out is not photo
    assert out.size == (size[1], size[0])  # Pillow's (width, height)
    assert out.mode == photo.mode
    assert photo.size == (240, 160)  # the input is left alone


def test_resize_image_is_bilinear_and_antialiased():
    # A 1-pixel checkerboard shrunk by 4 averages to mid-grey (no aliasing), as does
    # Pillow's bilinear reduction; nearest-neighbour would give pure black or white.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = np.asarray(resize_image(Image.fromarray(board, "L"), (16, 16)))
    assert np.all(np.abs(out.astype(int) - 128) <= 2)


# --------------------------------------------------------------------------- 7. load_file


def test_load_file_non_ascii_path_with_spaces(tmp_path, photo):
    path = tmp_path / "ünïcødé photo 1.jpg"
    photo.save(path, "JPEG", quality=95)
    out = load_file(str(path), (64, 96))
    assert out.shape == (64, 96, 3)
    assert mad(out, reference(photo, (64, 96))) < 6
    gray = load_file(str(path), (64, 96), channels=1)
    assert gray.shape == (64, 96, 1)


def test_load_file_same_as_decode_image(tmp_path, photo):
    path = tmp_path / "dossier été" / "chat n°2.png"
    path.parent.mkdir()
    photo.save(path, "PNG")
    assert np.array_equal(load_file(str(path), (33, 47)), decode_image(path.read_bytes(), (33, 47)))



# --------------------------------------------------------------------------- 8. memory per pixel
#
# Decoding a picture of P pixels may hold the picture as decoded (1 to 4 bytes a pixel in
# Pillow) and its 8-bit form (1 or 4), never wide integer, float, alpha or background
# copies of it. Peaks are measured as resident memory (Pillow's buffers are invisible to
# tracemalloc) in a fresh process that decodes a 16 MP picture of each worst mode in turn:
# the peak is reset before each decode (/proc/self/clear_refs) and read after (VmHWM).

MEMORY_SIDE = 4000  # 4000 x 4000 = 16 MP
MAX_BYTES_PER_PIXEL = 12  # measured at most 8.3 (RGBA, CMYK); 17 to 21 before strip conversion


def _png(width: int, height: int, depth: int, color_type: int, row: bytes, chunks: dict[bytes, bytes]) -> bytes:
    """A PNG whose rows all equal ``row``, fast to write (filter Up: all but the first row are zeros)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(1)
    up = b"\x02" + bytes(len(row))
    body = [z.compress(b"\x00" + row)]
    body += [z.compress(up * 64) for _ in range((height - 1) // 64)]
    body += [z.compress(up * ((height - 1) % 64)), z.flush()]
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    extra = b"".join(chunk(kind, body) for kind, body in chunks.items())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


def _memory_case(name: str, side: int = MEMORY_SIDE) -> bytes:
    """The encoded ``side`` x ``side`` picture for one memory case."""
    ramp = (np.arange(side) // 3 % 256).astype(np.uint8)
    rgba = np.stack([ramp, ramp ^ 0x55, ramp[::-1], ramp], axis=1)  # one row, alpha 0..255
    palette = bytes((np.arange(768) * 7 % 256).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    if name == "I TIFF":
        return encode(Image.fromarray(np.tile(ramp.astype(np.int32) * 257, (side, 1))), "TIFF")
    if name == "F TIFF":
        return encode(Image.fromarray(np.tile(ramp.astype(np.float32) / 255, (side, 1))), "TIFF")
    if name == "CMYK TIFF":
        return encode(Image.fromarray(np.tile(rgba, (side, 1, 1)), "CMYK"), "TIFF")
    pngs = {
        "1 PNG": (1, 0, np.packbits(ramp > 100).tobytes(), {}),
        "L PNG": (8, 0, ramp.tobytes(), {}),
        "LA PNG": (8, 4, rgba[:, [0, 3]].tobytes(), {}),
        "RGB PNG": (8, 2, rgba[:, :3].tobytes(), {}),
        "RGBA PNG": (8, 6, rgba.tobytes(), {}),
        "RGBA PNG, EXIF rotated": (8, 6, rgba.tobytes(), {b"eXIf": exif.tobytes()[6:]}),
        "P PNG": (8, 3, ramp.tobytes(), {b"PLTE": palette}),
        "P+tRNS PNG": (8, 3, ramp.tobytes(), {b"PLTE": palette, b"tRNS": bytes(range(256))[::-1]}),
        "I;16 PNG": (16, 0, ramp.astype(">u2").tobytes(), {}),
        "RGBA 16-bit PNG": (16, 6, (rgba.astype(">u2") * 257).tobytes(), {}),
    }
    depth, color_type, row, chunks = pngs[name]
    return _png(side, side, depth, color_type, row, chunks)


MEMORY_CASES = [
    # (case, mode as Pillow opens it, Pillow's bytes per pixel in that mode); before strip
    # conversion, in bytes per pixel: 5, 5, 20, 4, 20, 20, 9, 17, 19, 20, 21, 17, 8.
    ("1 PNG", "1", 1), ("L PNG", "L", 1), ("LA PNG", "LA", 4), ("RGB PNG", "RGB", 4),
    ("RGBA PNG", "RGBA", 4), ("RGBA PNG, EXIF rotated", "RGBA", 4), ("P PNG", "P", 1),
    ("P+tRNS PNG", "P", 1), ("I;16 PNG", "I;16", 2), ("RGBA 16-bit PNG", "RGBA", 4),
    ("I TIFF", "I", 4), ("F TIFF", "F", 4), ("CMYK TIFF", "CMYK", 4),
]


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _measure_peaks(names: list[str]) -> dict[str, dict]:
    """In this (fresh) process: the resident peak of decoding each case, over what was there before."""
    results = {}
    for name in names:
        data = _memory_case(name)
        with Image.open(io.BytesIO(data)) as check:
            mode, (width, height), orientation = check.mode, check.size, check.getexif().get(0x0112)
        gc.collect()
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        out = decode_image(data, (224, 224))
        peak = _status_bytes("VmHWM") - before
        assert out.shape == (224, 224, 3)
        results[name] = {"mode": mode, "orientation": orientation, "pixels": width * height, "peak": peak}
        del out, data
    return results


def _run_memory_probe(names: list[str]) -> dict[str, dict]:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident size")
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "MALLOC_MMAP_THRESHOLD_": "1048576"}  # big blocks go back at once
    done = subprocess.run([sys.executable, __file__, *names], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def memory_peaks() -> dict[str, dict]:
    return _run_memory_probe([name for name, _, _ in MEMORY_CASES])


@pytest.mark.parametrize(("name", "mode", "native"), MEMORY_CASES, ids=[c[0] for c in MEMORY_CASES])
def test_decode_memory_is_a_few_bytes_per_pixel(memory_peaks, name, mode, native):
    result = memory_peaks[name]
    assert result["mode"] == mode  # the case really is the mode it is named for
    assert result["orientation"] == (6 if "EXIF" in name else None)
    per_pixel = result["peak"] / result["pixels"]
    # The measurement sees the picture itself (so it measures something)...
    assert per_pixel >= 0.9 * native, result
    # ...and nothing wider than it and its 8-bit form.
    assert per_pixel <= MAX_BYTES_PER_PIXEL, f"{name}: {per_pixel:.1f} bytes per pixel"


# --------------------------------------------------------------------------- 9. strips


@pytest.mark.parametrize("mode", ["1", "LA", "RGBA", "P", "P+t", "I;16", "I", "F", "CMYK"])
@pytest.mark.parametrize("channels", [3, 1])
def test_strip_conversion_is_seamless(photo, monkeypatch, mode, channels):
    """Converting a few rows at a time gives the same pixels as converting in one piece."""
    photo = photo.crop((40, 20, 160, 100))  # 120 x 80
    gray = np.asarray(photo.convert("L"))
    alpha = np.linspace(0, 255, gray.shape[1]).astype(np.uint8)[None, :].repeat(gray.shape[0], 0)
    im, params = {
        "1": (Image.fromarray(gray > 100), {}),
        "LA": (Image.fromarray(np.dstack([gray, alpha]), "LA"), {}),
        "RGBA": (Image.fromarray(np.dstack([np.asarray(photo), alpha]), "RGBA"), {}),
        "P": (photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), {}),
        "P+t": (photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), {"transparency": 3}),
        "I;16": (Image.fromarray(gray.astype(np.uint16) * 250), {}),
        "I": (Image.fromarray(gray.astype(np.int32) * 250 - 3000), {}),
        "F": (Image.fromarray(gray.astype(np.float32) / 255), {}),
        "CMYK": (photo.convert("CMYK"), {}),
    }[mode]
    raw = encode(im, "TIFF" if mode in ("I", "F", "CMYK") else "PNG", **params)
    whole = decode_image(raw, (50, 70), channels)
    for rows in (7, 1):  # uneven strips, then one row a strip
        monkeypatch.setattr(decode, "_STRIP_PIXELS", rows * 120)
        assert np.array_equal(decode_image(raw, (50, 70), channels), whole)


@pytest.mark.parametrize("kind", ["F", "I"])
def test_wide_scaling_is_decided_for_the_whole_picture(monkeypatch, kind):
    # The top rows alone would be read as 0..1 floats (or 8-bit integers); the bottom rows
    # show the picture is not: every strip must be scaled alike, as in one piece.
    values = np.full((64, 16), 1.0 if kind == "F" else 200, np.float32 if kind == "F" else np.int32)
    values[48:] = 250.0 if kind == "F" else 60000
    raw = encode(Image.fromarray(values), "TIFF")
    monkeypatch.setattr(decode, "_STRIP_PIXELS", 16)  # one row a strip
    out = decode_image(raw, (64, 16), channels=1)[..., 0]
    if kind == "F":  # not scaled: 1.0 stays 1, 250.0 stays 250
        assert np.all(out[:48] == 1) and np.all(out[48:] == 250)
    else:  # shifted: 200 >> 8 == 0, 60000 >> 8 == 234
        assert np.all(out[:48] == 0) and np.all(out[48:] == 234)


def test_float_nan_and_infinity():
    values = np.zeros((8, 8), np.float32)
    values[:, :2] = np.nan
    values[:, 2:4] = np.inf
    values[:, 4:6] = -np.inf
    values[:, 6:] = 0.5
    out = decode_image(encode(Image.fromarray(values), "TIFF"), (8, 8), channels=1)[..., 0]
    # The largest value is infinite, so nothing is scaled: NaN → 0, ±inf clipped, 0.5 → 0.
    assert np.all(out[:, :2] == 0) and np.all(out[:, 2:4] == 255) and np.all(out[:, 4:] == 0)
    all_nan = np.full((4, 4), np.nan, np.float32)
    assert np.all(decode_image(encode(Image.fromarray(all_nan), "TIFF"), (4, 4)) == 0)
    # NaN aside, all in [0, 1]: scaled, wherever the NaN are (first pixel or not).
    for first in (0.5, np.nan):
        values = np.full((4, 4), 0.5, np.float32)
        values[0, 0], values[2, 2] = first, np.nan
        out = decode_image(encode(Image.fromarray(values), "TIFF"), (4, 4), channels=1)[..., 0]
        assert out[2, 2] == 0 and out[0, 0] == (127 if first == 0.5 else 0) and out[3, 3] == 127


if __name__ == "__main__":  # the memory probe: python tests/test_decode.py CASE...
    print(json.dumps(_measure_peaks(sys.argv[1:])))
