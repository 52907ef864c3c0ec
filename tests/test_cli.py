"""``bulklabel classify`` end to end, as a user runs it: a fresh process each time."""

from __future__ import annotations

import json
import os

import pytest

from bulklabel.sinks import read_records

from conftest import CLASSES, ROOT, run_cli


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_classify_writes_one_correct_record_per_image(color_model, color_folder, tmp_path, ext):
    folder, truth = color_folder
    (folder / "README.txt").write_text("not an image, ignored in folders")
    out = tmp_path / f"labels.{ext}"
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out),
                     "--batch-size", "4", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert {r["source"]: r["label"] for r in records} == truth
    assert all(len(r["top_k"]) == 2 and r["error"] is None for r in records)
    assert all(r["model"].startswith("colors@") for r in records)
    summary = result.stdout.strip().splitlines()[-1]
    assert f"classified {len(truth)} images (0 errors)" in summary and "images/s" in summary
    assert "Traceback" not in result.stderr and "cuInit" not in result.stderr


def test_sources_can_mix_files_globs_and_lists(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    jpgs = sorted(p for p in truth if p.endswith(".jpg"))
    pngs = sorted(p for p in truth if p.endswith(".png"))
    listing = tmp_path / "todo.txt"
    listing.write_text("# to label\n" + "\n".join(pngs) + "\n\n" + str(tmp_path / "gone.jpg") + "\n")
    out = tmp_path / "mixed.jsonl"
    result = run_cli("classify", jpgs[0], str(folder / "**" / "*.webp"), f"@{listing}",
                     "--model", color_model.keras_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    webps = sorted(p for p in truth if p.endswith(".webp"))
    got = [r["source"] for r in records]
    n = len(webps)
    assert got[0] == jpgs[0] and sorted(got[1:1 + n]) == webps  # a glob's order is the filesystem's
    assert got[1 + n:] == [*pngs, str(tmp_path / "gone.jpg")]  # a list's order is kept
    assert records[-1]["error"] == "file not found"
    assert all(r["label"] == truth[r["source"]] for r in records[:-1])


def test_bad_images_give_error_records_and_exit_zero(color_model, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "empty.png").write_bytes(b"")
    out = tmp_path / "p.jsonl"
    result = run_cli("classify", str(tmp_path), "--model", color_model.keras_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] and r["label"] is None for r in records)
    assert "(2 errors)" in result.stdout


@pytest.mark.parametrize("args,code,message", [
    (["classify", "/no/such/folder", "--model", "{model}"], 2, "source not found"),
    (["classify", "{folder}", "--model", "/no/model.keras"], 3, "model not found"),
    (["classify", "{folder}", "--model", "keras:Xceptoin"], 3, "Did you mean keras:Xception"),
    (["classify", "{folder}", "--model", "{model}", "--out", "x.txt"], 2, ".jsonl, .csv, .parquet"),
    (["classify", "{folder}", "--model", "{model}", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    (["classify", "{folder}", "--model", "{model}", "--preprocess", "bogus"], 2, "invalid choice"),
    (["classify", "{folder}"], 2, "--model"),
])
def test_bad_configuration_fails_fast_with_a_clear_message(color_model, color_folder, args, code, message):
    folder, _ = color_folder
    argv = [a.format(model=color_model.keras_path, folder=folder) for a in args]
    result = run_cli(*argv)
    assert result.returncode == code, (result.returncode, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unsafe_model_needs_the_flag(tmp_path, color_folder):
    import keras

    folder, _ = color_folder
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Lambda(lambda x: x / 255.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    path = str(tmp_path / "lambda.keras")
    model.save(path)
    refused = run_cli("classify", str(folder), "--model", path, "--out", str(tmp_path / "a.jsonl"))
    assert refused.returncode == 3 and "--unsafe-model" in refused.stderr
    allowed = run_cli("classify", str(folder), "--model", path, "--unsafe-model",
                      "--out", str(tmp_path / "b.jsonl"))
    assert allowed.returncode == 0, allowed.stderr


def test_environment_variables_stand_in_for_flags(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    out = tmp_path / "env.csv"
    result = run_cli("classify", str(folder), env={"BULKLABEL_MODEL": color_model.keras_path,
                                                   "BULKLABEL_OUT": str(out), "BULKLABEL_TOP_K": "1"})
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert len(records) == len(truth) and all(len(r["top_k"]) == 1 for r in records)


def test_help_teaches_and_does_not_load_tensorflow():
    result = run_cli("classify", "--help")
    assert result.returncode == 0
    for needle in ("examples:", "keras:<Name>", "@list.txt", "--unsafe-model", "--top-k", ".parquet"):
        assert needle in result.stdout
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", "import sys, bulklabel.cli as c; c.build_parser(); "
                               "print('tensorflow' in sys.modules, 'keras' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT)
    assert probe.stdout.strip() == "False False"


def test_profile_prints_stage_times(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    summary = tmp_path / "summary.json"
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--profile",
                     "--out", str(tmp_path / "p.jsonl"), "--summary-json", str(summary))
    assert result.returncode == 0, result.stderr
    assert "stage times: read" in result.stdout and "traces: 1" in result.stdout
    data = json.loads(summary.read_text())
    assert data["images"] == len(truth) and data["errors"] == 0 and data["traces"] == 1
    assert data["images_per_second"] > 0 and set(data["stages"]) == {"read", "decode", "wait", "predict", "write"}
    assert "start-up: command" in result.stdout and "first batch" in result.stdout
    startup = data["startup"]
    assert set(startup) == {"command", "TensorFlow import", "model load", "trace", "first batch", "decoded ahead"}
    assert startup["decoded ahead"] == len(truth)  # every image was decoded while TensorFlow started
    assert data["images_computed"] == len(truth) < data["batch_size"]  # a job smaller than a batch: no padding computed
    assert all(v > 0 for v in startup.values())
    assert "concurrency: " in result.stdout and "usable cores; decode" in result.stdout
    cores = len(os.sched_getaffinity(0))
    threads = data["concurrency"]
    assert threads["usable cores"] == cores and threads["decode threads"] == max(2, cores)
    assert threads["decode-ahead threads"] == max(1, min(threads["decode threads"], cores - 1))
    assert threads["TensorFlow"] == {"intra-op": cores, "inter-op": cores,
                                     "chosen by": "TensorFlow (one per usable core)"}


def test_decode_ahead_can_be_bounded_or_switched_off(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    for ahead, expected in (("0", None), ("2", 2)):
        summary = tmp_path / f"ahead-{ahead}.json"
        result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--decode-ahead", ahead,
                         "--out", str(tmp_path / f"ahead-{ahead}.jsonl"), "--summary-json", str(summary))
        assert result.returncode == 0, result.stderr
        data = json.loads(summary.read_text())
        assert data["images"] == len(truth) and data["errors"] == 0
        assert data["startup"].get("decoded ahead") == expected  # at most 2: all done while the model loaded
        threads = data["concurrency"]["decode-ahead threads"]
        assert threads == 0 if expected is None else threads >= 1
    bad = run_cli("classify", str(folder), "--model", color_model.keras_path, "--decode-ahead", "lots",
                  "--out", str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and "--decode-ahead" in bad.stderr


def test_progress_bar_when_asked(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--progress",
                     "--out", str(tmp_path / "p.jsonl"))
    assert result.returncode == 0
    assert f"{len(truth)}/{len(truth)} images" in result.stderr and "ETA" in result.stderr


def test_the_readme_sample_job(tmp_path):
    """The bundled demo: the shipped model labels the shipped photos (it never saw them)."""
    import csv

    out = tmp_path / "sample.jsonl"
    result = run_cli("classify", str(ROOT / "sample" / "images"), "--model",
                     str(ROOT / "sample" / "model.keras"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(ROOT / "sample" / "truth.csv", encoding="utf-8") as f:
        truth = {row["file"]: row["label"] for row in csv.DictReader(f)}
    records = {r["source"].rsplit("/", 1)[-1]: r for r in read_records(out)}
    assert set(records) == set(truth) | {"damaged_upload.jpg"}
    assert "truncated" in records["damaged_upload.jpg"]["error"]
    correct = sum(records[name]["label"] == label for name, label in truth.items())
    assert correct >= len(truth) - 2, f"{correct}/{len(truth)}"
    assert set(CLASSES).isdisjoint({r["label"] for r in records.values()})  # its own class names


def test_classify_reads_s3_sources(color_model, s3_server, tmp_path):
    import numpy as np

    from conftest import color_photo, encoded

    bucket = s3_server.new_bucket()
    client = s3_server.client()
    rng = np.random.default_rng(31)
    truth = {}
    for i, name in enumerate(CLASSES * 2):
        key = f"photos/day {i % 2}/{i}.jpg"
        client.put_object(Bucket=bucket, Key=key, Body=encoded(color_photo(name, rng)))
        truth[f"s3://{bucket}/{key}"] = name
    client.put_object(Bucket=bucket, Key="photos/notes.txt", Body=b"ignored")
    out = tmp_path / "s3.jsonl"
    result = run_cli("classify", f"s3://{bucket}/photos/", "--model", color_model.keras_path,
                     "--out", str(out), env=s3_server.env)
    assert result.returncode == 0, result.stderr
    records = read_records(out)
    assert {r["source"]: r["label"] for r in records} == truth
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_resume_continues_an_interrupted_job(color_model, color_folder, tmp_path, ext):
    folder, truth = color_folder
    out = tmp_path / f"labels.{ext}"
    first = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out))
    assert first.returncode == 0, first.stderr
    # Simulate a crash: keep 5 complete records, then half of the next line.
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = 6 if ext == "csv" else 5  # the CSV header is a line too
    out.write_text("".join(lines[:keep]) + lines[keep][: len(lines[keep]) // 2], encoding="utf-8")
    again = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert "5 images already had a record" in again.stdout
    assert f"classified {len(truth) - 5} images" in again.stdout
    records = read_records(out)
    assert sorted(r["source"] for r in records) == sorted(truth)  # each image exactly once
    assert all(r["label"] == truth[r["source"]] for r in records)
    done = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out), "--resume")
    assert "classified 0 images" in done.stdout and len(read_records(out)) == len(truth)


def test_resume_refuses_parquet(color_model, color_folder, tmp_path):
    folder, _ = color_folder
    result = run_cli("classify", str(folder), "--model", color_model.keras_path,
                     "--out", str(tmp_path / "x.parquet"), "--resume")
    assert result.returncode == 2 and "cannot be resumed" in result.stderr


def test_a_second_writer_of_one_output_is_refused(color_model, color_folder, tmp_path):
    """Two jobs on one --out would corrupt it: the second exits 2 naming the first, before
    touching the file; once the first is gone the output is free again."""
    import os

    from bulklabel.output_lock import OutputLock

    folder, truth = color_folder
    out = tmp_path / "labels.jsonl"
    out.write_text("kept as it is\n")
    held = OutputLock(out)
    try:
        second = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out),
                         "--resume")
        assert second.returncode == 2, second.stderr
        assert "being written by another job" in second.stderr and f"pid {os.getpid()}" in second.stderr
        assert "Traceback" not in second.stderr
        assert out.read_text() == "kept as it is\n"
    finally:
        held.release()
    third = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out))
    assert third.returncode == 0, third.stderr
    assert len(read_records(out)) == len(truth)
    assert not (tmp_path / ".labels.jsonl.lock").exists()


def test_only_regular_files_are_read(color_model, color_folder, tmp_path):
    """A FIFO (given by path, glob or list file) and a device get an error record each, without
    blocking the job; an oversized file is refused from its size. (A folder walk lists
    regular files only.)"""
    import os

    folder, truth = color_folder
    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "globbed.jpg")
    os.mkfifo(folder / "walked.jpg")
    big = folder / "huge.png"
    with open(big, "wb") as f:
        f.truncate(5 * 1024**2)
    listing = tmp_path / "list.txt"
    listing.write_text(f"/dev/zero\n{tmp_path / 'pipe.jpg'}\n")
    out = tmp_path / "labels.jsonl"
    result = run_cli("classify", str(folder), f"@{listing}", str(tmp_path / "glob*.jpg"),
                     str(tmp_path / "pipe.jpg"), "--model", color_model.keras_path,
                     "--out", str(out), "--max-bytes", "4M", timeout=120)
    assert result.returncode == 0, result.stderr
    records = {r["source"]: r for r in read_records(out)}
    assert records[str(tmp_path / "pipe.jpg")]["error"] == "not a regular file (a FIFO)"
    assert records[str(tmp_path / "globbed.jpg")]["error"] == "not a regular file (a FIFO)"
    assert str(folder / "walked.jpg") not in records
    assert records["/dev/zero"]["error"] == "not a regular file (a character device)"
    assert records[str(big)]["error"].startswith("file too large: 5242880 bytes is over the limit of 4194304")
    assert all(records[s]["label"] == label for s, label in truth.items())
