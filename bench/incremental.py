"""The label index at scale (issue 10): ``python -m bench.incremental [--keys N] [--new F] [--json OUT]``.

Builds an index of ``--keys`` entries in a temporary local destination the way one grows
(a large first job, then nightly jobs, compacted as it goes), then measures in another
process (peak RSS from the kernel) what ``submit --incremental`` does: load the index and
filter a listing of ``--keys`` (source, fingerprint) pairs, a fraction ``--new`` of them new
or changed. The counts are checked exactly. Last, it adds a 1,000-entry job and counts the
bytes that writes. Prints one JSON line; ``run_diff_bench`` returns the same dict.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from bench import save_json

MODEL = "keras:MobileNetV2@bench"
UPDATE = 1000
TARGETS = {"seconds": 60.0, "peak_rss_mib": 1024.0}


def source(i: int) -> str:
    return f"/archive/photos/2026/{i // 1000:04d}/IMG_{i:08d}.jpg"


def fingerprint(i: int, changed: bool = False) -> str:
    return f"{100_000 + i * 37 % 9_000_000}:{1_760_000_000_000_000_000 + i * 1_000_003 + changed}"


def stride(new_fraction: float) -> int:
    return max(1, round(1 / new_fraction)) if new_fraction > 0 else 0


def listing(keys: int, new_fraction: float):
    """``keys`` pairs; every ``stride``-th one is new: alternately a changed file (same source,
    new fingerprint) and a file never seen (a source outside the index)."""
    every = stride(new_fraction)
    for i in range(keys):
        if every and i % every == 0:
            yield (source(i), fingerprint(i, True)) if (i // every) % 2 else (source(keys + i), fingerprint(keys + i))
        else:
            yield source(i), fingerprint(i)


def expected_new(keys: int, new_fraction: float) -> int:
    every = stride(new_fraction)
    return len(range(0, keys, every)) if every else 0


class Counting:
    """A storage that counts what is written and deleted."""

    def __init__(self, inner):
        self.inner, self.bytes, self.writes, self.deletes = inner, 0, 0, 0

    def write(self, key, data):
        self.bytes, self.writes = self.bytes + len(data), self.writes + 1
        self.inner.write(key, data)

    def delete(self, key):
        self.deletes += 1
        self.inner.delete(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def build(root: str, keys: int) -> dict:
    """The index of sources 0..keys-1: a first job of 70%, then 30 nightly jobs."""
    from bulklabel.index import LabelIndex, digest_pairs
    from bulklabel.storage.local import LocalStorage

    start = time.perf_counter()
    index = LabelIndex(LocalStorage(root), MODEL)
    first = int(keys * 0.7)
    bounds = [0, first] + [first + (keys - first) * (n + 1) // 30 for n in range(30)]
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        digests = digest_pairs([source(i) for i in range(lo, hi)], [fingerprint(i) for i in range(lo, hi)])
        index.write_segment([f"job-{n:03d}"], digests)
    names = sorted(os.listdir(os.path.join(root, index.prefix)))
    return {"seconds": round(time.perf_counter() - start, 2), "segments": len(names),
            "segment_entries": sorted((int(n.rsplit("-", 1)[1].split(".")[0]) for n in names), reverse=True),
            "bytes": sum(os.path.getsize(os.path.join(root, index.prefix, n)) for n in names)}


def child(root: str, keys: int, new_fraction: float) -> dict:
    """The measured part, in its own process: load, then filter the whole listing."""
    from bulklabel.index import LabelIndex, Skipper
    from bulklabel.storage.local import LocalStorage

    baseline = _vm_hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    view = LabelIndex(LocalStorage(root), MODEL).load()
    loaded = time.perf_counter()
    skipper = Skipper(view)
    new = sum(1 for _ in skipper.filter(listing(keys, new_fraction)))
    done = time.perf_counter()
    sum(1 for _ in listing(keys, new_fraction))
    return {"seconds": done - start, "load_s": loaded - start, "filter_s": done - loaded,
            "listing_alone_s": time.perf_counter() - done, "entries": len(view), "segments": len(view.segments),
            "skipped": skipper.skipped, "new": new, "baseline_rss_mib": baseline, "peak_rss_mib": _vm_hwm()}


def _vm_hwm() -> float | None:
    """This process's own peak RSS (MiB). Unlike ``ru_maxrss``, which a child inherits from the
    parent it was forked from, ``VmHWM`` starts afresh at exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_child(cmd: list[str]) -> tuple[dict, float, float]:
    """Like ``bench.run.run``: wait4 gives the child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({code}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024


def update(root: str, keys: int) -> dict:
    """Add one job of ``UPDATE`` new entries; what it writes and deletes."""
    from bulklabel.index import LabelIndex, digest_pairs
    from bulklabel.storage.local import LocalStorage

    store = Counting(LocalStorage(root))
    ids = range(3 * keys, 3 * keys + UPDATE)
    digests = digest_pairs([source(i) for i in ids], [fingerprint(i) for i in ids])
    start = time.perf_counter()
    LabelIndex(store, MODEL).write_segment(["tonight"], digests)
    seconds = time.perf_counter() - start
    view = LabelIndex(LocalStorage(root), MODEL).load()
    assert len(view) == keys + UPDATE and "tonight" in view.jobs, (len(view), keys + UPDATE)
    return {"entries": UPDATE, "bytes_written": store.bytes, "files_written": store.writes,
            "files_deleted": store.deletes, "seconds": round(seconds, 3), "segments_after": len(view.segments)}


def run_diff_bench(keys: int = 1_000_000, new_fraction: float = 0.01) -> dict:
    """Build the index, measure the diff in a fresh process, then an update; checks exact counts."""
    root = tempfile.mkdtemp(prefix="bulklabel-index-bench-")
    try:
        # Each step in its own process: Linux carries a process's peak RSS across fork and exec,
        # so the measured child must start from a parent that never held the index being built.
        index, _, _ = run_child([sys.executable, "-m", "bench.incremental", "--build", root, "--keys", str(keys)])
        res, wall, rss = run_child([sys.executable, "-m", "bench.incremental", "--child", root,
                                    "--keys", str(keys), "--new", str(new_fraction)])
        new = expected_new(keys, new_fraction)
        if (res["entries"], res["new"], res["skipped"]) != (keys, new, keys - new):
            raise AssertionError(f"wrong diff: {res} (expected {new} new, {keys - new} skipped of {keys})")
        diff = {"seconds": round(res["seconds"], 2), "load_s": round(res["load_s"], 2),
                "filter_s": round(res["filter_s"], 2), "listing_alone_s": round(res["listing_alone_s"], 2),
                "process_seconds": round(wall, 2), "peak_rss_mib": round(res["peak_rss_mib"] or rss, 1),
                "baseline_rss_mib": round(res["baseline_rss_mib"], 1), "skipped": res["skipped"], "new": res["new"]}
        result = {"keys": keys, "new_fraction": new_fraction, "index": index, "diff": diff,
                  "update": update(root, keys)}
        result["met"] = {"seconds < 60": diff["seconds"] < TARGETS["seconds"],
                         "peak RSS < 1 GiB": diff["peak_rss_mib"] < TARGETS["peak_rss_mib"],
                         "update writes < 1 MiB": result["update"]["bytes_written"] < 2**20}
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000, help="index entries and listing pairs")
    ap.add_argument("--new", type=float, default=0.01, help="fraction of the listing that is new or changed")
    ap.add_argument("--json", metavar="OUT", help="also write the result here")
    ap.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    ap.add_argument("--build", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        print(json.dumps(build(args.build, args.keys)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.keys, args.new)))
        return
    result = run_diff_bench(args.keys, args.new)
    save_json(result, args.json)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
