"""Whole-process start-up and marginal rates, in two CPU regimes: ``python -m bench.startup``.

Each job is a whole process timed from outside (wall clock around the process, peak RSS from
``wait4``), so import, model build, tracing and warm-up all count, as they do for a user:

* ``bulklabel`` — ``bulklabel classify @LIST --model keras:MODEL --weights none --batch-size 32``;
* ``tfdata``    — ``bench.pipelines tfdata-cold``: tf.data with no warm-up call, as people write it;
* ``bound``     — ``bench.pipelines bound`` (``--bound``): the compute-only reference.

Every pipeline runs a small job (the "start-up job") and a large one (the "whole job") of the
same corpus. The marginal rate, (N_large - N_small) / (T_large - T_small), is taken within each
round, so start-up cancels out; the fixed cost is T_small - N_small / marginal rate.

Regimes: ``all`` (no pinning), ``one`` (the same commands under ``taskset -c CPU``, one core:
the model-bound regime, simulated on any host) and ``avx2`` (all cores, oneDNN's kernels limited
to AVX2 with ``ONEDNN_MAX_CPU_ISA=AVX2``: an AVX2-only host's model speed on an AVX-512 one).
Cases (defaults): ``mobilenet``, MobileNetV2 224 on the standard corpus of 602 photos, jobs of 75
and 602 images; ``xception``, Xception 299 on the same corpus, 18 and 150; ``phone``, MobileNetV2
on the 100 12 MP photos cycled, jobs of 200 and 400 (all cores only unless ``--phone-regimes``):
both past the start-up window (tf.data's AUTOTUNE ramp, bulklabel's decode-ahead of at most 8
batches), so the marginal rate is the steady one of each pipeline.

Before the rounds of each case, every pipeline runs its large job once, not counted, so that no
round pays for reading TensorFlow's libraries and the corpus from disk (a first round once ran
``tf.data`` at half speed, for a reason not found; this rules out one). Rounds are interleaved:
in each round every regime, every size and every pipeline runs once, pipelines in an order
rotated per round. Reported: medians over rounds; the ratios
bulklabel / tf.data (marginal rate: higher is better; small- and whole-job seconds: <= 1 means
bulklabel finishes no later) are taken within each round, then the median.

Output: one JSON line on stdout (and ``--json FILE``), tables with ``--markdown FILE``.
``--quick``: MobileNetV2 only, jobs of 4 and 384 images (the 12-image corpus, cycled: the large job
is past the decode-ahead window, so it is slower than the small one by more than the noise), one round,
regimes all and one (about a minute on 2 cores). ``bench.run --only startup`` runs it as a section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import corpus, save_json

PY = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}

# name -> model, input side, corpus kind, default (small, large) sizes, which job is "finished no later"
CASES = {
    "mobilenet": {"model": "MobileNetV2", "side": 224, "corpus": "standard", "sizes": (75, 602), "finish": "small"},
    "xception": {"model": "Xception", "side": 299, "corpus": "standard", "sizes": (18, 150), "finish": "large"},
    "phone": {"model": "MobileNetV2", "side": 224, "corpus": "phone", "sizes": (200, 400), "finish": None},
}
REGIMES = {"all": "all cores", "one": "one core", "avx2": "all cores, oneDNN AVX2 only"}
REGIME_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
MARGINAL_GOAL = {"mobilenet": 1.0, "xception": 1.0, "phone": 2.0}


def _tail(path: str, n: int = 3000) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def timed(cmd: list[str], work: str, env: dict | None = None) -> dict:
    """Run ``cmd`` to completion: wall seconds around the whole process, peak RSS (MiB) from the
    kernel; stdout and stderr go to files (a pipe left unread could stall a chatty child)."""
    out_path, err_path = os.path.join(work, "stdout.txt"), os.path.join(work, "stderr.txt")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**ENV, **(env or {})}, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)}\nfailed ({code}):\n{_tail(err_path)}")
    with open(out_path) as f:
        stdout = f.read()
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "stdout": stdout, "stderr_path": err_path}


def _lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def job(pipeline: str, listing: str, n: int, model: str, pin: str | None, work: str,
        env: dict | None = None) -> dict:
    """One whole job in its own process; checks it labeled all ``n`` images."""
    out = os.path.join(work, f"{pipeline}.jsonl")
    for stale in (out, os.path.join(work, "summary.json")):
        if os.path.exists(stale):
            os.remove(stale)
    if pipeline == "bulklabel":
        summary = os.path.join(work, "summary.json")
        cmd = [PY, "-m", "bulklabel", "classify", f"@{listing}", "--model", f"keras:{model}", "--weights", "none",
               "--out", out, "--batch-size", "32", "--no-progress", "--summary-json", summary]
    else:
        name = {"tfdata": "tfdata-cold", "bound": "bound"}[pipeline]
        cmd = [PY, "-m", "bench.pipelines", name, listing, model, out]
    if pin is not None:
        cmd = [shutil.which("taskset"), "-c", pin] + cmd
    r = timed(cmd, work, env)
    row = {"seconds": round(r["wall"], 4), "rss_mib": round(r["rss_mib"], 1)}
    if pipeline == "bulklabel":
        with open(summary) as f:
            s = json.load(f)
        counts = {"images": s["images"], "errors": s["errors"], "records": _lines(out)}
        row.update(job_seconds=s.get("seconds"), load_seconds=s.get("load_seconds"))  # engine's clock, after warm-up
        ok = counts["images"] == n and counts["errors"] == 0 and counts["records"] == n
    else:
        s = json.loads(r["stdout"].strip().splitlines()[-1])
        counts = {"images": s["images"]}
        if pipeline == "tfdata":
            counts["records"] = _lines(out)
        row["job_seconds"] = s["seconds"]  # in-process, after the model build
        ok = counts["images"] == n and counts.get("records", n) == n
    if not ok:
        raise RuntimeError(f"{' '.join(cmd)}\nexpected {n} images, got {counts}:\n{_tail(r['stderr_path'])}")
    return row


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def _marginal(n_small: int, n_large: int, small: dict, large: dict) -> tuple[float | None, float | None]:
    """Marginal images/s and fixed seconds of one round (None when the large job was not slower)."""
    dt = large["seconds"] - small["seconds"]
    if dt <= 0:
        return None, None
    rate = (n_large - n_small) / dt
    return round(rate, 4), round(small["seconds"] - n_small / rate, 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(runs: dict[str, list[dict]], n_small: int, n_large: int) -> dict:
    """Per pipeline: medians over rounds; per pair: the within-round ratios' medians."""
    pipelines = {}
    for name, rounds in runs.items():
        for r in rounds:
            r["marginal_images_per_second"], r["fixed_seconds"] = _marginal(n_small, n_large, r["small"], r["large"])
        pipelines[name] = {
            "small_seconds": _median([r["small"]["seconds"] for r in rounds]),
            "large_seconds": _median([r["large"]["seconds"] for r in rounds]),
            "marginal_images_per_second": _median([r["marginal_images_per_second"] for r in rounds]),
            "fixed_seconds": _median([r["fixed_seconds"] for r in rounds]),
            "peak_rss_mib": max(max(r["small"]["rss_mib"], r["large"]["rss_mib"]) for r in rounds),
            "rounds": rounds,
        }
    ratios = {}
    for other in (n for n in runs if n != "bulklabel"):
        pairs = list(zip(runs["bulklabel"], runs[other]))
        ratios[f"bulklabel/{other}"] = {
            "marginal": _median([_ratio(b["marginal_images_per_second"], o["marginal_images_per_second"])
                                 for b, o in pairs]),
            "small_seconds": _median([_ratio(b["small"]["seconds"], o["small"]["seconds"]) for b, o in pairs]),
            "large_seconds": _median([_ratio(b["large"]["seconds"], o["large"]["seconds"]) for b, o in pairs]),
        }
    return {"pipelines": pipelines, "ratios": ratios}


def measure(cases: dict[str, dict], regimes: list[str], pipelines: list[str], rounds: int, root: str,
            work: str) -> dict:
    """``cases``: name -> CASES entry with ``sizes``, ``corpus_images`` and ``regimes`` filled in."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    regime_info: dict[str, dict] = {}
    for reg in regimes:
        if reg in ("all", "avx2"):
            regime_info[reg] = {"label": REGIMES[reg], "cpus": len(cpus), "pin": None, "env": REGIME_ENV.get(reg, {})}
        elif taskset is None:
            regime_info[reg] = {"label": REGIMES[reg], "skipped": "taskset not found"}
        else:
            regime_info[reg] = {"label": REGIMES[reg], "cpus": 1, "pin": str(cpus[0]), "env": {}}
    res: dict = {"regimes": {}}
    for reg, info in regime_info.items():
        res["regimes"][reg] = dict(info, cases={}) if "skipped" not in info else dict(info)
    for cname, case in cases.items():
        paths = corpus.listing(corpus.build(case["corpus"], case["corpus_images"], root))
        n_small, n_large = case["sizes"]
        lists = {}
        for label, n in (("small", n_small), ("large", n_large)):
            cycled = (paths * -(-n // len(paths)))[:n]  # the corpus's first n images (cycled if n > corpus)
            lists[label] = corpus.write_list(cycled, os.path.join(work, f"{cname}-{label}.txt"))
        live = [r for r in case["regimes"] if r in regime_info and "skipped" not in regime_info[r]]
        runs = {reg: {p: [{} for _ in range(rounds)] for p in pipelines} for reg in live}
        for p in pipelines if live else []:  # not counted: brings TensorFlow's files and the corpus into the page cache
            job(p, lists["large"], n_large, case["model"], None, work)
        for i in range(rounds):
            order = pipelines[i % len(pipelines):] + pipelines[:i % len(pipelines)]  # none always runs first
            sizes = [("small", n_small), ("large", n_large)]
            for reg in live if i % 2 == 0 else live[::-1]:
                for label, n in sizes if i % 2 == 0 else sizes[::-1]:
                    for p in order:
                        row = job(p, lists[label], n, case["model"], regime_info[reg]["pin"], work,
                                  regime_info[reg]["env"])
                        runs[reg][p][i][label] = row
                        print(f"  startup {reg} {cname} round {i + 1} {p} {n} images: {row['seconds']:.2f} s",
                              file=sys.stderr)
        for reg in live:
            res["regimes"][reg]["cases"][cname] = {
                "model": case["model"], "side": case["side"], "corpus": case["corpus"],
                "corpus_images": len(paths), "small": n_small, "large": n_large, "finish": case["finish"],
                **summarize(runs[reg], n_small, n_large)}
    return res


def targets(res: dict) -> list[dict]:
    rows = []

    def add(name, value, goal, ok):
        rows.append({"target": name, "value": None if value is None else round(value, 3), "goal": goal,
                     "met": bool(ok) if value is not None else None})

    for r in res["regimes"].values():
        if "skipped" in r:
            rows.append({"target": f"start-up, {r['label']}", "value": None, "goal": f"skipped: {r['skipped']}",
                         "met": None})
            continue
        for cname, c in r["cases"].items():
            ratios = c["ratios"]["bulklabel/tfdata"]
            what = f"start-up, {r['label']}, {c['model']}" + (" 12 MP" if c["corpus"] == "phone" else "")
            goal = MARGINAL_GOAL.get(cname, 1.0)
            v = ratios["marginal"]
            add(f"{what}: marginal rate / tf.data", v, f">= {goal:g}", v is not None and v >= goal)
            if c["finish"]:
                n = c[c["finish"]]
                v = ratios[f"{c['finish']}_seconds"]
                add(f"{what}: {n}-image job seconds / tf.data", v, "<= 1.0", v is not None and v <= 1.0)
    return rows


def _fmt(v: float | None, unit: str, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def markdown(res: dict, with_targets: bool = True) -> str:
    lines = [f"Start-up and marginal rates, whole processes ({res['rounds']} interleaved rounds, medians; "
             f"{res['machine']}).", ""]
    for r in res["regimes"].values():
        if "skipped" in r:
            lines += [f"**{r['label']}**: skipped ({r['skipped']})", ""]
            continue
        for c in r["cases"].values():
            kind = "12 MP photos" if c["corpus"] == "phone" else "photos"
            pin = "" if r["pin"] is None else f" (taskset -c {r['pin']})"
            pin += "".join(f" ({k}={v})" for k, v in r.get("env", {}).items())
            lines.append(f"**{c['model']} {c['side']}, {c['corpus_images']} {kind}, {r['label']}{pin}**")
            lines.append("")
            lines.append(f"| pipeline | start-up job ({c['small']} images) | marginal rate | "
                         f"whole job ({c['large']} images) | fixed cost | peak RSS |")
            lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
            for name in (n for n in ("bound", "tfdata", "bulklabel") if n in c["pipelines"]):
                p = c["pipelines"][name]
                lines.append(f"| {name} | {_fmt(p['small_seconds'], ' s')} | "
                             f"{_fmt(p['marginal_images_per_second'], ' images/s', 1)} | "
                             f"{_fmt(p['large_seconds'], ' s')} | {_fmt(p['fixed_seconds'], ' s')} | "
                             f"{p['peak_rss_mib']:.0f} MiB |")
            for key, ratio in c["ratios"].items():
                lines.append(f"| {key.replace('tfdata', 'tf.data')} | {_fmt(ratio['small_seconds'], '')} | "
                             f"{_fmt(ratio['marginal'], '')} | {_fmt(ratio['large_seconds'], '')} | | |")
            lines.append("")
    if with_targets:
        lines += ["| target | measured | goal | met |", "| --- | ---: | --- | --- |"]
        for row in res["targets"]:
            lines.append(f"| {row['target']} | {row['value']} | {row['goal']} | "
                         f"{'yes' if row['met'] else 'no' if row['met'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> tuple[int, int]:
    small, large = (int(v) for v in text.split(","))
    if not 0 < small < large:
        raise argparse.ArgumentTypeError(f"expected SMALL,LARGE with 0 < SMALL < LARGE, got {text!r}")
    return small, large


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="MobileNetV2 only, jobs of 4 and 384 images, one round (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--regimes", help="all (no pinning), one (taskset to one core), avx2 (oneDNN limited "
                                      "to AVX2); default all,one,avx2 (--quick: all,one)")
    ap.add_argument("--cases", default="mobilenet,xception,phone")
    ap.add_argument("--bound", action="store_true", help="also run the compute-only bound")
    ap.add_argument("--mobilenet-sizes", type=_sizes, default=CASES["mobilenet"]["sizes"], metavar="SMALL,LARGE")
    ap.add_argument("--xception-sizes", type=_sizes, default=CASES["xception"]["sizes"], metavar="SMALL,LARGE")
    ap.add_argument("--phone-sizes", type=_sizes, default=CASES["phone"]["sizes"], metavar="SMALL,LARGE")
    ap.add_argument("--phone-regimes", default="all", help="regimes for the 12 MP case (default all cores only)")
    ap.add_argument("--standard-images", type=int, default=602, help="size of the standard corpus")
    ap.add_argument("--phone-images", type=int, default=100, help="size of the 12 MP corpus")
    ap.add_argument("--corpus-root", default=corpus.DEFAULT_ROOT)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--markdown", metavar="FILE", help="write the tables here")
    args = ap.parse_args(argv)
    regimes = (args.regimes or ("all,one" if args.quick else "all,one,avx2")).split(",")
    if unknown := set(regimes) - set(REGIMES):
        ap.error(f"unknown regimes {sorted(unknown)}")
    sizes = {"mobilenet": args.mobilenet_sizes, "xception": args.xception_sizes, "phone": args.phone_sizes}
    if args.quick:
        rounds, names = 1, ["mobilenet"]
        cases = {"mobilenet": dict(CASES["mobilenet"], sizes=(4, 384), corpus_images=12, regimes=regimes)}
    else:
        rounds, names = args.rounds, args.cases.split(",")
        if unknown := set(names) - set(CASES):
            ap.error(f"unknown cases {sorted(unknown)}")
        cases = {n: dict(CASES[n], sizes=sizes[n],
                         corpus_images=args.phone_images if CASES[n]["corpus"] == "phone" else args.standard_images,
                         regimes=args.phone_regimes.split(",") if n == "phone" else regimes)
                 for n in names}
    pipelines = ["tfdata", "bulklabel"] + (["bound"] if args.bound else [])
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, "rounds": rounds,
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                 "pipelines": pipelines, "batch_size": 32}
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix="bulklabel-startup-")
    try:
        res.update(measure(cases, regimes, pipelines, rounds, args.corpus_root, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["targets"] = targets(res)
    save_json(res, args.json)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(res))
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
