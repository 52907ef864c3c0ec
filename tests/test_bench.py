"""The benchmark suite runs end to end on a tiny corpus (performance itself is judged by
the benchmark, never by timed unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bulklabel.settings import DEFAULT_CHUNK_SIZE

from conftest import ROOT
from services import RedisServer

pytestmark = pytest.mark.slow


def test_benchmark_runs_on_a_tiny_corpus(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
        result = subprocess.run(
            [sys.executable, "-m", "bench.run", "--quick", "--corpus-root", str(tmp_path / "corpus"),
             "--results", str(tmp_path / "results"), "--redis", server.url,
             "--markdown", str(tmp_path / "summary.md")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr[-4000:]
    (path,) = (tmp_path / "results").glob("*-quick.json")
    res = json.loads(path.read_text())
    standard = res["standard"][0]
    assert standard["images"] == 12
    assert set(standard["median_images_per_second"]) == {"bound", "tfdata", "tutorial", "bulklabel"}
    assert all(v > 0 for v in standard["median_images_per_second"].values())
    assert standard["runs"]["bulklabel"][0]["errors"] == 0
    assert res["phone"]["images"] == 2 and set(res["phone"]["median_images_per_second"]) == {
        "bound", "tfdata", "bulklabel"}
    inc = res["incremental"]
    assert inc["full"]["images"] == 12 and inc["new"] == 1
    assert inc["rerun"]["images"] == 1 and inc["rerun"]["skipped"] == 12
    assert res["diff"]["keys"] == 20_000 and res["diff"]["diff"]["skipped"] == 19_800
    assert res["distributed"]["jobs"][0]["images"] == 12
    assert len(res["memory"]["worker_rss_mib_after_each_job"]) == 2
    assert res["producer"]["keys"] == 2000 and res["producer"]["redis_mib"] > 0
    names = {row["target"] for row in res["targets"]}
    assert "standard MobileNetV2: classify / bound" in names and "distributed steady state / bound" in names
    assert "incremental re-run labels exactly the new files" in names
    # the control plane: a stand-in model, the real worker path, its own Redis
    cp = res["control_plane"]
    assert cp["model"].startswith("fixed-cost stand-in") and cp["default_chunk_size"] == DEFAULT_CHUNK_SIZE
    assert {r["chunk_size"] for r in cp["runs"]} == {64, DEFAULT_CHUNK_SIZE}
    for run in cp["runs"]:
        assert run["images"] == 1024 and run["checks"]["errors"] == 0 and run["checks"]["shards"] == run["chunks"]
        assert run["checks"]["delivered_once"] and run["checks"]["acked"]
        assert run["commands_per_chunk"] > 10 and run["redis_cpu_ms_per_chunk_raw"] > 0
        assert run["client_side_ms"]["start_chunk"]["n"] == run["chunks"] == run["add_chunk_ms"]["n"]
    assert cp["timing_pass"]["server_side"]["complete_chunk"]["n"] >= 1
    (replay,) = cp["replay"]
    assert replay["chunks"] > 0 and replay["chunk_size"] == DEFAULT_CHUNK_SIZE
    assert cp["summary"]["gpus_at_default_chunk"] > 0
    assert f"GPUs (3,000 images/s) one Redis can feed at the default chunk size ({DEFAULT_CHUNK_SIZE})" in names
    assert "control plane: every chunk delivered, labeled, counted and acknowledged once" in names
    # decode costs of this machine; the GPU section skips itself without a GPU
    assert res["decode"]["kinds"]["jpeg"]["224"]["ms_mean"] > 0 and res["decode"]["kinds"]["jpeg_12mp"]["images"] == 2
    assert res["gpu"] == {"skipped": "no GPU"} or res["gpu"]["bound"]
    # export (vs the hand-written script) and report on synthetic results files
    review = res["review"]
    assert review["sizes"] == [5000, 20000] and review["summary"]["same_doubtful"]
    for size in review["runs"]:
        check = size["export"]["check"]
        assert check["same_doubtful_tasks"] and check["sampled"] == check["peer_sampled"] == 1000
        assert check["sample_valid"] and check["doubtful"] > 0
        assert size["report"]["images_in_page"] > 0 and size["report"]["html_bytes"] > 0
    assert "export selects the peer script's doubtful images, in its order" in names
    table = (tmp_path / "summary.md").read_text()
    assert "| bulklabel |" in table and "| target | measured | goal | met |" in table
    assert "| 20,000 |" in table


def test_startup_benchmark_runs_on_a_tiny_corpus(tmp_path):
    """bench.startup --quick: whole processes, small and large job, all cores and (with taskset)
    one core; then its section in bench.run's targets and tables."""
    import shutil

    from bench import run as bench_run

    out, md = tmp_path / "startup.json", tmp_path / "startup.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.startup", "--quick", "--corpus-root", str(tmp_path / "corpus"),
         "--json", str(out), "--markdown", str(md)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    res = json.loads(out.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == res
    assert res["quick"] and res["rounds"] == 1 and res["pipelines"] == ["tfdata", "bulklabel"]
    regimes = res["regimes"]
    assert set(regimes) == {"all", "one"}
    if shutil.which("taskset"):
        assert regimes["one"]["cpus"] == 1 and regimes["one"]["pin"] is not None
    else:
        assert regimes["one"]["skipped"] == "taskset not found"
    live = [r for r in regimes.values() if "skipped" not in r]
    assert regimes["all"] in live and regimes["all"]["pin"] is None
    for regime in live:
        (case,) = regime["cases"].values()
        assert case["model"] == "MobileNetV2" and (case["small"], case["large"]) == (4, 384)
        assert case["corpus_images"] == 12 and case["finish"] == "small"
        assert set(case["pipelines"]) == {"tfdata", "bulklabel"}
        for p in case["pipelines"].values():
            assert 0 < p["small_seconds"] and 0 < p["large_seconds"] and p["peak_rss_mib"] > 0
            assert p["marginal_images_per_second"] > 0 and p["fixed_seconds"] is not None
            (one,) = p["rounds"]
            assert one["small"]["seconds"] == p["small_seconds"] and one["large"]["seconds"] == p["large_seconds"]
        ratios = case["ratios"]["bulklabel/tfdata"]
        assert ratios["marginal"] > 0 and ratios["small_seconds"] > 0 and ratios["large_seconds"] > 0
    names = {row["target"] for row in res["targets"]}
    assert "start-up, all cores, MobileNetV2: marginal rate / tf.data" in names
    assert "start-up, all cores, MobileNetV2: 4-image job seconds / tf.data" in names
    table = md.read_text()
    assert "| pipeline | start-up job (4 images) | marginal rate | whole job (384 images) |" in table
    assert "| bulklabel/tf.data |" in table and "| target | measured | goal | met |" in table
    # as bench.run's section (--only startup)
    full = {"started": res["started"], "machine": res["machine"], "rounds": 1, "startup": res}
    full["targets"] = bench_run.targets(full)
    assert [r for r in full["targets"] if r["target"].startswith("start-up")] == res["targets"]
    text = bench_run.markdown(full)
    assert "| pipeline | start-up job (4 images) |" in text and text.count("| target | measured | goal | met |") == 1
