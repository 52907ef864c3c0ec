"""The streaming engine: correct labels, one record per image in order, one trace, flat memory."""

from __future__ import annotations

import gc
import itertools
import time
import tracemalloc

import numpy as np
import pytest

from bulklabel.options import EngineOptions, ModelOptions
from bulklabel.storage import open_reader
from worker.inference.engine import Engine
from worker.inference.models import load_model

from conftest import CLASSES, color_photo, encoded


@pytest.fixture(scope="module")
def model(color_model):
    return load_model(color_model.keras_path)


def _run(engine, sources):
    out = []
    stats = engine.run(sources, out.extend)
    return out, stats


def test_labels_every_format_correctly_in_input_order(model, color_folder):
    folder, truth = color_folder
    engine = Engine(model, open_reader(), EngineOptions(batch_size=4, top_k=2))
    sources = sorted(truth)
    records, stats = _run(engine, sources)
    assert [r["source"] for r in records] == sources
    assert {r["source"]: r["label"] for r in records} == truth
    assert stats.images == len(truth) and stats.errors == 0
    for r in records:
        assert r["error"] is None and r["model"] == model.model_id
        assert len(r["top_k"]) == 2 and r["top_k"][0] == {"label": r["label"], "score": r["score"]}
        assert r["top_k"][0]["score"] >= r["top_k"][1]["score"]
        assert 0.5 < r["score"] <= 1.0


def test_bad_files_get_error_records_and_the_job_goes_on(model, tmp_path):
    rng = np.random.default_rng(3)
    good = [tmp_path / f"g{i}.jpg" for i in range(5)]
    for i, p in enumerate(good):
        p.write_bytes(encoded(color_photo(CLASSES[i % 3], rng)))
    data = encoded(color_photo("red", rng))
    bad = {
        tmp_path / "empty.jpg": b"",
        tmp_path / "text.png": b"hello, not an image",
        tmp_path / "cut.jpg": data[: len(data) // 2],
    }
    for p, content in bad.items():
        p.write_bytes(content)
    missing = tmp_path / "missing.jpg"
    sources = [str(good[0]), str(tmp_path / "empty.jpg"), str(good[1]), str(missing),
               str(tmp_path / "text.png"), str(good[2]), str(tmp_path / "cut.jpg"), str(good[3]),
               str(good[4])]
    records, stats = _run(Engine(model, open_reader(), EngineOptions(batch_size=2)), sources)
    assert [r["source"] for r in records] == sources
    reasons = {r["source"]: r["error"] for r in records if r["error"]}
    assert "empty" in reasons[str(tmp_path / "empty.jpg")]
    assert "not a decodable image" in reasons[str(tmp_path / "text.png")]
    assert "truncated" in reasons[str(tmp_path / "cut.jpg")]
    assert reasons[str(missing)] == "file not found"
    assert stats.errors == 4 and stats.images == 9
    for r in records:
        if r["error"]:
            assert r["label"] is None and r["score"] is None and r["top_k"] == []
        else:
            assert r["label"] in CLASSES


def test_only_errors_are_emitted_without_waiting_for_a_batch(model, tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"bad{i}.jpg"
        p.write_bytes(b"junk")
        paths.append(str(p))
    batches = []
    Engine(model, open_reader(), EngineOptions(batch_size=64)).run(paths, batches.append)
    assert sum(len(b) for b in batches) == 5 and all(r["error"] for b in batches for r in b)


def test_one_trace_for_many_batches_with_a_ragged_tail(model, tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "one.png"
    path.write_bytes(encoded(color_photo("green", rng), "PNG"))
    engine = Engine(model, open_reader(), EngineOptions(batch_size=8))
    engine.warmup()
    assert engine.predictor.computed == 8  # the warm-up batch
    for n in (8, 21, 3, 17):  # full batches, ragged tails, a tiny job
        before = engine.predictor.computed
        records, _ = _run(engine, [str(path)] * n)
        assert len(records) == n and {r["label"] for r in records} == {"green"}
        assert engine.predictor.computed - before == n  # a tail computes its own images, no padding
    assert engine.predictor.traces == 1


def test_a_model_with_a_fixed_batch_size_is_padded_to_it(tmp_path):
    import keras

    inputs = keras.Input((16, 16, 3), batch_size=4)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model_file = tmp_path / "fixed.keras"
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(model_file)
    loaded = load_model(str(model_file), ModelOptions(preprocess="none"))
    assert loaded.fixed_batch == 4
    path = tmp_path / "one.png"
    path.write_bytes(encoded(color_photo("green", np.random.default_rng(1)), "PNG"))
    engine = Engine(loaded, open_reader(), EngineOptions(batch_size=4))
    records, _ = _run(engine, [str(path)] * 6)
    assert len(records) == 6 and all(r["label"] in ("0", "1") for r in records)
    assert engine.predictor.computed == 8 and engine.predictor.traces == 1


def test_model_is_never_called_per_image(model, tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    path = tmp_path / "one.jpg"
    path.write_bytes(encoded(color_photo("blue", rng)))
    engine = Engine(model, open_reader(), EngineOptions(batch_size=16))
    calls = []
    original = engine.predictor.predict
    monkeypatch.setattr(engine.predictor, "predict", lambda b, n=None: calls.append(n) or original(b, n))
    _run(engine, [str(path)] * 40)
    assert calls == [16, 16, 8]


def test_stage_times_are_measured(model, color_folder):
    folder, truth = color_folder
    _, stats = _run(Engine(model, open_reader(), EngineOptions(batch_size=4)), sorted(truth))
    assert stats.stages["decode"] > 0 and stats.stages["predict"] > 0 and stats.stages["read"] > 0
    assert "decode" in stats.profile() and stats.rate > 0


def _peak_bytes(engine, source: str, n: int) -> int:
    gc.collect()
    tracemalloc.start()
    count = 0

    def sink(records):
        nonlocal count
        count += len(records)

    engine.run(itertools.repeat(source, n), sink)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    return peak


def test_memory_stays_flat_whatever_the_job_size(model, tmp_path):
    """A 4x longer job must not use more memory: the listing is consumed lazily, records
    are handed off per batch and at most a bounded number of images are in flight."""
    rng = np.random.default_rng(5)
    path = tmp_path / "big.jpg"
    path.write_bytes(encoded(color_photo("red", rng, (600, 800))))
    engine = Engine(model, open_reader(), EngineOptions(batch_size=16))
    engine.warmup()
    _peak_bytes(engine, str(path), 64)  # settle caches
    small = _peak_bytes(engine, str(path), 300)
    large = _peak_bytes(engine, str(path), 1200)
    assert large < small * 1.3 + 1_000_000, (small, large)


def test_a_prefetched_head_gives_the_same_records_whatever_size_was_guessed(model, color_folder, tmp_path):
    from worker.inference.prefetch import Prefetch

    folder, truth = color_folder
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    sources = sorted(truth) + [str(bad)]
    options = EngineOptions(batch_size=4, top_k=2)
    plain, _ = _run(Engine(model, open_reader(), options), sources)
    for size in (model.input_size, (model.input_size[0] + 8, model.input_size[1])):  # right, then wrong
        head = Prefetch(iter(sources), size, model.channels, options.max_pixels, open_reader(), 5, 2)
        deadline = time.monotonic() + 30
        while len(head.head) < 5 and time.monotonic() < deadline:  # the feeder stops at the limit
            time.sleep(0.01)
        time.sleep(0.05)
        assert [s for s, _ in head.head] == sources[:5]
        out = []
        stats = Engine(model, open_reader(), options).run(head.rest, out.extend, prefetched=head)
        assert out == plain and stats.images == len(sources) and stats.errors == 1
        assert stats.stages["decode"] > 0 and stats.first_batch is not None


class _SlowReader:
    """A reader that takes ``delay`` seconds a file: the handover comes while the head is listed."""

    def __init__(self, delay: float):
        self.inner, self.delay, self.reads = open_reader(), delay, []

    def read(self, source):
        time.sleep(self.delay)
        self.reads.append(source)
        return self.inner.read(source)


def test_a_handover_mid_listing_loses_and_repeats_nothing(model, color_folder):
    from worker.inference.prefetch import Prefetch

    folder, truth = color_folder
    sources = sorted(truth) * 6
    options = EngineOptions(batch_size=4, top_k=1)
    reader = _SlowReader(0.02)
    head = Prefetch(iter(sources), model.input_size, model.channels, options.max_pixels, reader, 1000, 1)
    time.sleep(0.1)  # a few read ahead, most not yet listed
    out = []
    stats = Engine(model, open_reader(), options).run(head.rest, out.extend, prefetched=head)
    ahead = len(head.head)
    assert 0 < ahead < len(sources)
    assert [r["source"] for r in out] == sources and stats.images == len(sources)
    assert sorted(reader.reads) == sorted(sources[:ahead])  # the head was read once, by the prefetch


def test_a_listing_that_fails_while_reading_ahead_fails_the_job(model, color_folder):
    from worker.inference.prefetch import Prefetch

    folder, truth = color_folder

    def listing():
        yield from sorted(truth)[:2]
        raise OSError("listing the bucket failed: AccessDenied")

    head = Prefetch(listing(), model.input_size, model.channels, 10**8, open_reader(), 100, 1)
    with pytest.raises(OSError, match="AccessDenied"):
        Engine(model, open_reader(), EngineOptions(batch_size=4)).run(head.rest, lambda r: None, prefetched=head)


def test_how_much_is_decoded_ahead_and_on_how_many_threads():
    from worker.inference.prefetch import AHEAD_BYTES, ahead_limit, ahead_threads

    assert ahead_limit((224, 224), 3, 32) == 256                    # 8 batches fit in the budget
    assert ahead_limit((400, 400), 3, 32) == AHEAD_BYTES // (400 * 400 * 3) == 139  # the budget binds
    assert ahead_limit((4000, 4000), 3, 32) == 64                   # never fewer than 2 batches
    assert ahead_threads(2, 2) == 1 and ahead_threads(8, 8) == 7      # one core starts TensorFlow
    assert ahead_threads(2, 1) == 1 and ahead_threads(1, 16) == 1     # at least one; never more than asked


def test_the_expected_input_is_told_without_tensorflow(color_model):
    from bulklabel.options import ModelOptions
    from worker.inference.prefetch import expected_input

    assert expected_input("keras:Xception", ModelOptions()) == ((299, 299), 3)
    assert expected_input("keras:MobileNetV2", ModelOptions()) == ((224, 224), 3)
    assert expected_input(color_model.keras_path, ModelOptions()) == ((32, 32), 3)  # from its metadata
    assert expected_input(color_model.bare_path, ModelOptions()) is None            # none: load to know
    assert expected_input(color_model.bare_path, ModelOptions(image_size=(40, 40))) == ((40, 40), 3)


def test_decode_threads_run_at_low_priority_unless_asked(model, color_folder):
    import os
    import threading

    folder, truth = color_folder
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    class Recording:
        def __init__(self):
            self.inner, self.seen = open_reader(), set()

        def read(self, location):
            self.seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            return self.inner.read(location)

    for priority, expected in (("low", min(19, mine + 10)), ("normal", mine)):
        reader = Recording()
        Engine(model, reader, EngineOptions(batch_size=4, decode_priority=priority)).run(sorted(truth), list)
        assert reader.seen == {expected}, priority
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's thread is untouched


def test_auto_decode_priority_follows_the_bottleneck():
    from worker.inference.engine import DecodePools

    pools = DecodePools(1, "auto", batch_size=4)
    try:
        assert pools.mode == "normal"   # filling the pipeline: decoding goes first
        pools.observe(ready=4)          # a batch decoded ahead: the model is the bottleneck
        assert pools.mode == "low"
        pools.observe(ready=3)          # less than a batch ready: decoding is behind
        assert pools.mode == "normal"
        pools.observe(ready=9)
        assert pools.mode == "low" and pools.low_batches == 2
        fixed = DecodePools(1, "normal", batch_size=4)
        fixed.observe(ready=9)
        assert fixed.mode == "normal"
        fixed.shutdown()
    finally:
        pools.shutdown()
