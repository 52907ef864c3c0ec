"""The GPU node plan (worker.serving.plan) and ``bulklabel worker --plan``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.serving import plan

from conftest import ROOT


def test_cores_per_gpu_is_decoding_at_the_gpu_rate_plus_the_process_thread():
    # 3,000 images/s × 4 ms = 12 cores of decoding, at 80 % of a core each: 15, plus one for the process
    assert plan.cores_per_gpu(3000, 4.0) == pytest.approx(12 / plan.DECODE_SHARE + 1)
    assert plan.cores_per_gpu(3000, 4.0, share=1.0) == pytest.approx(13)


def test_the_fed_rate_is_the_inverse_of_the_cores_needed():
    for rate, ms in ((3000, 4.4), (800, 24), (12_000, 2.5)):
        assert plan.fed_rate(plan.cores_per_gpu(rate, ms), ms) == pytest.approx(rate)
    assert plan.fed_rate(0.5, 4.0) == 0.0  # not even the process's own core


def test_rates_and_costs_must_be_positive():
    with pytest.raises(ValueError):
        plan.cores_per_gpu(0, 4.0)
    with pytest.raises(ValueError):
        plan.cores_per_gpu(3000, 0)


def test_the_plan_covers_each_kind_of_archive_and_a_mix():
    costs = plan.DecodeCosts(jpeg=4.0, jpeg_12mp=24.0, png=40.0, source="test")
    p = plan.plan(3000, costs)
    by_name = {r.archive: r for r in p.rows}
    assert set(by_name) == {"JPEG photos, 0.4-2 MP", "camera JPEGs, 12 MP", "PNG photos, 0.4-2 MP",
                            "mixed: 7 JPEG to 1 PNG"}
    assert by_name["mixed: 7 JPEG to 1 PNG"].ms_per_image == pytest.approx((7 * 4 + 40) / 8)
    assert by_name["JPEG photos, 0.4-2 MP"].images_per_core == pytest.approx(250)
    assert all(r.fed_per_gpu is None for r in p.rows) and p.cores_per_gpu_here is None
    assert by_name["PNG photos, 0.4-2 MP"].cores_per_gpu > by_name["camera JPEGs, 12 MP"].cores_per_gpu


def test_a_host_plan_says_what_its_cores_per_gpu_decode():
    costs = plan.DecodeCosts(jpeg=4.0, jpeg_12mp=24.0, png=40.0, source="test")
    p = plan.plan(3000, costs, cores=64, gpus=4)  # 16 cores per GPU: 15 decoding at 80 %
    assert p.cores_per_gpu_here == 16
    jpeg = next(r for r in p.rows if r.archive.startswith("JPEG"))
    assert jpeg.fed_per_gpu == pytest.approx(15 * 0.8 * 250)
    text = plan.render(p)
    assert "3,000 images/s" in text and "64 usable cores, 4 GPU process(es)" in text
    assert "enough" in text and "the GPU waits" in text  # JPEGs are fed, 12 MP photos are not
    assert "--mixed-precision" in text and "--decode-threads" in text


def test_the_measured_costs_say_where_they_come_from():
    assert plan.MEASURED.source and 0 < plan.MEASURED.jpeg < plan.MEASURED.jpeg_12mp < plan.MEASURED.png


def _worker(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKLABEL_")}
    return subprocess.run([sys.executable, "-m", "bulklabel", "worker", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_worker_plan_prints_the_plan_and_exits_without_a_model():
    r = _worker("--plan", "--gpu-rate", "5000", "--gpus", "0,1")
    assert r.returncode == 0, r.stderr
    assert "one GPU labeling 5,000 images/s" in r.stdout and "JPEG photos, 0.4-2 MP" in r.stdout
    assert "2 GPU process(es)" in r.stdout  # this host's cores, shared by the GPUs --gpus names
    assert "cores per GPU" in r.stdout


def test_worker_without_a_model_or_a_plan_is_a_usage_error():
    r = _worker("--gpus", "none")
    assert r.returncode == 2 and "--model" in r.stderr
    r = _worker("--plan", "--gpu-rate", "0")
    assert r.returncode == 2 and "--gpu-rate" in r.stderr
