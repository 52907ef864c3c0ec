"""Property-based tests of worker.inference.decode: whatever the bytes, a picture or an ImageError.

Hypothesis feeds ``decode_image`` random bytes and damaged copies (bit flips, overwritten
integers, truncations, deletions, insertions, splices) of small valid files in every
supported format and many modes. Each input must give a uint8 array of the requested shape
or an ``ImageError`` with a readable reason — never another exception — and peak memory
stays bounded by ``max_pixels``. Through the engine, each input gives exactly one record.
"""

from __future__ import annotations

import ctypes
import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, features

from bulklabel.errors import ImageError
from bulklabel.options import EngineOptions
from worker.inference.decode import decode_image

MAX_PIXELS = 4_000_000
# A decode of P pixels holds a few bytes a pixel (8 at most for RGBA or CMYK, see
# test_decode.py; WebP's decoder 16), and damaged headers may claim up to MAX_PIXELS.
PEAK_LIMIT = 20 * MAX_PIXELS + (64 << 20)

SIZES = [(32, 32), (17, 40)]


# --------------------------------------------------------------------------- seeds


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files: every format, many modes and encoder options."""
    rng = np.random.default_rng(7)
    w, h = 24, 18
    rgb = np.clip(np.linspace(0, 255, w)[None, :, None] + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    alpha = np.linspace(0, 255, h).astype(np.uint8)[:, None].repeat(w, 1)
    ims = {
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
        "L": Image.fromarray(rgb[..., 0]),
        "LA": Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"),
        "1": Image.fromarray(rgb[..., 0] > 128),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "I": Image.fromarray(rgb[..., 0].astype(np.int32) * 300 - 1000),
        "F": Image.fromarray(rgb[..., 0].astype(np.float32) / 255),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {
        "jpeg rgb": _encode(ims["RGB"], "JPEG", quality=80),
        "jpeg gray": _encode(ims["L"], "JPEG"),
        "jpeg cmyk": _encode(ims["CMYK"], "JPEG"),
        "jpeg progressive exif": _encode(ims["RGB"], "JPEG", progressive=True, exif=exif.tobytes()),
        "jpeg 4:4:4 optimized": _encode(ims["RGB"], "JPEG", subsampling=0, optimize=True),
        "png rgb": _encode(ims["RGB"], "PNG"),
        "png rgba exif": _encode(ims["RGBA"], "PNG", exif=exif.tobytes()),
        "png gray": _encode(ims["L"], "PNG"),
        "png la": _encode(ims["LA"], "PNG"),
        "png 1-bit": _encode(ims["1"], "PNG"),
        "png palette": _encode(ims["P"], "PNG"),
        "png palette trns": _encode(ims["P"], "PNG", transparency=bytes(range(0, 256, 16))),
        "png 16-bit": _encode(ims["I;16"], "PNG"),
        "gif": _encode(ims["P"], "GIF"),
        "gif transparent": _encode(ims["P"], "GIF", transparency=2),
        "gif animated": _animated_gif(ims["P"]),
        "bmp rgb": _encode(ims["RGB"], "BMP"),
        "bmp palette": _encode(ims["P"], "BMP"),
        "bmp 1-bit": _encode(ims["1"], "BMP"),
        "bmp rle8": _bmp_rle8(w, h),
        "tiff rgb": _encode(ims["RGB"], "TIFF"),
        "tiff rgba lzw": _encode(ims["RGBA"], "TIFF", compression="tiff_lzw"),
        "tiff cmyk deflate": _encode(ims["CMYK"], "TIFF", compression="tiff_deflate"),
        "tiff 16-bit": _encode(ims["I;16"], "TIFF"),
        "tiff int32": _encode(ims["I"], "TIFF"),
        "tiff float": _encode(ims["F"], "TIFF"),
        "tiff 1-bit packbits": _encode(ims["1"], "TIFF", compression="packbits"),
        "tiff jpeg": _encode(ims["RGB"], "TIFF", compression="jpeg"),
        "tiff tiled": _encode(ims["L"], "TIFF", compression="tiff_deflate", tile=(16, 16)),
        "tiff lab": _encode(ims["RGB"].convert("LAB"), "TIFF"),
        "tiff ycbcr": _encode(ims["RGB"].convert("YCbCr"), "TIFF"),
        "tiff palette alpha": _encode(ims["P"].convert("PA"), "TIFF"),
        "tiff 16-bit big-endian": _encode(ims["I;16"].convert("I;16B"), "TIFF"),
        "mpo": _encode(ims["RGB"], "MPO", save_all=True, append_images=[ims["L"].convert("RGB")]),
    }
    if features.check("webp"):
        seeds["webp lossy"] = _encode(ims["RGB"], "WEBP", quality=60)
        seeds["webp lossless rgba"] = _encode(ims["RGBA"], "WEBP", lossless=True)
        seeds["webp exif"] = _encode(ims["RGB"], "WEBP", exif=exif.tobytes())
    return seeds


def _animated_gif(frame: Image.Image) -> bytes:
    buf = io.BytesIO()
    others = [frame.rotate(90), frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frame.save(buf, "GIF", save_all=True, append_images=others, duration=40, loop=0)
    return buf.getvalue()


def _bmp_rle8(w: int, h: int) -> bytes:
    """An 8-bit RLE-compressed BMP (Pillow reads these but does not write them)."""
    rows = b"".join(bytes([w, y % 4]) + b"\x00\x00" for y in range(h)) + b"\x00\x01"  # runs, end of line/bitmap
    palette = b"".join(bytes([b, g, r, 0]) for r, g, b in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)])
    palette += bytes(4 * 252)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


SEEDS = _seeds()
SEED_NAMES = sorted(SEEDS)
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF"]


def test_seeds_are_valid():
    """The unmutated seeds decode (so the mutations start from real files of each kind)."""
    for name, data in SEEDS.items():
        out = decode_image(data, (20, 30), max_pixels=MAX_PIXELS)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, name


# --------------------------------------------------------------------------- mutations

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def _mutation(draw):
    kind = draw(st.sampled_from(["flip", "byte", "int", "truncate", "delete", "insert", "splice", "repeat"]))
    pos = draw(st.integers(0, 1 << 16))
    if kind == "flip":
        return kind, pos, draw(st.integers(0, 7))
    if kind == "byte":
        return kind, pos, draw(st.integers(0, 255))
    if kind == "int":
        return kind, pos, (draw(st.sampled_from(INTERESTING)), draw(st.sampled_from([1, 2, 4])), draw(st.booleans()))
    if kind == "insert":
        return kind, pos, draw(st.binary(min_size=1, max_size=64))
    if kind == "splice":
        return kind, pos, (draw(st.sampled_from(SEED_NAMES)), draw(st.integers(0, 1 << 16)))
    return kind, pos, draw(st.integers(1, 256))  # truncate, delete, repeat


def _apply(data: bytes, mutation) -> bytes:
    kind, pos, arg = mutation
    buf = bytearray(data)
    if not buf:
        return bytes(buf)
    pos %= len(buf)
    if kind == "flip":
        buf[pos] ^= 1 << arg
    elif kind == "byte":
        buf[pos] = arg
    elif kind == "int":
        value, width, big = arg
        packed = (value & ((1 << 8 * width) - 1)).to_bytes(width, "big" if big else "little")
        buf[pos : pos + width] = packed
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "delete":
        del buf[pos : pos + arg]
    elif kind == "insert":
        buf[pos:pos] = arg
    elif kind == "splice":
        other = SEEDS[arg[0]]
        buf[pos:] = other[arg[1] % len(other) :]
    elif kind == "repeat":
        buf[pos:pos] = buf[pos : pos + arg]
    return bytes(buf)


@st.composite
def damaged_files(draw) -> bytes:
    data = SEEDS[draw(st.sampled_from(SEED_NAMES))]
    for mutation in draw(st.lists(_mutation(), min_size=1, max_size=4)):
        data = _apply(data, mutation)
    return data


random_files = st.one_of(
    st.binary(max_size=1024),
    st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=1024)),
)
any_input = st.one_of(damaged_files(), damaged_files(), random_files)  # mostly near-valid files


# --------------------------------------------------------------------------- memory


class PeakMemory:
    """Resident peak of a block of code, over what was resident before (Linux only).

    Memory freed earlier but kept by the allocator is resident already, and reused without
    showing up: it is handed back first (glibc's malloc_trim), so that it counts.
    """

    def __init__(self):
        self.supported = _writable("/proc/self/clear_refs")

    def __enter__(self):
        if self.supported:
            _trim()
            self.before = _status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        return self

    def __exit__(self, *exc):
        self.peak = _status("VmHWM") - self.before if self.supported else 0
        return False


def _trim() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _writable(path: str) -> bool:
    try:
        with open(path, "w"):
            return True
    except OSError:
        return False


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


# --------------------------------------------------------------------------- properties


def _check_decode(data: bytes, size: tuple[int, int], channels: int) -> str | None:
    """Decode ``data``: the reason it was refused, or None for a picture of the right shape."""
    with PeakMemory() as memory:
        try:
            out = decode_image(data, size, channels, max_pixels=MAX_PIXELS)
        except ImageError as exc:
            reason = exc.reason
            assert isinstance(reason, str) and reason.strip(), repr(reason)
            assert "\n" not in reason and len(reason) < 300, reason
            out = None
    assert memory.peak < PEAK_LIMIT, f"{memory.peak / 1e6:.0f} MB for {len(data)} bytes"
    if out is None:
        return reason
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.shape == (*size, channels)
    return None


@settings(max_examples=250, deadline=None, database=None)
@given(data=damaged_files(), size=st.sampled_from(SIZES), channels=st.sampled_from([3, 1]))
def test_damaged_files_give_pixels_or_image_error(data, size, channels):
    _check_decode(data, size, channels)


@settings(max_examples=120, deadline=None, database=None)
@given(data=random_files, size=st.sampled_from(SIZES), channels=st.sampled_from([3, 1]))
def test_random_bytes_give_pixels_or_image_error(data, size, channels):
    _check_decode(data, size, channels)


def test_peak_memory_is_measured():
    """PeakMemory sees an allocation made by Pillow (invisible to tracemalloc)."""
    memory = PeakMemory()
    if not memory.supported:
        pytest.skip("needs Linux's /proc/self/clear_refs")
    with memory:
        im = Image.new("RGBA", (2000, 2000), (1, 2, 3, 4))  # 16 MB, filled
        del im
    assert 15_000_000 <= memory.peak < 64_000_000


# --------------------------------------------------------------------------- through the engine


class _Bytes:
    """A SourceReader over an in-memory dict: source name → bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def read(self, location: str) -> bytes:
        return self.files[location]


@pytest.fixture(scope="module")
def engine(color_model):
    """One engine (one traced model) for every example; its reader's files change per example."""
    from worker.inference.engine import Engine
    from worker.inference.models import load_model

    options = EngineOptions(batch_size=4, decode_threads=2, io_threads=0, max_pixels=MAX_PIXELS)
    return Engine(load_model(color_model.keras_path), _Bytes({}), options)


@settings(max_examples=15, deadline=None, database=None)
@given(inputs=st.lists(any_input, min_size=1, max_size=8))
def test_engine_gives_one_record_per_input(engine, inputs):
    files = {f"in-{i}": data for i, data in enumerate(inputs)}
    engine.reader.files = files
    records: list[dict] = []
    engine.run(list(files), records.extend)
    assert [r["source"] for r in records] == list(files)
    size, channels = engine.model.input_size, engine.model.channels
    for record, data in zip(records, files.values()):
        expected = _check_decode(data, size, channels)
        if expected is None:
            assert record["error"] is None and record["label"] is not None, record
        else:  # the decoder's own reason, not the engine's fallback for a decoder bug
            assert record["error"] == expected and record["label"] is None, record
