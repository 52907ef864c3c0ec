"""Incremental jobs end to end: ``submit --incremental`` against the session's real Redis and
worker process, local folders and S3 over HTTP; ``snapshot``; the index built from shards.

Each run's cost is read from what the job labeled (``done``) and skipped (``skipped``):
an unchanged archive labels nothing, new and changed files are labeled, nothing else.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from bulklabel import keys, records
from bulklabel.chunks import shard_key
from bulklabel.jobs import JobStore, connect
from bulklabel.sinks import jsonl_bytes, read_records
from bulklabel.storage import open_storage

from conftest import CLASSES, color_photo, encoded, job_id_of, make_images, run_cli, submit

pytestmark = pytest.mark.slow


def run(broker, *args: str, env: dict | None = None) -> dict:
    """An incremental submit on queue 'main' that waits; returns the job's status JSON."""
    job_id = job_id_of(submit(broker, *args, "--queue", "main", "--incremental", "--wait", env=env))
    status = run_cli("status", job_id, "--json", env={"BULKLABEL_REDIS_URL": broker.url})
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def labeled(dest, job: dict) -> set[str]:
    storage = open_storage(str(dest))
    out = set()
    for key in storage.list(f"{job['job_id']}/part-"):
        out |= {json.loads(line)["source"] for line in storage.read(key).decode().splitlines()}
    return out


def labels(path) -> dict[str, tuple]:
    return {r["source"]: (r["label"], r["score"], r["error"]) for r in read_records(path)}


def test_only_what_is_new_or_changed_is_labeled(broker, main_worker, tmp_path):
    archive, dest = tmp_path / "archive", tmp_path / "labels"
    truth = make_images(archive, 6)
    first = run(broker, str(archive), "--out", str(dest))
    assert (first["state"], first["done"], first["skipped"], first["total"]) == ("done", 6, 0, 6)
    assert labeled(dest, first) == set(truth)

    same = run(broker, str(archive), "--out", str(dest))
    assert (same["state"], same["total"], same["done"], same["skipped"]) == ("done", 0, 0, 6)
    assert json.loads((dest / same["job_id"] / "_SUCCESS").read_text())["skipped"] == 6

    added = make_images(archive / "new", 3, seed=5)
    changed = next(iter(truth))
    os.utime(changed, ns=(time.time_ns(), os.stat(changed).st_mtime_ns + 10**9))  # touched: relabel
    third = run(broker, str(archive), "--out", str(dest))
    assert (third["done"], third["skipped"]) == (4, 5)
    assert labeled(dest, third) == set(added) | {changed}

    # three incremental runs leave the same labels as one run from scratch on the final archive
    scratch = tmp_path / "scratch"
    job_id_of(submit(broker, str(archive), "--out", str(scratch), "--queue", "main", "--wait"))
    for folder, name in ((dest, "incremental.jsonl"), (scratch, "scratch.jsonl")):
        result = run_cli("snapshot", str(folder), "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    assert labels(tmp_path / "incremental.jsonl") == labels(tmp_path / "scratch.jsonl")
    assert len(labels(tmp_path / "incremental.jsonl")) == 9
    newest = {r["source"]: r["job_id"] for r in read_records(tmp_path / "incremental.jsonl")}
    assert newest[changed] == third["job_id"]

    # a model the index has not seen labels everything again
    other = run(broker, str(archive), "--out", str(dest), "--model-id", "another-model@000000000000")
    assert (other["done"], other["skipped"]) == (9, 0)

    # the index is in DEST, not in Redis: forgetting every job changes nothing
    client = broker.client()
    for key in client.scan_iter(f"{keys.PREFIX}:job*"):
        client.delete(key)
    after_flush = run(broker, str(archive), "--out", str(dest))
    assert (after_flush["done"], after_flush["skipped"]) == (0, 9)


def test_s3_listing_fingerprints_skip_unchanged_objects(broker, main_worker, s3_server):
    bucket, client = main_worker.bucket, s3_server.client()
    rng = np.random.default_rng(3)

    def put(key: str, name: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=encoded(color_photo(name, rng)))

    for i in range(5):
        put(f"nightly/day1-{i}.jpg", CLASSES[i % 3])
    dest = f"s3://{bucket}/nightly-labels"
    first = run(broker, f"s3://{bucket}/nightly/", "--out", dest, env=s3_server.env)
    assert (first["done"], first["skipped"]) == (5, 0)
    put("nightly/day2-0.jpg", "red")
    put("nightly/day2-1.jpg", "green")
    put("nightly/day1-0.jpg", "blue")  # new content: a new ETag
    second = run(broker, f"s3://{bucket}/nightly/", "--out", dest, env=s3_server.env)
    assert (second["done"], second["skipped"]) == (3, 4)
    assert labeled(dest, second) == {f"s3://{bucket}/nightly/{n}.jpg" for n in ("day2-0", "day2-1", "day1-0")}
    index = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="nightly-labels/_index/")["Contents"]]
    assert index and all(k.endswith(".bin") for k in index)


def test_ended_jobs_count_with_what_they_finished_running_ones_do_not(broker, tmp_path):
    """A failed job's shards are indexed when the next incremental submit finds it unindexed;
    a job still running is not (its sources are labeled again). Nothing listens on the queue."""
    archive, dest = tmp_path / "archive", tmp_path / "labels"
    paths = sorted(make_images(archive, 6))
    jobs = JobStore(connect(broker.url))
    storage = open_storage(str(dest))
    model = "partial-model@123456789abc"
    from bulklabel.fingerprints import local

    def fake_job(job_id: str, done: list[str]) -> None:
        jobs.create(job_id, str(dest), "nowhere", [str(archive)])
        shard = [dict(records.prediction(p, model, [("red", 0.9)]), fingerprint=local(p)) for p in done]
        storage.write(shard_key(job_id, 0), jsonl_bytes(shard))

    fake_job("failed-run", paths[:2])
    jobs.fail("failed-run", "a worker refused its destination")
    fake_job("running-run", paths[2:4])
    result = submit(broker, str(archive), "--out", str(dest), "--queue", "nowhere", "--incremental",
                    "--model-id", model)
    job_id = job_id_of(result)
    job = jobs.get(job_id)
    assert (job["total"], job["skipped"], job["diffed_model"]) == (4, 2, model)
    assert "indexed 1 earlier jobs" in result.stderr
    jobs.cancel(job_id, "test over")
