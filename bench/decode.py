"""Decode cost per image, per core: ``python -m bench.decode [--standard N] [--phone N] [--json OUT]``.

Runs the engine's own decoder (``worker.inference.decode.decode_image``: reduced-scale JPEG
decode through ``Image.draft``, EXIF orientation, one bilinear resize) on one thread over
the benchmark corpora, bytes already in memory, and reports CPU milliseconds per image
(``time.thread_time``: one core's work, whatever else the machine runs) for:

* ``jpeg``: the ``standard`` corpus's JPEGs (0.37-1.96 MP photos);
* ``png``: its PNGs (one in eight);
* ``jpeg_12mp``: the ``phone`` corpus (4000x3000 camera JPEGs);

at the input sizes of 224 and 299 models. For JPEGs, ``full`` is the same work without the
reduced-scale decode (Pillow decodes every pixel, then resizes): what a decoder without
DCT scaling pays. These are the figures ``worker.serving.plan`` turns into cores per GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from bench import corpus, save_json

SIZES = (224, 299)


def _full_decode(data: bytes, size: int):
    """Decode every pixel, then resize (no ``draft``): the reference without DCT scaling."""
    import io

    import numpy as np
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _cost(blobs: list[bytes], fn, size: int) -> dict:
    """CPU ms per image of ``fn(blob, size)`` on this thread: mean (what throughput pays) and p50."""
    fn(blobs[0], size)  # warm: imports, codec tables
    times = []
    for blob in blobs:
        t = time.thread_time()
        fn(blob, size)
        times.append((time.thread_time() - t) * 1e3)
    return {"images": len(blobs), "ms_mean": round(statistics.fmean(times), 3),
            "ms_p50": round(statistics.median(times), 3)}


def measure(root: str = corpus.DEFAULT_ROOT, standard: int = 600, phone: int = 20, full: bool = True) -> dict:
    """Decode costs by kind and model size (see the module's docstring)."""
    from PIL import Image

    from worker.inference.decode import decode_image

    def engine(blob: bytes, size: int):
        return decode_image(blob, (size, size))

    def read(paths: list[str]) -> list[bytes]:
        out = []
        for path in paths:
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    std = corpus.listing(corpus.build("standard", standard, root))
    kinds = {"jpeg": read([p for p in std if p.endswith(".jpg")]),
             "png": read([p for p in std if p.endswith(".png")])}
    if phone:
        kinds["jpeg_12mp"] = read(corpus.listing(corpus.build("phone", phone, root)))
    res: dict = {"measured": time.strftime("%Y-%m-%d"), "machine": machine(), "pillow": Image.__version__,
                 "kinds": {}}
    for kind, blobs in kinds.items():
        if not blobs:
            continue
        entry: dict = {"images": len(blobs), "mean_mp": round(statistics.fmean(_megapixels(b) for b in blobs), 2),
                       "mean_kb": round(statistics.fmean(len(b) for b in blobs) / 1024, 1)}
        for size in SIZES:
            entry[str(size)] = _cost(blobs, engine, size)
            if full and kind.startswith("jpeg"):
                entry[f"{size}_full"] = _cost(blobs, _full_decode, size)
        res["kinds"][kind] = entry
    return res


def _megapixels(blob: bytes) -> float:
    import io

    from PIL import Image

    w, h = Image.open(io.BytesIO(blob)).size
    return w * h / 1e6


def machine() -> str:
    """A short description of this machine's CPU."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def report(res: dict) -> str:
    lines = [f"Decode, one core, {res['machine']}, Pillow {res['pillow']}, {res['measured']}", "",
             "| kind | images | mean MP | ms/image at 224 | at 299 | without reduced-scale decode, 224 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, e in res["kinds"].items():
        full = e.get("224_full", {}).get("ms_mean")
        lines.append(f"| {kind} | {e['images']} | {e['mean_mp']} | {e['224']['ms_mean']} | {e['299']['ms_mean']} | "
                     f"{'-' if full is None else full} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--standard", type=int, default=600, help="standard corpus size (default 600)")
    ap.add_argument("--phone", type=int, default=20, help="12 MP photos to decode (default 20; 0: none)")
    ap.add_argument("--corpus-root", default=corpus.DEFAULT_ROOT)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    res = measure(args.corpus_root, args.standard, args.phone)
    save_json(res, args.json)
    print(report(res))


if __name__ == "__main__":
    main()
