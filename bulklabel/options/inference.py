"""How to load a model, how to run the engine, how to set up TensorFlow: the inference options.

Shared by ``classify``, ``evaluate`` and ``worker`` (and, for the model options, ``train``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import settings
from ..settings import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_TOP_K, PREPROCESS_MODES
from .core import Option, setting

MODEL = Option(
    ("--model", "-m"), metavar="MODEL", required=True,
    help="a .keras/.h5 file, a SavedModel folder, or keras:<Name>")
LABELS = Option(
    ("--labels",), metavar="FILE",
    help="class names, one per line in output order (default: from the model's metadata)")
PREPROCESS = Option(
    ("--preprocess",), choices=PREPROCESS_MODES, parse=settings.choice(PREPROCESS_MODES),
    help="pixel scaling the model expects (default: from the model's metadata, else none = raw "
         "0-255; rescale = /255; tf = [-1,1]; caffe, torch as in keras.applications)")
WEIGHTS = Option(
    ("--weights",), metavar="imagenet|none|FILE", parse=settings.weights,
    help="weights of a keras:<Name> model (or train's application base): ImageNet, downloaded by "
         "Keras on first use (default); none = random weights; or a weights FILE, offline")
IMAGE_SIZE = Option(
    ("--image-size",), metavar="N", parse=settings.parse_image_size,
    help="input size N or HxW, for models that accept any size")
UNSAFE_MODEL = Option(
    ("--unsafe-model",), switch=True, default=False, parse=settings.boolean,
    help="allow models with Lambda layers or file/Python ops (only for files you trust)")

BATCH_SIZE = Option(
    ("--batch-size",), metavar="N", default="auto", parse=settings.auto_or_positive,
    help="images per model call (default auto: 128 on a GPU, 32 on CPU)")
TOP_K = Option(
    ("--top-k",), metavar="K", default=str(DEFAULT_TOP_K), parse=settings.positive_int,
    help=f"labels kept per image, best first (default {DEFAULT_TOP_K})")
DECODE_THREADS = Option(
    ("--decode-threads",), metavar="N", default="0", parse=settings.non_negative_int,
    help="threads reading and decoding images (default 0: one per usable core)")
DECODE_PRIORITY = Option(
    ("--decode-priority",), metavar="P", default="auto", choices=("auto", "low", "normal"),
    help="CPU priority of the decode threads: auto (default: low while the model is the "
         "bottleneck, so its threads win the cores; normal while it waits for images), low or normal")
IO_THREADS = Option(
    ("--io-threads",), metavar="N", default="0", parse=settings.non_negative_int,
    help="reads in flight (default: 128 for s3:// images, none for local files, which are read "
         "by the decode threads); the S3 connection pool matches it")
MAX_PIXELS = Option(
    ("--max-pixels",), metavar="N", default=str(DEFAULT_MAX_PIXELS), parse=settings.positive_int,
    help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS}), "
         "checked before decoding")
MAX_BYTES = Option(
    ("--max-bytes",), metavar="SIZE", default=str(DEFAULT_MAX_BYTES), parse=settings.byte_size,
    help="refuse image files and objects larger than this (default 256M), checked from their size "
         "before reading; never more is read")

TF_THREADS = Option(
    ("--tf-threads", "--threads"), metavar="N", parse=settings.optional_positive,
    help="bound TensorFlow's CPU threads for the model (default: TensorFlow decides); "
         "not the decode threads")
MIXED_PRECISION = Option(
    ("--mixed-precision",), switch=True, default=False, parse=settings.boolean,
    help="float16 compute with float32 scores, for keras:<Name> models on GPUs with tensor cores")


@dataclass(frozen=True)
class ModelOptions:
    """How to read and serve a model, beyond what the model file says (flags win)."""

    labels: str | None = setting(LABELS)
    preprocess: str | None = setting(PREPROCESS)
    weights: str | None = setting(WEIGHTS)
    image_size: tuple[int, int] | None = setting(IMAGE_SIZE)
    unsafe: bool = setting(UNSAFE_MODEL)

    def __post_init__(self) -> None:  # a size that went through JSON comes back as a list
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(self.image_size))


@dataclass(frozen=True)
class EngineOptions:
    batch_size: int = setting(BATCH_SIZE)          # 0: chosen for the device
    top_k: int = setting(TOP_K)
    decode_threads: int = setting(DECODE_THREADS)  # 0: one per usable core
    decode_priority: str = setting(DECODE_PRIORITY)  # auto | low (niceness +10) | normal
    io_threads: int = setting(IO_THREADS)          # 0: as the reader advises
    max_pixels: int = setting(MAX_PIXELS)
    max_bytes: int = setting(MAX_BYTES)


@dataclass(frozen=True)
class RuntimeOptions:
    """Process-wide TensorFlow settings: applied once, before the first model loads."""

    tf_threads: int | None = setting(TF_THREADS)
    mixed_precision: bool = setting(MIXED_PRECISION)
