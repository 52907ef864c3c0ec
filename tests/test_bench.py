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
    table = (tmp_path / "summary.md").read_text()
    assert "| bulklabel |" in table and "| target | measured | goal | met |" in table
