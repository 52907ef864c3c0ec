"""The label index (bulklabel.index): digests, segments, compaction, catch-up and skipping,
on real in-memory, local and (once) S3 storage."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulklabel.chunks import shard_key
from bulklabel.index import (
    INDEX_DIR,
    DigestSet,
    IndexView,
    LabelIndex,
    Skipper,
    catch_up,
    compaction,
    digest_pairs,
    index_job,
    job_folders,
    model_key,
    segment,
)
from bulklabel.index.digests import DIGEST, sorted_unique
from bulklabel.records import failure, prediction
from bulklabel.storage import open_storage
from bulklabel.storage.local import LocalStorage
from bulklabel.storage.memory import MemoryStorage

MODEL = "color@1a2b3c4d5e6f"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def random_digests(n: int, seed: int = 0) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(16 * n), DIGEST)


def as_set(digests: np.ndarray) -> set[bytes]:
    raw = np.ascontiguousarray(digests).tobytes()
    return {raw[i:i + 16] for i in range(0, len(raw), 16)}


def segments(storage, model: str = MODEL) -> list[str]:
    return list(storage.list(f"{INDEX_DIR}/{model_key(model)}/"))


class Watched:
    """A storage that counts the bytes written and can run a hook before a read."""

    def __init__(self, inner):
        self.inner = inner
        self.written: dict[str, int] = {}
        self.deleted: list[str] = []
        self.before_read = None

    def read(self, key):
        if self.before_read:
            hook, self.before_read = self.before_read, None
            hook(key)
        return self.inner.read(key)

    def write(self, key, data):
        self.written[key] = len(data)
        self.inner.write(key, data)

    def delete(self, key):
        self.deleted.append(key)
        self.inner.delete(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(params=["memory", "local"])
def storage(request, tmp_path: Path):
    return MemoryStorage() if request.param == "memory" else LocalStorage(tmp_path / "dest")


def record(source: str, fingerprint: str | None, model: str = MODEL, error: str | None = None) -> dict:
    rec = failure(source, model, error) if error else prediction(source, model, [("red", 0.9), ("blue", 0.1)])
    if fingerprint is not ...:
        rec["fingerprint"] = fingerprint
    return rec


def write_shard(storage, job_id: str, chunk: int, records: list[dict]) -> None:
    storage.write(shard_key(job_id, chunk), b"".join(json.dumps(r).encode() + b"\n" for r in records))


def write_job(storage, job_id: str, n: int, start: int = 0, chunk_size: int = 250, model: str = MODEL) -> None:
    for c, first in enumerate(range(start, start + n, chunk_size)):
        write_shard(storage, job_id, c, [record(f"/photos/{i:06d}.jpg", f"{i}:1", model)
                                         for i in range(first, min(start + n, first + chunk_size))])
    storage.write(f"{job_id}/_SUCCESS", b"{}")


# --- names and digests ----------------------------------------------------------------------------


def test_model_key_examples() -> None:
    assert model_key("color@1a2b3c4d5e6f") == "color@1a2b3c4d5e6f"
    key = model_key("keras:Xception@abc")
    assert key == "keras_Xception@abc-" + hashlib.sha256(b"keras:Xception@abc").hexdigest()[:8]
    assert model_key("keras:Xception@abc") == key  # stable
    assert model_key("keras/Xception@abc") != key  # the same after replacing, told apart by the hash
    assert model_key("_index")[0] not in "_.-" and model_key(".x")[0] not in "_.-" and model_key("")


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_model_key_is_safe(model_id: str) -> None:
    key = model_key(model_id)
    assert re.fullmatch(r"[A-Za-z0-9@][A-Za-z0-9._@-]*", key) and len(key) <= 120
    assert key == model_key(model_id)


def test_digest_pairs_is_blake2b_of_source_nul_fingerprint() -> None:
    sources, prints = ["/a/b.jpg", "s3://bucket/été.png", "/a/b.jpg"], ["10:20", "etag:5", "10:21"]
    got = digest_pairs(sources, prints)
    assert got.dtype == np.dtype("S16") and len(got) == 3
    for digest, s, f in zip(np.ascontiguousarray(got).view(np.uint8).reshape(-1, 16), sources, prints):
        assert bytes(digest) == hashlib.blake2b(s.encode() + b"\0" + f.encode(), digest_size=16).digest()
    assert len(digest_pairs([], [])) == 0
    with pytest.raises(ValueError):
        digest_pairs(["a"], [])


# Random digests, and digests that share their first 8 bytes (ties for the integer search).
DIGESTS = st.one_of(st.binary(min_size=16, max_size=16),
                    st.builds(lambda head, tail: head + tail, st.sampled_from([bytes(8), b"\x01" * 8]),
                              st.binary(min_size=8, max_size=8)))


@given(st.lists(st.lists(DIGESTS, max_size=60), max_size=25))
@SETTINGS
def test_digest_set_is_a_set(batches: list[list[bytes]]) -> None:
    model: set[bytes] = set()
    ds = DigestSet()
    for batch in batches:
        added = ds.add(np.frombuffer(b"".join(batch), DIGEST))
        assert added == len(set(batch) - model)
        model |= set(batch)
        assert len(ds) == len(model)
    runs = ds.runs
    assert len(runs) <= math.log2(max(len(model), 1)) + 1
    for run in runs:
        assert list(run) == sorted(set(run))
    assert sum(len(r) for r in runs) == len(as_set(np.concatenate(runs))) if runs else True
    assert as_set(ds.to_array()) == model and list(ds.to_array()) == sorted(ds.to_array())
    probes = [b for batch in batches for b in batch[:3]] + [bytes(16), b"\xff" * 16, b"a\0b" + bytes(13)]
    mask = ds.contains(np.frombuffer(b"".join(probes), DIGEST))
    assert list(mask) == [p in model for p in probes]


def test_digest_set_trailing_and_embedded_zero_bytes() -> None:
    a, b = b"\x01" + bytes(15), b"\x01\x00\x02" + bytes(13)
    ds = DigestSet([np.frombuffer(a, DIGEST)])
    assert list(ds.contains(np.frombuffer(a + b, DIGEST))) == [True, False]


def test_digest_set_shared_high_words() -> None:
    head = b"\x7f" * 8
    members = [head + bytes([i]) * 8 for i in range(0, 200, 2)]
    ds = DigestSet([np.frombuffer(b"".join(members), DIGEST), random_digests(1000)])
    probes = [head + bytes([i]) * 8 for i in range(200)]
    assert list(ds.contains(np.frombuffer(b"".join(probes), DIGEST))) == [i % 2 == 0 for i in range(200)]


# --- segments --------------------------------------------------------------------------------------


def test_segment_round_trip_and_damage() -> None:
    digests = random_digests(100)
    data = segment.encode(MODEL, ["j2", "j1", "j1"], np.concatenate([digests, digests[:10]]), replaces=["x"])
    seg = segment.decode("s", data)
    assert seg.model == MODEL and seg.jobs == ("j1", "j2") and seg.replaces == ("x",)
    assert seg.entries == 100 and as_set(seg.digests) == as_set(digests)
    damaged = {
        "not a label index segment": b"PK\x03\x04" + data[4:],
        "truncated before": data[:8],
        "runs past the end": data[:9] + b"\xff\xff\xff\x00" + data[13:],
        "but 1584 bytes": data[:-16],
        "checksum": data[:-1] + bytes([data[-1] ^ 1]),
        "header is not JSON": data.replace(b'{"model"', b'{"model!'),
    }
    for reason, bad in damaged.items():
        with pytest.raises(segment.SegmentError, match=reason):
            segment.decode("s", bad)
    empty = segment.decode("e", segment.encode(MODEL, ["j"], np.empty(0, DIGEST)))
    assert empty.entries == 0 and empty.jobs == ("j",)


def test_compaction_plan() -> None:
    assert compaction.plan([]) == [] and compaction.plan([("a", 5)]) == []
    assert sorted(compaction.plan([("big", 10_000_000), ("a", 1000), ("b", 1000)])) == ["a", "b"]
    assert compaction.plan([("big", 10_000_000), ("new", 1000)]) == []
    assert sorted(compaction.plan([("e1", 0), ("e2", 0), ("big", 1_000_000)])) == ["e1", "e2"]
    assert sorted(compaction.plan([("a", 5_000), ("b", 10_000), ("c", 1000)])) == ["a", "b", "c"]
    # geometric sizes stay apart, until there are too many of them
    tiers = [(f"s{i}", 10_000 * 3 ** i) for i in range(8)]
    assert compaction.plan(tiers) == []
    assert compaction.plan([*tiers, ("s8", 10_000 * 3 ** 8)]) == ["s0", "s1"]


# --- the index in storage --------------------------------------------------------------------------


def test_write_load_round_trip(storage) -> None:
    index = LabelIndex(storage, MODEL)
    empty = index.load()
    assert len(empty) == 0 and empty.jobs == set() and isinstance(empty, IndexView)
    a, b = random_digests(3000, 1), random_digests(500, 2)
    key = index.write_segment(["job-a"], a)
    assert key.startswith(f"{INDEX_DIR}/{model_key(MODEL)}/seg-") and key.endswith("-3000.bin")
    index.write_segment(["job-b"], np.concatenate([b, a[:100]]))
    view = index.load()
    assert view.jobs == {"job-a", "job-b"} and len(view) == 3500
    probe = np.concatenate([a[:7], random_digests(5, 3), b[-2:]])
    assert list(view.contains(probe)) == [True] * 7 + [False] * 5 + [True] * 2
    assert len(LabelIndex(storage, "other@1").load()) == 0  # one index per model


def test_compaction_keeps_segments_few_and_entries_all(storage) -> None:
    index = LabelIndex(storage, MODEL)
    written: set[bytes] = set()
    for i in range(40):
        d = random_digests([10, 1000, 3000, 0][i % 4] * (1 + i // 10), 100 + i)
        written |= as_set(d)
        index.write_segment([f"job-{i}"], d)
    view = index.load()
    assert len(view) == len(written) and view.jobs == {f"job-{i}" for i in range(40)}
    assert view.contains(np.frombuffer(b"".join(written), DIGEST)).all()
    assert len(segments(storage)) <= compaction.MAX_SEGMENTS


@given(st.lists(st.tuples(st.sampled_from(["write", "write-no-compact", "compact", "rival"]),
                          st.integers(0, 6000), st.integers(0, 2**32)), min_size=1, max_size=12))
@SETTINGS
def test_compaction_never_loses_entries(steps) -> None:
    """Writes, compactions and a rival compactor that runs in the middle of another one."""
    store = Watched(MemoryStorage())
    index, rival = LabelIndex(store, MODEL), LabelIndex(store, MODEL)
    written: set[bytes] = set()
    jobs = set()
    for n, (op, size, seed) in enumerate(steps):
        if op.startswith("write"):
            d = random_digests(size, seed)
            written |= as_set(d)
            jobs.add(f"j{n}")
            index.write_segment([f"j{n}"], d, compact=op == "write")
        elif op == "compact":
            index.compact()
        else:
            store.before_read = lambda key: rival.compact()
            index.compact()
        view = LabelIndex(store, MODEL).load()
        assert len(view) == len(written) and view.jobs == jobs
        if written:
            assert view.contains(np.frombuffer(b"".join(written), DIGEST)).all()


def test_load_lists_again_when_a_segment_vanishes(storage) -> None:
    store = Watched(storage)
    index = LabelIndex(store, MODEL)
    for i in range(3):
        index.write_segment([f"j{i}"], random_digests(1000, i), compact=False)
    store.before_read = lambda key: LabelIndex(store, MODEL).compact()  # merges all three meanwhile
    view = index.load()
    assert len(view) == 3000 and view.jobs == {"j0", "j1", "j2"}
    assert len(store.deleted) == 3 and len(segments(storage)) == 1


def test_superseded_segments_are_ignored_then_deleted(storage, monkeypatch) -> None:
    index = LabelIndex(storage, MODEL)
    for i in range(3):
        index.write_segment([f"j{i}"], random_digests(1000, i), compact=False)
    before = segments(storage)

    def crash(key):
        raise OSError("the compactor died here")

    monkeypatch.setattr(storage, "delete", crash)
    with pytest.raises(OSError, match="died"):
        index.compact()
    monkeypatch.undo()
    after = segments(storage)
    assert len(after) == 4 and set(before) < set(after)  # the merged one, and all it replaces
    view = index.load()
    assert view.segments == tuple(k.rsplit("/", 1)[1] for k in set(after) - set(before))
    assert len(view) == 3000 and view.jobs == {"j0", "j1", "j2"}
    stats = index.compact()  # the leftovers are covered by the merged segment: only deleted
    assert stats["merged"] == 0 and stats["deleted"] == 3 and segments(storage) == sorted(set(after) - set(before))
    assert len(index.load()) == 3000


def test_adding_to_a_big_index_writes_only_a_small_segment() -> None:
    store = Watched(MemoryStorage())
    index = LabelIndex(store, MODEL)
    big = index.write_segment(["history"], random_digests(300_000, 1))
    for i in range(3):  # a few nights
        index.write_segment([f"night-{i}"], random_digests(1000, 10 + i))
    store.written.clear()
    index.write_segment(["tonight"], random_digests(1000, 99))
    assert sum(store.written.values()) < 20 * 4096 * 16  # a few small segments, never the 300,000
    assert big not in store.deleted and store.inner.exists(big)
    assert len(index.load()) == 304_000


def test_damaged_segment_is_ignored_then_indexed_again(storage, caplog) -> None:
    write_job(storage, "job-a", 600)
    write_job(storage, "job-b", 400, start=600)
    assert index_job(storage, "job-a") == {MODEL: 600}
    assert index_job(storage, "job-b") == {MODEL: 400}
    (key,) = segments(storage)  # compacted into one
    storage.write(key, storage.read(key)[:-5])
    with caplog.at_level(logging.WARNING, logger="bulklabel.index"):
        view = LabelIndex(storage, MODEL).load()
    assert len(view) == 0 and view.jobs == set()
    assert "is ignored" in caplog.text and key.rsplit("/")[-1] in caplog.text
    assert sorted(catch_up(storage, MODEL, lambda job: True, view)) == ["job-a", "job-b"]
    assert len(view) == 1000 and view.jobs == {"job-a", "job-b"}  # the view took them in
    again = LabelIndex(storage, MODEL).load()
    assert len(again) == 1000 and again.jobs == {"job-a", "job-b"}


def test_index_job_takes_only_indexable_records(storage) -> None:
    other = "keras:MobileNetV2@0123"
    write_shard(storage, "job-1", 0, [
        record("/p/ok.jpg", "1:1"),
        record("/p/err.jpg", "1:1", error="cannot decode"),
        record("/p/none.jpg", None),
        record("/p/empty.jpg", ""),
        record("/p/absent.jpg", ...),
        record("/p/other.jpg", "2:2", model=other),
        record("/p/ok.jpg", "1:1"),  # a repeat
    ])
    storage.write("job-1/part-000001.jsonl", b'{"not": "a record"}\n\nnot json\n')
    storage.write("job-1/_SUCCESS", b"{}")
    counts = index_job(storage, "job-1", models=[MODEL, "third@1"])
    assert counts == {MODEL: 1, other: 1, "third@1": 0}
    mine, theirs, third = (LabelIndex(storage, m).load() for m in (MODEL, other, "third@1"))
    probe = digest_pairs(["/p/ok.jpg", "/p/err.jpg", "/p/other.jpg"], ["1:1", "1:1", "2:2"])
    assert list(mine.contains(probe)) == [True, False, False]
    assert list(theirs.contains(probe)) == [False, False, True]
    assert third.jobs == {"job-1"} and len(third) == 0  # the job counts as indexed for it


def test_job_folders_and_catch_up(storage) -> None:
    write_job(storage, "20260101-000000-aaaaaa", 100)
    write_job(storage, "20260102-000000-bbbbbb", 100, start=100)
    write_job(storage, "running", 50, start=200)
    storage.write(".hidden/x", b"")
    storage.write("top-level-file.txt", b"")
    index_job(storage, "20260101-000000-aaaaaa")
    assert "_index" in list(storage.children(""))
    assert list(job_folders(storage)) == ["20260101-000000-aaaaaa", "20260102-000000-bbbbbb", "running"]
    finished = lambda job: storage.exists(f"{job}/_SUCCESS") and job != "running"  # noqa: E731
    assert catch_up(storage, MODEL, finished) == ["20260102-000000-bbbbbb"]
    view = LabelIndex(storage, MODEL).load()
    assert len(view) == 200 and "running" not in view.jobs
    assert catch_up(storage, MODEL, finished, view) == []  # nothing left to do


def test_skipper() -> None:
    index = DigestSet([digest_pairs(["a", "b", "c"], ["1", "1", "1"])])
    view = IndexView(MODEL, index, {"j"})
    pairs = [("a", "1"), ("a", "2"), ("x", "1"), ("b", None), ("b", ""), ("c", "1"), ("b", "1")] * 3
    skipper = Skipper(view, batch=4)
    assert list(skipper.filter(pairs)) == [("a", "2"), ("x", "1"), ("b", None), ("b", "")] * 3
    assert skipper.skipped == 9
    nothing = Skipper(None)
    assert list(nothing.filter(iter(pairs))) == pairs and nothing.skipped == 0


def test_skipper_is_lazy() -> None:
    view = IndexView(MODEL, DigestSet([digest_pairs(["s0"], ["f"])]))
    taken = []

    def listing():
        for i in range(10**9):
            taken.append(i)
            yield f"s{i}", "f"

    out = Skipper(view, batch=100).filter(listing())
    assert next(out) == ("s1", "f") and len(taken) == 100


def test_index_on_s3(s3_server) -> None:
    bucket = s3_server.new_bucket()
    storage = open_storage(f"s3://{bucket}/results")
    write_job(storage, "job-1", 300)
    write_job(storage, "job-2", 300, start=300)
    s3_server.client().put_object(Bucket=bucket, Key="results/job-3/sub/x", Body=b"")
    assert list(storage.children("")) == ["job-1", "job-2", "job-3"]
    assert list(storage.children("job-3/")) == ["sub"] and list(storage.children("job-1")) == []
    assert catch_up(storage, MODEL, lambda job: storage.exists(f"{job}/_SUCCESS")) == ["job-1", "job-2"]
    assert list(storage.children("")) == ["_index", "job-1", "job-2", "job-3"]
    assert list(job_folders(storage)) == ["job-1", "job-2", "job-3"]
    (key,) = segments(storage)  # the two jobs' segments were merged, and deleted
    view = LabelIndex(storage, MODEL).load()
    assert len(view) == 600 and view.jobs == {"job-1", "job-2"}
    sources = [f"/photos/{i:06d}.jpg" for i in range(590, 610)]
    skipper = Skipper(view)
    assert [s for s, _ in skipper.filter((s, f"{i}:1") for i, s in zip(range(590, 610), sources))] == sources[10:]
    storage.delete(key)
    storage.delete(key)  # already gone: no error
    assert not storage.exists(key) and len(LabelIndex(storage, MODEL).load()) == 0


def test_sorted_unique_leaves_sorted_input_alone() -> None:
    d = sorted_unique(random_digests(1000))
    assert sorted_unique(d) is d


def test_bench_diff_is_exact_on_a_small_index() -> None:
    from bench.incremental import run_diff_bench

    res = run_diff_bench(5000, 0.02)
    assert res["diff"]["new"] == 100 and res["diff"]["skipped"] == 4900
    assert res["update"]["entries"] == 1000 and res["update"]["bytes_written"] > 16_000
    assert res["diff"]["peak_rss_mib"] > 0
