"""Review at scale: ``python -m bench.review [--records N ...] [--json OUT]``.

``bulklabel export`` and ``bulklabel report`` on synthetic results files of N records, each
command in its own process (wall seconds, and peak RSS from the kernel: ``wait4``):

* the records: ``LABELS`` ImageNet-like classes (``class_0001`` ...) drawn with a skew, top-1
  scores from a seeded Beta(1.5, 1) (about 9 % below 0.2), a top 5 whose scores fall below the
  top-1, 1 % error records; every source a distinct path to one of ``IMAGES`` real JPEGs made
  with Pillow (distinct folders are symbolic links to one), so thumbnails are real reads and
  decodes. The smaller files are the first lines of the largest.
* ``export RESULTS --review-below 0.2 --sample 1000 --out tasks.json`` against the PEER: the
  script teams write today (``peer`` below: every line ``json.loads``-ed into a list, the
  doubtful ones sorted, ``random.sample`` of the rest, the same Label Studio task dicts,
  ``json.dump``). Both outputs are read back (in another process) to check they hold the same
  doubtful tasks in the same order and an audit sample of the right size.
* ``report RESULTS --out report.html``: seconds, peak RSS, HTML bytes, thumbnails.

The harness itself imports only the standard library and never holds records, so that what
a child inherits from it (Linux carries the parent's peak RSS into a child started by vfork)
stays small: its own peak is reported as ``harness_peak_rss_mib``. Prints one JSON line;
``measure`` returns the same dict.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

from bench import save_json

BELOW = 0.2
SAMPLE = 1000
LABELS = 1000
IMAGES = 60
TOP_K = 5
ERROR_RATE = 0.01
MODEL = "mobilenet_v2@5c1e0a7d93b2"
SEED = 20261124
SIZES = (100_000, 1_000_000)
QUICK_SIZES = (5_000, 20_000)
REASONS = ("cannot decode image: image file is truncated", "not an image file (unidentified format)",
           "file too large: 80530637 bytes is over the limit of 67108864 bytes")
LOCAL_FILES = "/data/local-files/?d="


# The data: real JPEGs behind many distinct paths, and records that point at them.

def make_images(folder: str, n: int = IMAGES, seed: int = SEED) -> list[str]:
    """``n`` small photo-like JPEGs (gradients, shapes, noise), 320×240 to 480×360."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = []
    for i in range(n):
        w, h = int(rng.integers(320, 481)), int(rng.integers(240, 361))
        base = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 121, 3)
        fall = np.linspace(0, 1, h)[:, None, None] * rng.integers(-120, 121, 3)
        pixels = base + ramp + fall + rng.normal(0, 12, (h, w, 3))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(10, 80))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        names.append(f"img_{i:02d}.jpg")
        img.save(os.path.join(folder, names[-1]), "JPEG", quality=85)
    return names


def link_tree(root: str, records: int, images: int = IMAGES) -> tuple[int, int]:
    """``root/a/dXXX/eYYY/`` are all ``root/imgs/`` (two levels of folder links, about
    2 × sqrt(records / images) links): enough distinct folders for ``records`` distinct paths."""
    blocks = max(1, math.ceil(records / images))
    width = max(1, math.isqrt(blocks - 1) + 1)
    for name, target, count in (("e", "../imgs", width), ("a", "../e", width)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for j in range(count):
            link = os.path.join(root, name, f"{name if name == 'e' else 'd'}{j:04d}")
            if not os.path.islink(link):
                os.symlink(target, link)
    return width, width


def write_results(root: str, sizes: list[int], seed: int = SEED, block: int = 50_000) -> dict:
    """``root/results-<N>.jsonl`` for each N in ``sizes``: the first N lines of one stream."""
    import numpy as np

    sizes = sorted(set(sizes))
    total = sizes[-1]
    width, _ = link_tree(root, total)
    rng = np.random.default_rng(seed)
    labels = [f"class_{i + 1:04d}" for i in range(LABELS)]
    weights = 1.0 / (np.arange(LABELS) + 8.0) ** 0.7  # a long tail, like any real archive
    weights /= weights.sum()
    outs = [open(os.path.join(root, f"results-{n}.jsonl"), "w", encoding="utf-8") for n in sizes]
    counts = {n: {"errors": 0, "doubtful": 0} for n in sizes}
    try:
        for lo in range(0, total, block):
            n = min(block, total - lo)
            top = rng.choice(LABELS, size=n, p=weights)
            steps = rng.integers(1, LABELS // TOP_K, size=(n, TOP_K - 1)).cumsum(axis=1)
            others = (top[:, None] + steps) % LABELS   # distinct, and never the top-1
            s1 = rng.beta(1.5, 1.0, size=n)
            parts = rng.dirichlet(np.ones(TOP_K), size=n)[:, :TOP_K - 1]
            rest = np.minimum(np.sort(parts, axis=1)[:, ::-1] * (1 - s1)[:, None], s1[:, None] * 0.98)
            s1, rest = np.round(s1, 6).tolist(), np.round(rest, 6).tolist()
            failed = (rng.random(n) < ERROR_RATE).tolist()
            why = rng.integers(0, len(REASONS), size=n).tolist()
            top, others = top.tolist(), others.tolist()
            lines, doubt = [], []
            for j in range(n):
                i = lo + j
                b = i // IMAGES
                source = f"{root}/a/d{b // width:04d}/e{b % width:04d}/img_{i % IMAGES:02d}.jpg"
                if failed[j]:
                    doubt.append(False)
                    lines.append(f'{{"source": "{source}", "label": null, "score": null, "top_k": [], '
                                 f'"model": "{MODEL}", "error": "{REASONS[why[j]]}"}}\n')
                    continue
                label, score = labels[top[j]], s1[j]
                doubt.append(score < BELOW)
                top_k = ", ".join([f'{{"label": "{label}", "score": {score}}}'] +
                                  [f'{{"label": "{labels[c]}", "score": {s}}}' for c, s in zip(others[j], rest[j])])
                lines.append(f'{{"source": "{source}", "label": "{label}", "score": {score}, "top_k": [{top_k}], '
                             f'"model": "{MODEL}", "error": null}}\n')
            for out, size in zip(outs, sizes):
                if lo < size:
                    out.writelines(lines[:size - lo])
                    counts[size]["errors"] += sum(failed[:size - lo])
                    counts[size]["doubtful"] += sum(doubt[:size - lo])
    finally:
        for out in outs:
            out.close()
    for n in sizes:
        counts[n]["bytes"] = os.path.getsize(os.path.join(root, f"results-{n}.jsonl"))
    return {"folder_links": 2 * width, "files": {str(n): c for n, c in counts.items()}}


# The peer: the script a team writes today to send doubtful images to Label Studio.

def peer_task(record: dict, reason: str) -> dict:
    top_k = record["top_k"]
    data = {"image": LOCAL_FILES + quote(os.path.relpath(record["source"], "/"), safe="/"),
            "source": record["source"], "label": record["label"], "score": record["score"], "review": reason}
    if len(top_k) > 1:
        data["runner_up"] = f"{top_k[1]['label']} ({top_k[1]['score']:.3f})"
    rid = hashlib.blake2b(record["source"].encode(), digest_size=5).hexdigest()
    return {"data": data,
            "predictions": [{"model_version": record["model"], "score": record["score"],
                             "result": [{"id": rid, "from_name": "choice", "to_name": "image", "type": "choices",
                                         "value": {"choices": [record["label"]]}}]}]}


def peer(results: str, out: str, below: float = BELOW, sample: int = SAMPLE, seed: int = 0) -> None:
    with open(results) as f:
        records = [json.loads(line) for line in f if line.strip()]
    records = [r for r in records if r["error"] is None]
    doubtful = sorted((r for r in records if r["score"] < below), key=lambda r: (r["score"], r["source"]))
    rest = [r for r in records if r["score"] >= below]
    audit = random.Random(seed).sample(rest, min(sample, len(rest)))
    tasks = [peer_task(r, "doubtful") for r in doubtful] + [peer_task(r, "sample") for r in audit]
    with open(out, "w") as f:
        json.dump(tasks, f)


def compare(ours: str, theirs: str, below: float = BELOW) -> dict:
    """Do the two task lists select the same doubtful images, in the same order?"""
    with open(ours) as f:
        a = json.load(f)
    with open(theirs) as f:
        b = json.load(f)

    def split(tasks):
        return ([t for t in tasks if t["data"]["review"] == "doubtful"],
                [t for t in tasks if t["data"]["review"] == "sample"])

    (da, sa), (db, sb) = split(a), split(b)
    doubtful_sources = {t["data"]["source"] for t in da}
    return {"tasks": len(a), "peer_tasks": len(b), "doubtful": len(da), "sampled": len(sa),
            "peer_sampled": len(sb),
            "same_doubtful_order": [t["data"]["source"] for t in da] == [t["data"]["source"] for t in db],
            "same_doubtful_tasks": da == db,
            "sample_valid": (len({t["data"]["source"] for t in sa}) == len(sa)
                             and all(t["data"]["score"] >= below for t in sa)
                             and not doubtful_sources & {t["data"]["source"] for t in sa})}


# The harness.

def run_child(cmd: list[str]) -> dict:
    """Run to completion; wall seconds and the child's peak RSS (MiB) from ``wait4``."""
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:  # no pipe to fill up
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read().decode(errors="replace"), err_f.read().decode(errors="replace")
    if code:
        raise RuntimeError(f"{' '.join(cmd[:5])}... failed ({code}):\n{err[-3000:]}")
    return {"seconds": round(wall, 3), "rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout": out, "stderr": err}


def _self(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.review", *args]


def _bulklabel(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulklabel", *args]


def _count(path: str, needle: bytes) -> int:
    n, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += (tail + chunk).count(needle)
            tail = chunk[-(len(needle) - 1):]
    return n


def measure_size(root: str, n: int, below: float, sample: int, rounds: int) -> dict:
    results = os.path.join(root, f"results-{n}.jsonl")
    ours, theirs, html = (os.path.join(root, f"{name}-{n}.{ext}")
                          for name, ext in (("tasks", "json"), ("peer", "json"), ("report", "html")))
    runs: dict[str, list[dict]] = {"export": [], "peer": []}
    for i in range(rounds):  # alternate which runs first: the page cache is warm for both after round 1
        for name in (("export", "peer") if i % 2 == 0 else ("peer", "export")):
            if name == "export":
                r = run_child(_bulklabel("export", results, "--review-below", str(below), "--sample", str(sample),
                                         "--out", ours))
            else:
                r = run_child(_self("--peer", results, theirs, "--below", str(below), "--sample", str(sample)))
            runs[name].append({"seconds": r["seconds"], "rss_mib": r["rss_mib"]})
            print(f"  review {n:,}: {name} {r['seconds']:.2f} s, {r['rss_mib']:.0f} MiB", file=sys.stderr)
    check = json.loads(run_child(_self("--compare", ours, theirs, "--below", str(below)))["stdout"])
    rep = run_child(_bulklabel("report", results, "--out", html))
    said = re.search(r"(\d+) thumbnails", rep["stderr"])
    report = {"seconds": rep["seconds"], "rss_mib": rep["rss_mib"], "html_bytes": os.path.getsize(html),
              "thumbnails": int(said.group(1)) if said else None,
              "images_in_page": _count(html, b"data:image/jpeg;base64,")}
    print(f"  review {n:,}: report {rep['seconds']:.2f} s, {rep['rss_mib']:.0f} MiB, "
          f"{report['html_bytes']:,} bytes, {report['thumbnails']} thumbnails", file=sys.stderr)
    best = {k: {"seconds": min(r["seconds"] for r in v), "rss_mib": max(r["rss_mib"] for r in v)}
            for k, v in runs.items()}
    export = {"bulklabel": best["export"], "peer": best["peer"], "runs": runs, "check": check,
              "ratio_seconds": round(best["export"]["seconds"] / best["peer"]["seconds"], 3),
              "ratio_rss": round(best["export"]["rss_mib"] / best["peer"]["rss_mib"], 3),
              "tasks_bytes": os.path.getsize(ours)}
    for path in (ours, theirs):
        os.remove(path)
    return {"records": n, "results_bytes": os.path.getsize(results), "export": export, "report": report}


def measure(sizes: list[int] = SIZES, below: float = BELOW, sample: int = SAMPLE, rounds: int = 1) -> dict:
    """The section: data made in a child, then each size measured (see the module's docstring)."""
    sizes = sorted(set(sizes))
    root = tempfile.mkdtemp(prefix="bulklabel-review-bench-")
    try:
        start = time.perf_counter()
        made = json.loads(run_child(_self("--make", root, "--records", *map(str, sizes)))["stdout"])
        made["seconds"] = round(time.perf_counter() - start, 2)
        res = {"sizes": sizes, "below": below, "sample": sample, "rounds": rounds, "labels": LABELS,
               "images": IMAGES, "data": made, "runs": [measure_size(root, n, below, sample, rounds) for n in sizes]}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    small, large = res["runs"][0], res["runs"][-1]
    res["summary"] = {
        "export_ratio_seconds": {r["records"]: r["export"]["ratio_seconds"] for r in res["runs"]},
        "export_ratio_rss": {r["records"]: r["export"]["ratio_rss"] for r in res["runs"]},
        "same_doubtful": all(r["export"]["check"]["same_doubtful_order"] for r in res["runs"]),
        "report_rss_ratio": round(large["report"]["rss_mib"] / small["report"]["rss_mib"], 3),
        "report_html_ratio": round(large["report"]["html_bytes"] / small["report"]["html_bytes"], 3),
        "report_seconds_large": large["report"]["seconds"]}
    res["harness_peak_rss_mib"] = _own_peak_mib()
    return res


def _own_peak_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` (``ru_maxrss`` would include what it inherited)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=list(SIZES), metavar="N",
                    help="results file sizes (default 100000 1000000)")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES[0]} and {QUICK_SIZES[1]}")
    ap.add_argument("--rounds", type=int, default=2,
                    help="export and peer runs per size, alternating which goes first; best time (default 2)")
    ap.add_argument("--below", type=float, default=BELOW)
    ap.add_argument("--sample", type=int, default=SAMPLE)
    ap.add_argument("--json", metavar="OUT", help="also write the result here")
    ap.add_argument("--make", metavar="ROOT", help=argparse.SUPPRESS)
    ap.add_argument("--peer", nargs=2, metavar=("RESULTS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, metavar=("OURS", "PEER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        make_images(os.path.join(args.make, "imgs"))
        print(json.dumps(write_results(args.make, args.records)))
        return
    if args.peer:
        peer(*args.peer, below=args.below, sample=args.sample)
        return
    if args.compare:
        print(json.dumps(compare(*args.compare, below=args.below)))
        return
    result = measure(list(QUICK_SIZES) if args.quick else args.records, args.below, args.sample,
                     1 if args.quick else args.rounds)
    save_json(result, args.json)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
