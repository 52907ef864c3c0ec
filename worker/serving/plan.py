"""The GPU node plan: how many CPU cores keep a GPU of a given speed fed (``bulklabel worker --plan``).

Labeling an image costs the GPU a share of a batch and the CPU its decode: reading the file,
entropy-decoding it (reduced-scale for JPEG, ``Image.draft``), EXIF orientation and one resize.
A GPU labeling ``R`` images/s therefore needs ``R × decode ms / 1000`` cores of decoding, at
the share of a core the decode threads really get (``DECODE_SHARE``), plus one core for the
process's own thread (batching, the model call, the writer). With fewer cores the GPU waits
for pixels ("wait" in ``--profile``), and no setting of the GPU side helps.

``MEASURED`` holds decode costs from ``python -m bench.decode`` (the engine's own decoder,
one thread, bytes in memory); ``plan`` takes them, or costs measured on the node itself.
Pure functions, no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_GPU_RATE = 3000.0  # images/s: a ResNet50-class model on a modern GPU, mixed precision, batch 128
DECODE_SHARE = 0.8          # of a core the decode threads get (the GIL-held part of each decode, reads, hand-offs)
MAIN_THREAD_CORES = 1       # the process's own thread: batches, the model call, the writer


@dataclass(frozen=True)
class DecodeCosts:
    """CPU milliseconds of one core per image, decoded to a 224 × 224 model input."""

    jpeg: float        # a typical photo JPEG of 0.4-2 MP (reduced-scale decode)
    jpeg_12mp: float   # a 4000 × 3000 camera JPEG (reduced-scale decode: entropy decoding remains)
    png: float         # a PNG photo of 0.4-2 MP (zlib inflate: no reduced-scale decode exists)
    source: str = ""   # where and when they were measured

    def mixes(self) -> dict[str, float]:
        """ms per image for the archives the plan shows: each kind alone, and a mixed archive."""
        return {"JPEG photos, 0.4-2 MP": self.jpeg, "camera JPEGs, 12 MP": self.jpeg_12mp,
                "PNG photos, 0.4-2 MP": self.png, "mixed: 7 JPEG to 1 PNG": (7 * self.jpeg + self.png) / 8}


# python -m bench.decode (standard corpus: 525 JPEGs of 0.91 MP on average, 75 PNGs; phone corpus: 20 12 MP JPEGs)
MEASURED = DecodeCosts(jpeg=4.4, jpeg_12mp=23.9, png=39.6,
                       source="measured 2026-11-23 on a 2-core Intel Xeon VM (AVX-512), Pillow 13.0, "
                              "python -m bench.decode")


def cores_per_gpu(gpu_rate: float, ms_per_image: float, share: float = DECODE_SHARE) -> float:
    """Cores that keep a GPU of ``gpu_rate`` images/s fed: its decoding plus the process's thread."""
    if gpu_rate <= 0 or ms_per_image <= 0:
        raise ValueError("the GPU rate and the decode cost must be positive")
    return gpu_rate * ms_per_image / 1000.0 / share + MAIN_THREAD_CORES


def fed_rate(cores: float, ms_per_image: float, share: float = DECODE_SHARE) -> float:
    """Images/s that ``cores`` cores decode for one GPU process (one core goes to its own thread)."""
    return max(0.0, cores - MAIN_THREAD_CORES) * share * 1000.0 / ms_per_image


@dataclass(frozen=True)
class PlanRow:
    archive: str
    ms_per_image: float
    cores_per_gpu: float       # needed at the plan's GPU rate
    images_per_core: float     # one core's decode rate
    fed_per_gpu: float | None  # what this host's cores per GPU decode (None: no host given)


@dataclass(frozen=True)
class Plan:
    gpu_rate: float
    rows: tuple[PlanRow, ...]
    costs: DecodeCosts
    host_cores: int | None = None
    host_gpus: int | None = None

    @property
    def cores_per_gpu_here(self) -> float | None:
        if not self.host_cores or not self.host_gpus:
            return None
        return self.host_cores / self.host_gpus


def plan(gpu_rate: float = DEFAULT_GPU_RATE, costs: DecodeCosts = MEASURED, cores: int | None = None,
         gpus: int | None = None) -> Plan:
    """The plan for a GPU of ``gpu_rate`` images/s; with ``cores`` and ``gpus`` (a node's), also
    what that node's cores per GPU can decode."""
    here = cores / gpus if cores and gpus else None
    rows = tuple(PlanRow(name, ms, cores_per_gpu(gpu_rate, ms), 1000.0 / ms,
                         None if here is None else fed_rate(here, ms))
                 for name, ms in costs.mixes().items())
    return Plan(gpu_rate, rows, costs, cores, gpus)


def render(p: Plan) -> str:
    """The plan as text (``bulklabel worker --plan``)."""
    lines = [f"GPU node plan: CPU cores to keep one GPU labeling {p.gpu_rate:,.0f} images/s fed",
             f"(decode costs {p.costs.source}; a core gives its decode threads about "
             f"{DECODE_SHARE:.0%}, and each GPU process keeps one core for batching, the model call and writing)",
             "",
             f"  {'archive':<26}{'decode ms/image':>16}{'images/s per core':>19}{'cores per GPU':>15}"]
    for r in p.rows:
        lines.append(f"  {r.archive:<26}{r.ms_per_image:>16.1f}{r.images_per_core:>19.0f}"
                     f"{math.ceil(r.cores_per_gpu):>15d}")
    here = p.cores_per_gpu_here
    if here is not None:
        lines += ["", f"This host: {p.host_cores} usable cores, {p.host_gpus} GPU process(es): "
                      f"{here:.1f} cores per GPU decode about"]
        for r in p.rows:
            busy = r.fed_per_gpu / p.gpu_rate
            verdict = "enough" if busy >= 1 else f"the GPU waits ({busy:.0%} busy)"
            lines.append(f"  {r.archive:<26}{r.fed_per_gpu:>10,.0f} images/s   {verdict}")
    lines += [
        "",
        "When cores are short the GPU waits for pixels (the 'wait' stage of --profile grows): bulklabel",
        "already decodes JPEGs at reduced scale (a 12 MP photo costs its entropy decoding, not a full",
        "decode), batches 128 images per call on a GPU, and --mixed-precision makes the GPU faster,",
        "which only moves more of the work onto the CPU. Then: run fewer GPU processes per node",
        "(--gpus 0,1), give the node more cores, or store smaller images (PNG and 12 MP cost most).",
        "",
        "A GPU node should set: --gpus auto (one process per GPU), --batch-size auto (128 on a GPU),",
        "--mixed-precision for keras:<Name> models on GPUs with tensor cores, --decode-threads at the",
        "cores per GPU above when several GPU processes share the node (default: every usable core in",
        "each), --io-threads for s3:// sources (default 128), and --chunk-size on submit at the default",
        "or larger (a chunk is a few seconds of one GPU's work).",
    ]
    return "\n".join(lines) + "\n"
