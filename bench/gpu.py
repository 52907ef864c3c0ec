"""GPU throughput: ``bulklabel classify`` against the bound on one GPU: ``python -m bench.gpu [--json OUT]``.

On a host with an NVIDIA GPU (``nvidia-smi`` lists one), for each model, batch size and
precision (float32, ``--mixed-precision``):

* ``bound`` — bulklabel's own model call (``worker.inference.predictor.Predictor``: the traced
  call on TensorFlow, ``jax.jit`` on JAX, inference mode on PyTorch) on uint8 batches already
  in memory: no read, no decode. What this GPU does with this model and framework;
* ``classify`` — ``bulklabel classify @list --model keras:NAME --weights none`` over the
  standard corpus's JPEGs (and the whole corpus, one PNG in eight) repeated to ``--images``:
  read, decode on the CPU cores, batch, predict, write; with its stage timings.

It also measures this host's decode costs (``bench.decode``) and prints the GPU node plan
(``worker.serving.plan``) for the bound it found. Without a GPU the result is
``{"skipped": "no GPU"}``: the section never fails for lack of one. Each run is its own
process; the Keras backend is the environment's (``KERAS_BACKEND``; TensorFlow by default).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import corpus, save_json

PY = sys.executable
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}, "TF_CPP_MIN_LOG_LEVEL": "3",
       "PYTHONUNBUFFERED": "1"}


def gpu_name() -> str | None:
    """The first GPU's name and memory, or None when this host has none."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else None


def bound(model: str, batch: int, mixed: bool, images: int) -> dict:
    """In this process: ``images`` uint8 images through bulklabel's model call, ``batch`` at a time."""
    import numpy as np

    from bulklabel.options import ModelOptions, RuntimeOptions
    from worker.inference import runtime
    from worker.inference.models import load_model
    from worker.inference.predictor import Predictor

    runtime.configure(RuntimeOptions(mixed_precision=mixed))
    loaded = load_model(f"keras:{model}", ModelOptions(weights="none"))
    predictor = Predictor(loaded, batch)
    data = np.random.default_rng(0).integers(0, 256, predictor.shape, dtype=np.uint8)
    for _ in range(3):
        predictor.predict(data)  # warm-up: tracing, cuDNN autotuning, memory pools
    calls = max(3, images // batch)
    start = time.perf_counter()
    for _ in range(calls):
        predictor.predict(data)  # returns host scores: the device work is finished
    seconds = time.perf_counter() - start
    import keras

    return {"images": calls * batch, "seconds": round(seconds, 3),
            "images_per_second": round(calls * batch / seconds, 1), "backend": keras.backend.backend()}


def _bound_process(model: str, batch: int, mixed: bool, images: int) -> dict:
    r = subprocess.run([PY, "-m", "bench.gpu", "--bound", model, str(batch), str(int(mixed)), str(images)],
                       env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _classify(model: str, batch: int, mixed: bool, listing: str, work: str) -> dict:
    out, summary = os.path.join(work, "out.jsonl"), os.path.join(work, "summary.json")
    cmd = [PY, "-m", "bulklabel", "classify", f"@{listing}", "--model", f"keras:{model}", "--weights", "none",
           "--out", out, "--batch-size", str(batch), "--no-progress", "--summary-json", summary]
    if mixed:
        cmd.append("--mixed-precision")
    start = time.perf_counter()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    with open(summary) as f:
        s = json.load(f)
    os.remove(out)
    return {"images": s["images"], "errors": s["errors"], "seconds": s["seconds"],
            "images_per_second": s["images_per_second"], "stages": s["stages"],
            "process_seconds": round(time.perf_counter() - start, 2)}


def measure(models: list[str], batch_sizes: list[int], images: int, root: str = corpus.DEFAULT_ROOT,
            decode: bool = True) -> dict:
    """The whole section; ``{"skipped": ...}`` without a GPU."""
    name = gpu_name()
    if name is None:
        return {"skipped": "no GPU"}
    from bench import decode as decode_bench
    from worker.inference.engine import usable_cores
    from worker.serving import plan

    res: dict = {"gpu": name, "cores": usable_cores(), "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
                 "bound": [], "classify": []}
    work = tempfile.mkdtemp(prefix="bulklabel-gpu-")
    try:
        std = corpus.listing(corpus.build("standard", 600, root))
        jpegs = [p for p in std if p.endswith(".jpg")]
        lists = {"jpeg": corpus.write_list((jpegs * (images // len(jpegs) + 1))[:images],
                                           os.path.join(work, "jpeg.txt")),
                 "mixed": corpus.write_list((std * (images // len(std) + 1))[:images], os.path.join(work, "mixed.txt"))}
        for model in models:
            for mixed in (False, True):
                for batch in batch_sizes:
                    row = {"model": model, "batch": batch, "mixed_precision": mixed,
                           **_bound_process(model, batch, mixed, images)}
                    res["bound"].append(row)
                    print(f"  bound {model} batch {batch}{' mixed' if mixed else ''}: "
                          f"{row.get('images_per_second', row.get('error', '')[-200:])}", file=sys.stderr)
                for kind in ("jpeg", "mixed"):
                    for batch in batch_sizes if kind == "jpeg" else [max(batch_sizes)]:
                        row = {"model": model, "batch": batch, "mixed_precision": mixed, "corpus": kind,
                               **_classify(model, batch, mixed, lists[kind], work)}
                        res["classify"].append(row)
                        print(f"  classify {model} {kind} batch {batch}{' mixed' if mixed else ''}: "
                              f"{row.get('images_per_second', row.get('error', '')[-200:])}", file=sys.stderr)
        if decode:
            costs = decode_bench.measure(root, 600, 20, full=False)
            res["decode"] = costs
            k = costs["kinds"]
            here = plan.DecodeCosts(jpeg=k["jpeg"]["224"]["ms_mean"], jpeg_12mp=k["jpeg_12mp"]["224"]["ms_mean"],
                                    png=k["png"]["224"]["ms_mean"],
                                    source=f"measured on this host ({costs['machine']})")
            best = max((b["images_per_second"] for b in res["bound"] if "images_per_second" in b), default=None)
            if best:
                res["plan"] = plan.render(plan.plan(best, here, cores=res["cores"], gpus=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def summary(res: dict) -> dict:
    """Best bound and best classify (JPEG corpus) per model, and their ratio."""
    out = {}
    for model in sorted({b["model"] for b in res.get("bound", [])}):
        bounds = [b for b in res["bound"] if b["model"] == model and "images_per_second" in b]
        runs = [c for c in res["classify"] if c["model"] == model and c.get("corpus") == "jpeg"
                and "images_per_second" in c]
        if bounds and runs:
            b, c = max(bounds, key=lambda r: r["images_per_second"]), max(runs, key=lambda r: r["images_per_second"])
            out[model] = {"bound": b["images_per_second"], "bound_batch": b["batch"],
                          "bound_mixed": b["mixed_precision"], "classify": c["images_per_second"],
                          "classify_batch": c["batch"], "classify_mixed": c["mixed_precision"],
                          "ratio": round(c["images_per_second"] / b["images_per_second"], 3)}
    return out


def report(res: dict) -> str:
    if "skipped" in res:
        return f"GPU: skipped ({res['skipped']})\n"
    lines = [f"GPU: {res['gpu']}, {res['cores']} usable cores, Keras backend {res['backend']}", "",
             "| model | batch | precision | bound images/s | classify JPEG images/s | ratio |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for b in res["bound"]:
        c = next((c for c in res["classify"] if c.get("corpus") == "jpeg" and
                  (c["model"], c["batch"], c["mixed_precision"]) == (b["model"], b["batch"], b["mixed_precision"])),
                 {})
        bi, ci = b.get("images_per_second"), c.get("images_per_second")
        lines.append(f"| {b['model']} | {b['batch']} | {'mixed' if b['mixed_precision'] else 'float32'} | "
                     f"{bi or 'error'} | {ci or '-'} | {f'{ci / bi:.2f}' if bi and ci else '-'} |")
    for c in res["classify"]:
        if c.get("corpus") == "mixed":
            lines.append(f"\nWhole corpus (one PNG in eight), {c['model']} batch {c['batch']}"
                         f"{' mixed' if c['mixed_precision'] else ''}: {c.get('images_per_second', 'error')} images/s; "
                         f"stages {c.get('stages')}")
    if res.get("plan"):
        lines += ["", res["plan"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--bound"]:  # one bound run, in its own process (see _bound_process)
        model, batch, mixed, images = argv[1], int(argv[2]), argv[3] == "1", int(argv[4])
        print(json.dumps(bound(model, batch, mixed, images)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ResNet50", help="keras.applications names (default ResNet50)")
    ap.add_argument("--batch-sizes", default="64,128,256")
    ap.add_argument("--images", type=int, default=12_000, help="images per run")
    ap.add_argument("--corpus-root", default=corpus.DEFAULT_ROOT)
    ap.add_argument("--no-decode", action="store_true", help="skip this host's decode costs and plan")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    res = measure(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")], args.images,
                  args.corpus_root, decode=not args.no_decode)
    res["summary"] = summary(res) if "skipped" not in res else {}
    save_json(res, args.json)
    print(report(res))


if __name__ == "__main__":
    main()
