"""Run the benchmark suite: ``python -m bench.run`` (``--quick`` for a smoke run).

Every measurement is a whole job in its own process; pipelines are interleaved round by
round (A B C A B C ...) and reported as medians, with ratios taken within each round so
the machine's drift cancels out. Results go to bench/results/<time>.json and a Markdown
summary (``--markdown``). See docs/benchmarks.md.

The ``startup`` section (whole-process start-up and marginal rates, all cores and one core;
bench.startup) is not in the default ``--only`` list, it is long: run it with ``--only startup``
(``--quick``: its smoke variant, about a minute) or alone, ``python -m bench.startup``.
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

import redis

from bench import corpus

PY = sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str], env: dict | None = None, check: bool = True) -> dict:
    """Run a process to completion; wall seconds and peak RSS (MiB) from the kernel."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "stdout": out, "stderr": err}


def pipeline(name: str, listing: str, model: str, work: str) -> dict:
    out = os.path.join(work, f"{name}.jsonl")
    if name == "bulklabel":
        summary = os.path.join(work, "summary.json")
        # --decode-ahead 0: every image is decoded within the job's own clock, as in the other
        # pipelines (a steady rate; bench.startup measures whole processes, decode-ahead included).
        r = run([PY, "-m", "bulklabel", "classify", f"@{listing}", "--model", f"keras:{model}", "--weights",
                 "none", "--out", out, "--batch-size", "32", "--no-progress", "--decode-ahead", "0",
                 "--summary-json", summary])
        s = json.load(open(summary))
        return {"pipeline": name, "images": s["images"], "seconds": s["seconds"],
                "images_per_second": s["images_per_second"], "process_seconds": r["wall"],
                "rss_mib": r["rss_mib"], "stages": s["stages"], "errors": s["errors"]}
    r = run([PY, "-m", "bench.pipelines", name, listing, model, out])
    result = json.loads(r["stdout"].strip().splitlines()[-1])
    return {**result, "process_seconds": r["wall"], "rss_mib": r["rss_mib"]}


def median(rows: list[dict], key: str = "images_per_second") -> float:
    return statistics.median(r[key] for r in rows)


def throughput(model: str, paths: list[str], rounds: int, work: str, tutorial_limit: int,
               tutorial: bool = True) -> dict:
    listing = corpus.write_list(paths, os.path.join(work, "list.txt"))
    short = corpus.write_list(paths[:tutorial_limit], os.path.join(work, "short.txt"))
    names = ["bound", "tfdata", "bulklabel"] + (["tutorial"] if tutorial else [])
    results: dict[str, list[dict]] = {k: [] for k in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate, so no pipeline always runs first
        for name in order:
            results[name].append(pipeline(name, short if name == "tutorial" else listing, model, work))
            print(f"  {model} round {i + 1} {name}: {results[name][-1]['images_per_second']:.1f} images/s",
                  file=sys.stderr)
    ratios = {
        "bulklabel/bound": [b["images_per_second"] / r["images_per_second"]
                            for b, r in zip(results["bulklabel"], results["bound"])],
        "bulklabel/tfdata": [b["images_per_second"] / r["images_per_second"]
                             for b, r in zip(results["bulklabel"], results["tfdata"])],
        "bulklabel/tutorial": [b["images_per_second"] / r["images_per_second"]
                               for b, r in zip(results["bulklabel"], results.get("tutorial", []))],
    }
    return {"model": model, "images": len(paths), "runs": results,
            "median_images_per_second": {k: median(v) for k, v in results.items()},
            "median_ratios": {k: statistics.median(v) for k, v in ratios.items() if v}}


class WorkerProc:
    def __init__(self, queue: str, url: str, model: str, cores: str | None = None, threads: int | None = None):
        cmd = [PY, "-m", "bulklabel", "worker", "--model", f"keras:{model}", "--weights", "none",
               "--gpus", "none", "--queue", queue]
        if threads:
            cmd += ["--threads", str(threads)]
        if cores is not None:
            cmd = ["taskset", "-c", cores] + cmd
        self.queue, self.url = queue, url
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env={**ENV, "BULKLABEL_REDIS_URL": url}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def child_pids(self) -> list[int]:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        pids = []
        for key in client.scan_iter("bulklabel:worker:*"):
            raw = client.get(key)
            info = json.loads(raw) if raw else {}
            if info.get("queue") == self.queue:
                pids.append(info["pid"])
        return pids

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.child_pids():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(f"worker did not start:\n{self.log.read().decode()[-3000:]}")
            time.sleep(0.2)
        time.sleep(1.0)

    def rss_mib(self) -> float:
        total = 0.0
        for pid in self.child_pids():
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        return total

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def distributed_job(listing: str, queue: str, url: str, work: str, chunk: int, *extra: str,
                    dest: str | None = None) -> dict:
    r = run([PY, "-m", "bulklabel", "submit", f"@{listing}", "--out", dest or os.path.join(work, "dist"),
             "--queue", queue, "--chunk-size", str(chunk), "--wait", "--no-progress", *extra],
            env={**ENV, "BULKLABEL_REDIS_URL": url})
    job_id = r["stdout"].strip().splitlines()[-1]
    s = run([PY, "-m", "bulklabel", "status", job_id, "--json"], env={**ENV, "BULKLABEL_REDIS_URL": url})
    job = json.loads(s["stdout"])
    seconds = job["finished_at"] - job["submitted_at"]
    return {"job_id": job_id, "images": job["done"], "skipped": job.get("skipped", 0), "seconds": seconds,
            "images_per_second": job["done"] / seconds if seconds > 0 else 0.0, "process_seconds": r["wall"]}


def distributed(model: str, paths: list[str], rounds: int, url: str, work: str, worker: WorkerProc) -> dict:
    listing = corpus.write_list(paths, os.path.join(work, "dist.txt"))
    queue = worker.queue
    distributed_job(listing, queue, url, work, 64)  # warm: first job after start-up
    jobs, bounds = [], []
    for _ in range(rounds):
        jobs.append(distributed_job(listing, queue, url, work, 64))
        bounds.append(pipeline("bound", listing, model, work))
        print(f"  distributed {jobs[-1]['images_per_second']:.1f} vs bound "
              f"{bounds[-1]['images_per_second']:.1f} images/s", file=sys.stderr)
    ratios = [j["images_per_second"] / b["images_per_second"] for j, b in zip(jobs, bounds)]
    return {"jobs": jobs, "bound": bounds, "median_images_per_second": median(jobs),
            "median_ratio_to_bound": statistics.median(ratios)}


def scaling(model: str, paths: list[str], rounds: int, url: str, work: str) -> dict:
    listing = corpus.write_list(paths, os.path.join(work, "scale.txt"))
    results = {"one": [], "two": []}
    for i in range(rounds):
        for setup in (["one", "two"] if i % 2 == 0 else ["two", "one"]):
            queue = f"bench-scale-{setup}-{os.getpid()}-{i}"
            workers = [WorkerProc(queue, url, model, cores="0", threads=1)]
            if setup == "two":
                workers.append(WorkerProc(queue, url, model, cores="1", threads=1))
            try:
                for w in workers:
                    w.wait_ready()
                results[setup].append(distributed_job(listing, queue, url, work, 16))
            finally:
                for w in workers:
                    w.stop()
            print(f"  {setup} single-core worker(s): {results[setup][-1]['images_per_second']:.1f} images/s",
                  file=sys.stderr)
    ratios = [t["images_per_second"] / o["images_per_second"] for o, t in zip(results["one"], results["two"])]
    return {"runs": results, "median_ratio_two_over_one": statistics.median(ratios)}


def memory(model: str, paths: list[str], repeat: int, jobs: int, url: str, work: str, worker: WorkerProc) -> dict:
    one = corpus.write_list(paths, os.path.join(work, "mem1.txt"))
    many = corpus.write_list(paths * repeat, os.path.join(work, "memN.txt"))
    small = pipeline("bulklabel", one, model, work)
    large = pipeline("bulklabel", many, model, work)
    rss = []
    for _ in range(jobs):
        distributed_job(one, worker.queue, url, work, 64)
        rss.append(round(worker.rss_mib(), 1))
    return {"classify_peak_rss_mib": {"x1": small["rss_mib"], f"x{repeat}": large["rss_mib"]},
            "ratio_large_over_small": large["rss_mib"] / small["rss_mib"],
            "worker_rss_mib_after_each_job": rss,
            "worker_rss_growth": (rss[-1] - rss[0]) / rss[0] if rss else None}


def incremental(paths: list[str], new_fraction: float, url: str, work: str, worker: WorkerProc) -> dict:
    """A full incremental run into a fresh DEST, then a re-run over the same archive plus
    ``new_fraction`` new files: the re-run should cost about that fraction (plus listing)."""
    folder = os.path.join(work, "incremental-new")
    os.makedirs(folder, exist_ok=True)
    added = []
    for i, path in enumerate(paths[:max(1, round(len(paths) * new_fraction))]):
        added.append(os.path.join(folder, f"new-{i:05d}{os.path.splitext(path)[1]}"))
        shutil.copyfile(path, added[-1])
    first = corpus.write_list(paths, os.path.join(work, "inc1.txt"))
    second = corpus.write_list(paths + added, os.path.join(work, "inc2.txt"))
    dest = os.path.join(work, "inc-dest")
    full = distributed_job(first, worker.queue, url, work, 64, "--incremental", dest=dest)
    rerun = distributed_job(second, worker.queue, url, work, 64, "--incremental", dest=dest)
    print(f"  incremental: full {full['seconds']:.2f} s ({full['images']} images), re-run "
          f"{rerun['seconds']:.2f} s ({rerun['images']} new, {rerun['skipped']} skipped)", file=sys.stderr)
    return {"archive": len(paths), "new": len(added), "full": full, "rerun": rerun,
            "ratio_rerun_over_full": rerun["seconds"] / full["seconds"],
            "ratio_images": rerun["images"] / full["images"]}


def producer(keys: int, url: str, work: str) -> dict:
    listing = os.path.join(work, "keys.txt")
    with open(listing, "w") as f:
        for i in range(keys):
            f.write(f"/archive/photos/2026/11/{i // 1000:04d}/IMG_{i:07d}.jpg\n")
    client = redis.Redis.from_url(url)
    queue = f"bench-producer-{os.getpid()}"
    before = client.info("memory")["used_memory"]
    r = run([PY, "-m", "bulklabel", "submit", f"@{listing}", "--out", os.path.join(work, "void"),
             "--queue", queue, "--chunk-size", "500"], env={**ENV, "BULKLABEL_REDIS_URL": url})
    after = client.info("memory")["used_memory"]
    job_id = r["stdout"].strip().splitlines()[-1]
    total = int(client.hget(f"bulklabel:job:{job_id}", "total"))
    client.delete(queue)
    for key in client.scan_iter(f"bulklabel:job:{job_id}*"):
        client.delete(key)
    return {"keys": total, "seconds": r["wall"], "redis_mib": (after - before) / 2**20,
            "producer_peak_rss_mib": r["rss_mib"]}


def review(quick: bool, work: str) -> dict:
    """``bulklabel export`` (vs the hand-written script) and ``report`` at scale: bench.review in its
    own process, so that its children's peak RSS owes nothing to this one's."""
    out = os.path.join(work, "review.json")
    run([PY, "-m", "bench.review", "--json", out] + (["--quick"] if quick else []))
    with open(out) as f:
        return json.load(f)


def startup(quick: bool, rounds: int, corpus_root: str, work: str) -> dict:
    """Whole-process start-up and marginal rates (bench.startup), in its own process."""
    out = os.path.join(work, "startup.json")
    run([PY, "-m", "bench.startup", "--json", out, "--rounds", str(rounds), "--corpus-root", corpus_root]
        + (["--quick"] if quick else []))
    with open(out) as f:
        return json.load(f)


def targets(res: dict) -> list[dict]:
    rows = []

    def add(name, value, target, ok):
        rows.append({"target": name, "value": None if value is None else round(value, 3),
                     "goal": target, "met": bool(ok) if value is not None else None})

    for t in res.get("standard", []):
        m = t["model"]
        r = t["median_ratios"]
        add(f"standard {m}: classify / bound", r["bulklabel/bound"], ">= 0.9", r["bulklabel/bound"] >= 0.9)
        add(f"standard {m}: classify / tf.data", r["bulklabel/tfdata"], "> 1", r["bulklabel/tfdata"] > 1)
        add(f"standard {m}: classify / tutorial", r["bulklabel/tutorial"], ">= 6", r["bulklabel/tutorial"] >= 6)
    if "phone" in res:
        r = res["phone"]["median_ratios"]
        add("12 MP: classify / bound", r["bulklabel/bound"], ">= 0.85", r["bulklabel/bound"] >= 0.85)
        add("12 MP: classify / tf.data", r["bulklabel/tfdata"], ">= 1.4", r["bulklabel/tfdata"] >= 1.4)
    if "distributed" in res:
        v = res["distributed"]["median_ratio_to_bound"]
        add("distributed steady state / bound", v, ">= 0.9", v >= 0.9)
    if "scaling" in res:
        v = res["scaling"]["median_ratio_two_over_one"]
        add("two single-core workers / one", v, ">= 1.8", v >= 1.8)
    if "memory" in res:
        m = res["memory"]
        add("classify peak RSS, many x / 1x corpus", m["ratio_large_over_small"], "<= 1.2",
            m["ratio_large_over_small"] <= 1.2)
        g = m["worker_rss_growth"]
        add("worker RSS growth over consecutive jobs", g, "< 0.10", g is not None and g < 0.10)
    if "incremental" in res:
        r = res["incremental"]
        exact = r["rerun"]["images"] == r["new"] and r["rerun"]["skipped"] == r["archive"]
        add("incremental re-run labels exactly the new files", 1.0 if exact else 0.0, "= 1", exact)
        add(f"incremental re-run / full run, {r['new']}/{r['archive']} new: seconds",
            r["ratio_rerun_over_full"], "<= 0.1", r["ratio_rerun_over_full"] <= 0.1)
    if "diff" in res:
        d, n = res["diff"]["diff"], res["diff"]["keys"]
        add(f"diff {n} keys vs a {n}-entry index: seconds", d["seconds"], "< 60", d["seconds"] < 60)
        add(f"diff {n} keys vs a {n}-entry index: peak RSS MiB", d["peak_rss_mib"], "< 1024",
            d["peak_rss_mib"] < 1024)
        u = res["diff"]["update"]["bytes_written"]
        add(f"index update, {n}-entry index + a 1,000-image job: bytes written", u, "< 1 MiB", u < 2**20)
    if "producer" in res:
        p = res["producer"]
        add(f"enqueue {p['keys']} keys: seconds", p["seconds"], "< 30", p["seconds"] < 30)
        add(f"enqueue {p['keys']} keys: Redis MiB", p["redis_mib"], "< 300", p["redis_mib"] < 300)
    if "review" in res:
        r = res["review"]
        for size in r["runs"]:
            e, n = size["export"], f"{size['records']:,}"
            add(f"export --review-below {r['below']:g} --sample {r['sample']}, {n} records: seconds / peer script",
                e["ratio_seconds"], "<= 1.0", e["ratio_seconds"] <= 1.0)
        large, small = r["runs"][-1], r["runs"][0]
        n, m = f"{large['records']:,}", f"{small['records']:,}"
        add(f"export, {n} records: peak RSS / peer script", large["export"]["ratio_rss"], "<= 0.5",
            large["export"]["ratio_rss"] <= 0.5)
        same = r["summary"]["same_doubtful"]
        add("export selects the peer script's doubtful images, in its order", 1.0 if same else 0.0, "= 1", same)
        sm = r["summary"]
        add(f"report peak RSS, {n} / {m} records", sm["report_rss_ratio"], "<= 1.5", sm["report_rss_ratio"] <= 1.5)
        add(f"report HTML bytes, {n} / {m} records", sm["report_html_ratio"], "<= 1.2",
            sm["report_html_ratio"] <= 1.2)
        add(f"report, {n} records: seconds", sm["report_seconds_large"], "< 60", sm["report_seconds_large"] < 60)
    if "control_plane" in res:
        c = res["control_plane"]
        s, size = c["summary"], c["default_chunk_size"]
        g = s["gpus_at_default_chunk"]
        add(f"GPUs (3,000 images/s) one Redis can feed at the default chunk size ({size})", g, ">= 500",
            g is not None and g >= 500)
        real = s["gpus_at_default_chunk_real"]
        rows.append({"target": "same, from the real path with Redis nearly idle (an upper bound on its cost)",
                     "value": real, "goal": "(bound)", "met": None})
        once = all(r["checks"]["delivered_once"] and r["checks"]["acked"] and r["checks"]["errors"] == 0
                   and r["checks"]["shards"] == r["chunks"] for r in c["runs"])
        add("control plane: every chunk delivered, labeled, counted and acknowledged once", 1.0 if once else 0.0,
            "= 1", once)
    if "startup" in res:
        from bench import startup as startup_bench

        rows += startup_bench.targets(res["startup"])
    if "gpu" in res:
        g = res["gpu"]
        if "skipped" in g:
            rows.append({"target": "GPU: classify / bound", "value": None, "goal": f"skipped: {g['skipped']}",
                         "met": None})
        for model, s in g.get("summary", {}).items():
            add(f"GPU {model}: classify (JPEG) / bound, best of each", s["ratio"], ">= 0.9", s["ratio"] >= 0.9)
    return rows


def markdown(res: dict) -> str:
    lines = [f"Run {res['started']} on {res['machine']}; {res['rounds']} interleaved rounds, medians.", ""]
    for key in ("standard", "phone"):
        for t in (res.get(key) if isinstance(res.get(key), list) else [res[key]] if key in res else []):
            ips = t["median_images_per_second"]
            lines.append(f"**{key} corpus, {t['model']}** ({t['images']} images; tutorial on a subset)")
            lines.append("")
            lines.append("| pipeline | images/s | ratio of bulklabel to it |")
            lines.append("| --- | ---: | ---: |")
            for name in (n for n in ("bound", "tfdata", "tutorial", "bulklabel") if n in ips):
                ratio = t["median_ratios"].get(f"bulklabel/{name}")
                lines.append(f"| {name} | {ips[name]:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |")
            lines.append("")
    if "review" in res:
        r = res["review"]
        lines.append(f"**review: export --review-below {r['below']:g} --sample {r['sample']} vs the peer script; "
                     f"report** (best of {r['rounds']} for export and peer)")
        lines.append("")
        lines.append("| records | export s | peer s | ratio | export MiB | peer MiB | ratio | report s | report MiB "
                     "| HTML bytes | thumbnails |")
        lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for size in r["runs"]:
            e, p = size["export"], size["report"]
            lines.append(f"| {size['records']:,} | {e['bulklabel']['seconds']:.2f} | {e['peer']['seconds']:.2f} | "
                         f"{e['ratio_seconds']:.2f} | {e['bulklabel']['rss_mib']:.0f} | {e['peer']['rss_mib']:.0f} | "
                         f"{e['ratio_rss']:.2f} | {p['seconds']:.2f} | {p['rss_mib']:.0f} | {p['html_bytes']:,} | "
                         f"{p['thumbnails']} |")
        lines.append("")
    if "startup" in res:
        from bench import startup as startup_bench

        lines += [startup_bench.markdown(res["startup"], with_targets=False).rstrip("\n"), ""]
    lines += ["| target | measured | goal | met |", "| --- | ---: | --- | --- |"]
    for row in res["targets"]:
        lines.append(f"| {row['target']} | {row['value']} | {row['goal']} | "
                     f"{'yes' if row['met'] else 'no' if row['met'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny corpus, one round: checks the suite runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="MobileNetV2,Xception")
    ap.add_argument("--only", default="standard,phone,distributed,scaling,memory,incremental,diff,producer,"
                                      "decode,control-plane,gpu,review",
                    help="comma-separated sections to run (also: startup, not run by default)")
    ap.add_argument("--redis", default=os.environ.get("BULKLABEL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--corpus-root", default=corpus.DEFAULT_ROOT)
    ap.add_argument("--markdown", metavar="FILE", help="also write the summary table here")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    sections = set(args.only.split(","))
    quick = args.quick
    rounds = 1 if quick else args.rounds
    n_std, n_phone = (12, 2) if quick else (600, 100)
    models = ["MobileNetV2"] if quick else args.models.split(",")
    res: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": rounds, "quick": quick,
                 "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}
    work = tempfile.mkdtemp(prefix="bulklabel-bench-")
    try:
        std = corpus.listing(corpus.build("standard", n_std, args.corpus_root))
        if "standard" in sections:
            res["standard"] = [throughput(m, std, rounds, work, 8 if quick else (100 if m == "MobileNetV2" else 30))
                               for m in models]
        if "phone" in sections:  # the tutorial's ratio is a target of the standard corpus only
            phone = corpus.listing(corpus.build("phone", n_phone, args.corpus_root))
            res["phone"] = throughput("MobileNetV2", phone, rounds, work, 2 if quick else 20, tutorial=not quick)
        if sections & {"distributed", "memory", "incremental"}:
            worker = WorkerProc(f"bench-{os.getpid()}", args.redis, "MobileNetV2")  # one, shared
            try:
                worker.wait_ready()
                if "distributed" in sections:
                    res["distributed"] = distributed("MobileNetV2", std, rounds, args.redis, work, worker)
                if "memory" in sections:
                    res["memory"] = memory("MobileNetV2", std, 2 if quick else 10, 2 if quick else 10, args.redis,
                                           work, worker)
                if "incremental" in sections:
                    res["incremental"] = incremental(std, 0.1 if quick else 0.01, args.redis, work, worker)
            finally:
                worker.stop()
        if "scaling" in sections and not quick and shutil.which("taskset") and os.cpu_count() >= 2:
            res["scaling"] = scaling("MobileNetV2", std, max(2, rounds - 1), args.redis, work)
        if "diff" in sections:
            from bench.incremental import run_diff_bench

            res["diff"] = run_diff_bench(20_000 if quick else 1_000_000, 0.01)
        if "producer" in sections:
            res["producer"] = producer(2000 if quick else 1_000_000, args.redis, work)
        if "decode" in sections:
            from bench import decode

            res["decode"] = decode.measure(args.corpus_root, n_std, n_phone)
        if "control-plane" in sections:  # its own Redis; the model is a fixed-cost stand-in (bench.standin)
            from bench import control_plane
            from bulklabel.settings import DEFAULT_CHUNK_SIZE

            if quick:
                res["control_plane"] = control_plane.measure(
                    [1], 1024, [64, DEFAULT_CHUNK_SIZE], idle_seconds=1.0, replay_clients=(2,), replay_seconds=1.0,
                    replay_sizes=[DEFAULT_CHUNK_SIZE])
            else:
                res["control_plane"] = control_plane.measure(
                    [1, 2], 262_144, sorted({256, 1024, 2048, 4096, DEFAULT_CHUNK_SIZE}), rounds=2)
        if "review" in sections:  # export and report on synthetic results files (bench.review)
            res["review"] = review(quick, work)
        if "startup" in sections:  # whole processes, all cores and one core (bench.startup); long
            res["startup"] = startup(quick, rounds, args.corpus_root, work)
        if "gpu" in sections:  # "skipped: no GPU" on a host without one
            from bench import gpu

            res["gpu"] = gpu.measure(["ResNet50"], [64, 128, 256], 2000 if quick else 12_000, args.corpus_root)
            if "skipped" not in res["gpu"]:
                res["gpu"]["summary"] = gpu.summary(res["gpu"])
        res["targets"] = targets(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, time.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "") + ".json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    text = markdown(res)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
