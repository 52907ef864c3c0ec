"""export, import-reviews and the loop back to train: Label Studio's formats, checked offline.

The export is validated against the import schema of Label Studio's own SDK (vendored, see
tests/data/SCHEMAS.md) and against the labeling config it writes; the review import reads a
fixture shaped like Label Studio's JSON export; the loop ends in a real ``train`` run.
"""

from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from bulklabel.classes import from_path_name, to_path_name
from bulklabel.errors import ConfigError
from bulklabel.records import failure, prediction
from bulklabel.review.agreement import agreement
from bulklabel.review.image_urls import ImageUrlError, ImageUrls
from bulklabel.review.labelstudio import decide
from bulklabel.review.select import Selection
from bulklabel.sinks import jsonl_bytes, open_sink, read_records

from conftest import CLASSES, color_photo, encoded, job_id_of, make_images, run_cli, submit

DATA = Path(__file__).parent / "data"
MODEL = "colors@0123456789ab"


def task_schema() -> dict:
    return json.loads((DATA / "labelstudio-import-task.schema.json").read_text())


def results_file(tmp_path: Path, n: int = 60, errors: int = 3, ext: str = "jsonl") -> tuple[Path, list[dict]]:
    """A results file of ``n`` labeled records (scores spread over (0, 1)) and some error records."""
    rng = np.random.default_rng(7)
    records = []
    for i in range(n):
        probs = rng.dirichlet([0.6, 0.6, 0.6])
        order = np.argsort(-probs)
        records.append(prediction(f"/archive/day 1/img {i:03d}.jpg", MODEL,
                                  [(CLASSES[k], probs[k]) for k in order]))
    records += [failure(f"/archive/bad {i}.jpg", MODEL, "not an image: unknown format") for i in range(errors)]
    path = tmp_path / f"results.{ext}"
    sink = open_sink(path)
    sink.write(records)
    sink.close()
    return path, records


def config_tags(xml: str) -> tuple[ET.Element, ET.Element, list[str]]:
    root = ET.fromstring(xml)
    assert root.tag == "View"
    image, choices = root.find("Image"), root.find("Choices")
    return image, choices, [c.get("value") for c in choices.findall("Choice")]


def assert_label_studio_tasks(tasks: list[dict], xml: str) -> None:
    """Each task is a valid import task, and its prediction fits the labeling config: what
    Label Studio's LabelInterface.validate_prediction checks for a choices result."""
    schema = task_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    image, choices, names = config_tags(xml)
    data_key = image.get("value").lstrip("$")
    for t in tasks:
        jsonschema.validate(t, schema)
        assert isinstance(t["data"][data_key], str) and t["data"][data_key]
        [pred] = t["predictions"]
        assert set(pred) == {"model_version", "score", "result"}
        [result] = pred["result"]
        assert result["type"] == "choices" and result["from_name"] == choices.get("name")
        assert result["to_name"] == image.get("name") == choices.get("toName")
        assert len(result["value"]["choices"]) == 1 and result["value"]["choices"][0] in names
        assert 0.0 <= pred["score"] <= 1.0


# --- export --------------------------------------------------------------------------


def test_export_review_below_and_audit_sample_as_label_studio_tasks(tmp_path):
    path, records = results_file(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    out, config = tmp_path / "tasks.json", tmp_path / "config.xml"
    run = run_cli("export", str(path), "--out", str(out), "--review-below", "0.6", "--sample", "5", "--seed", "3",
                  "--config-out", str(config), "--classes", str(labels), "--image-root", "/archive")
    assert run.returncode == 0, run.stderr
    tasks = json.loads(out.read_text())
    ok = [r for r in records if r["error"] is None]
    doubtful = sorted((r for r in ok if r["score"] < 0.6), key=lambda r: (r["score"], r["source"]))
    assert len(doubtful) > 5
    assert [t["data"]["source"] for t in tasks[:len(doubtful)]] == [r["source"] for r in doubtful]
    audit = tasks[len(doubtful):]
    assert len(audit) == 5 and all(t["data"]["review"] == "sample" and t["data"]["score"] >= 0.6 for t in audit)
    assert len({t["data"]["source"] for t in tasks}) == len(tasks)
    by_source = {r["source"]: r for r in ok}
    for t in tasks:
        record = by_source[t["data"]["source"]]
        [pred] = t["predictions"]
        assert pred["score"] == record["score"] and pred["model_version"] == MODEL
        assert pred["result"][0]["value"]["choices"] == [record["label"]]
    name = tasks[0]["data"]["source"].rsplit("/", 1)[1]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=day%201/" + name.replace(" ", "%20")
    xml = config.read_text()
    assert config_tags(xml)[2] == ["red", "green", "blue"]  # the model's classes, in its order
    assert_label_studio_tasks(tasks, xml)
    assert "3 error records left out" in run.stderr
    again = run_cli("export", str(path), "--out", str(tmp_path / "again.json"), "--review-below", "0.6",
                    "--sample", "5", "--seed", "3", "--image-root", "/archive")
    assert again.returncode == 0 and json.loads((tmp_path / "again.json").read_text()) == tasks  # seeded


def test_export_record_formats_filter_the_same_way(tmp_path):
    path, records = results_file(tmp_path, ext="parquet")
    want = sorted((r for r in records if r["error"] is None and r["score"] < 0.5),
                  key=lambda r: (r["score"], r["source"]))
    for ext in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"doubtful.{ext}"
        run = run_cli("export", str(path), "--format", ext, "--out", str(out), "--review-below", "0.5")
        assert run.returncode == 0, run.stderr
        assert [r["source"] for r in read_records(out)] == [r["source"] for r in want]
        assert [r["score"] for r in read_records(out)] == [r["score"] for r in want]


def test_export_fails_fast_on_bad_options(tmp_path):
    path, _ = results_file(tmp_path, n=3)
    for args, says in ((["--out", str(tmp_path / "t.jsonl")], "must end in .json"),
                       (["--out", str(tmp_path / "t.json"), "--review-below", "1.5"], "--review-below"),
                       (["--out", str(tmp_path / "t.json"), "--image-url", "ftp"], "--image-url must be one of"),
                       (["--out", str(tmp_path / "t.csv"), "--format", "csv", "--config-out", "c.xml"], "--config-out"),
                       (["--out", str(tmp_path / "no" / "t.json")], "does not exist")):
        run = run_cli("export", str(path), *args)
        assert run.returncode == 2 and says in run.stderr, (args, run.stderr)
    missing = run_cli("export", str(tmp_path / "nope"), "--out", str(tmp_path / "t.json"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_selection_is_streaming_bounded_and_seeded():
    records = [dict(prediction(f"s{i}", MODEL, [("red", (i % 100) / 100 + 0.001)])) for i in range(10_000)]
    picked = list(Selection(review_below=0.05, sample=7, seed=1).apply([records[:5000], records[5000:]]))
    doubtful = [r for reason, r in picked if reason == "doubtful"]
    sample = [r for reason, r in picked if reason == "sample"]
    assert len(doubtful) == 500 and [r["score"] for r in doubtful] == sorted(r["score"] for r in doubtful)
    assert len(sample) == 7 and all(r["score"] >= 0.05 for r in sample)
    again = list(Selection(review_below=0.05, sample=7, seed=1).apply([records]))
    other = list(Selection(review_below=0.05, sample=7, seed=2).apply([records]))
    assert again == picked and other != picked
    counts = np.zeros(10)
    for seed in range(300):  # every record is equally likely to be drawn
        for _, r in Selection(sample=3, seed=seed).apply([records[:10]]):
            counts[int(r["source"][1:])] += 1
    assert counts.min() > 60 and counts.max() < 120


def test_image_urls_for_each_mode(tmp_path, s3_server):
    local = tmp_path / "photos" / "a b#1.jpg"
    assert ImageUrls("local-files", str(tmp_path))(str(local)) == "/data/local-files/?d=photos/a%20b%231.jpg"
    assert ImageUrls("prefix=https://img.example/x", str(tmp_path))(str(local)) == "https://img.example/x/photos/a%20b%231.jpg"
    with pytest.raises(ImageUrlError, match="outside --image-root"):
        ImageUrls("auto", str(tmp_path / "other"))(str(local))
    with pytest.raises(ImageUrlError, match="no S3 URL"):
        ImageUrls("s3")(str(local))
    assert ImageUrls("auto")("s3://b/k.jpg") == "s3://b/k.jpg"
    urls = ImageUrls("prefix=https://img.example/x", str(tmp_path))
    assert urls.to_source(urls(str(local))) == str(local)
    for bad in ("presign=0", "presign=999999999", "prefix=", "nope"):
        with pytest.raises(ConfigError):
            ImageUrls(bad)
    bucket, client = s3_server.new_bucket(), s3_server.client()
    body = encoded(color_photo("red", np.random.default_rng(1)))
    client.put_object(Bucket=bucket, Key="in/p 1.jpg", Body=body)
    url = ImageUrls("presign=600")(f"s3://{bucket}/in/p 1.jpg")
    assert url.startswith("http") and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # the reviewer's browser, over HTTP
        assert response.read() == body


def test_export_of_a_job_by_id_by_folder_and_of_a_dest_snapshot(broker, main_worker, tmp_path):
    archive, dest = tmp_path / "archive", tmp_path / "labels"
    truth = make_images(archive, 8)
    (archive / "broken.jpg").write_bytes(b"not a jpeg")
    job_id = job_id_of(submit(broker, str(archive), "--out", str(dest), "--queue", "main", "--wait",
                              "--chunk-size", "4"))
    env = {"BULKLABEL_REDIS_URL": broker.url}
    outs = {}
    for name, source, extra in (("id", job_id, []), ("folder", str(dest / job_id), []),
                                ("dest", str(dest), ["--model", main_worker_model(dest / job_id)])):
        out = tmp_path / f"{name}.json"
        run = run_cli("export", source, "--out", str(out), "--image-url", "prefix=http://img.test/",
                      "--image-root", str(archive), *extra, env=env)
        assert run.returncode == 0, (name, run.stderr)
        assert "1 error records left out" in run.stderr
        outs[name] = sorted(t["data"]["source"] for t in json.loads(out.read_text()))
    assert outs["id"] == outs["folder"] == outs["dest"] == sorted(truth)
    report = tmp_path / "job.html"
    run = run_cli("report", job_id, "--out", str(report), env=env)
    assert run.returncode == 0, run.stderr
    page = report.read_text()
    assert job_id in page and "broken.jpg" in page


def main_worker_model(folder: Path) -> str:
    return next(json.loads(line)["model"] for shard in sorted(folder.glob("part-*.jsonl"))
                for line in shard.read_text().splitlines())


# --- import-reviews --------------------------------------------------------------------


def test_decisions_follow_annotations_ground_truth_and_conflicts():
    tasks = {t["id"]: t for t in json.loads((DATA / "labelstudio-export.json").read_text())}
    assert decide(tasks[1], "choice").label == "red"
    assert decide(tasks[3], "choice").status == "skipped"
    assert decide(tasks[4], "choice").status == "unannotated"
    assert decide(tasks[5], "choice").status == "conflict"
    assert decide(tasks[6], "choice").status == "conflict"
    assert decide(tasks[6], "choice", "majority").label == "green"
    assert decide(tasks[5], "choice", "majority").status == "conflict"  # 1 against 1 is no majority
    assert decide(tasks[7], "choice").label == "blue"  # the ground truth decides
    assert decide(tasks[11], "choice").status == "unusable"  # two classes picked


def test_import_reviews_writes_lists_and_the_agreement(tmp_path):
    data = tmp_path / "reviewed"
    run = run_cli("import-reviews", str(DATA / "labelstudio-export.json"), "--out", str(data))
    assert run.returncode == 0, run.stderr
    lists = {from_path_name(p.stem): p.read_text().split() for p in (data / "lists").glob("*.txt")}
    photos = "s3://reviews/photos/"
    assert lists == {"red": [photos + "0001.jpg"], "blue": [photos + f"000{i}.jpg" for i in (2, 7, 9)],
                     "purple/violet": [photos + "0008.jpg"]}
    assert (data / "lists" / "purple%2Fviolet.txt").exists()
    summary = json.loads((data / "review-summary.json").read_text())
    assert (summary["tasks"], summary["labeled"], summary["unannotated"], summary["skipped"],
            summary["conflicts"], summary["unusable"], summary["no_source"]) == (11, 5, 1, 1, 2, 1, 1)
    result = summary["agreement"]
    assert (result["reviewed"], result["agreed"], result["accuracy"]) == (5, 2, 0.4)
    assert result["per_class"]["red"] == {"precision": round(1 / 3, 4), "recall": 1.0, "f1": 0.5,
                                          "reviewed": 1, "predicted": 3}
    assert result["per_class"]["blue"]["recall"] == round(1 / 3, 4)
    labels = result["confusion"]["labels"]
    matrix = result["confusion"]["matrix"]
    assert matrix[labels.index("blue")][labels.index("red")] == 1  # people blue, model red
    assert sum(map(sum, matrix)) == 5
    assert {"model": "red", "people": "purple/violet", "count": 1} in result["corrections"]
    assert "accuracy 40.0%" in run.stdout and "model said red, people said blue: 1 time" in run.stdout
    assert "conflict: task 5" in run.stderr
    again = run_cli("import-reviews", str(DATA / "labelstudio-export.json"), "--out", str(data))
    assert again.returncode == 2 and "not an empty folder" in again.stderr
    linked = run_cli("import-reviews", str(DATA / "labelstudio-export.json"), "--out", str(tmp_path / "l"), "--link")
    assert linked.returncode == 2 and "cannot be linked" in linked.stderr


def test_import_reviews_copies_from_s3(tmp_path, s3_server):
    bucket, client = s3_server.new_bucket(), s3_server.client()
    tasks = json.loads((DATA / "labelstudio-export.json").read_text())
    bodies = {}
    for t in tasks:
        for key in ("source", "image"):
            if t["data"].get(key, "").startswith("s3://"):
                t["data"][key] = t["data"][key].replace("s3://reviews/", f"s3://{bucket}/")
        name = f"photos/{t['id']:04d}.jpg"
        bodies[name] = encoded(color_photo("red", np.random.default_rng(t["id"])))
        client.put_object(Bucket=bucket, Key=name, Body=bodies[name])
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    run = run_cli("import-reviews", str(export), "--out", str(tmp_path / "data"), "--copy", env=s3_server.env)
    assert run.returncode == 0, run.stderr
    copied = sorted((tmp_path / "data").glob("*/*.jpg"))
    assert len(copied) == 5 and {p.parent.name for p in copied} == {"red", "blue", "purple%2Fviolet"}
    assert copied[0].read_bytes() in bodies.values()


def test_class_names_survive_as_folder_names():
    for name in ("cat", "a/b", "..", ".hidden", "50%", "tab\there", "back\\slash", "ok name (x)"):
        encoded_name = to_path_name(name)
        assert "/" not in encoded_name and not encoded_name.startswith(".") and encoded_name
        assert from_path_name(encoded_name) == name
    assert from_path_name("a%20b") == "a%20b"  # a folder made by hand keeps its name


def test_agreement_counts():
    result = agreement([("cat", "cat"), ("cat", "dog"), ("dog", "dog"), ("dog", "dog"), ("bird", "cat")],
                       order=["dog", "cat", "bird"])
    assert result["classes"] == ["dog", "cat", "bird"] and result["accuracy"] == 0.6
    assert result["per_class"]["dog"] == {"precision": 1.0, "recall": round(2 / 3, 4), "f1": 0.8,
                                          "reviewed": 3, "predicted": 2}
    assert result["per_class"]["bird"]["precision"] == 0.0 and result["per_class"]["bird"]["recall"] is None
    assert result["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 0]]


# --- the loop: classify → export → review → import → train -----------------------------


def test_reviewed_corrections_train_a_model_from_the_serving_one(color_model, tmp_path):
    archive = tmp_path / "archive"
    truth = make_images(archive, 18, seed=11)
    results = tmp_path / "labels.jsonl"
    run = run_cli("classify", str(archive), "--model", color_model.keras_path, "--out", str(results))
    assert run.returncode == 0, run.stderr
    tasks_file = tmp_path / "tasks.json"
    run = run_cli("export", str(results), "--out", str(tasks_file), "--config-out", str(tmp_path / "config.xml"),
                  "--classes", color_model.keras_path, "--image-root", str(archive))
    assert run.returncode == 0, run.stderr
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 18
    assert_label_studio_tasks(tasks, (tmp_path / "config.xml").read_text())
    for i, t in enumerate(tasks):  # people review every image: their label is the truth
        t["id"] = i + 1
        t["annotations"] = [{"id": i + 1, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                             "result": [{"id": f"x{i}", "type": "choices", "from_name": "choice", "to_name": "image",
                                         "origin": "manual",
                                         "value": {"choices": [truth[t["data"]["source"]]]}}]}]
    export = tmp_path / "project-1-at-2026-11-23.json"
    export.write_text(json.dumps(tasks))
    data = tmp_path / "reviewed"
    run = run_cli("import-reviews", str(export), "--out", str(data))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in data.iterdir()) == sorted([*CLASSES, "review-summary.json"])
    assert all((data / c).is_dir() and len(list((data / c).iterdir())) == 6 for c in CLASSES)
    out = tmp_path / "colors-v2.keras"
    run = run_cli("train", str(data), "--base", color_model.keras_path, "--out", str(out), "--epochs", "1",
                  "--fine-tune-layers", "0", "--batch-size", "8", "--no-augment", timeout=400)
    assert run.returncode == 0, run.stderr
    check = run_cli("classify", str(archive), "--model", str(out), "--out", str(tmp_path / "v2.jsonl"))
    assert check.returncode == 0, check.stderr
    assert {r["label"] for r in read_records(tmp_path / "v2.jsonl")} <= set(CLASSES)


def test_a_dest_source_needs_job_results(tmp_path):
    (tmp_path / "empty").mkdir()
    run = run_cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html"))
    assert run.returncode == 2 and "holds no job results" in run.stderr
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl_bytes([prediction("a.jpg", MODEL, [("red", 0.9)])]) + b'{"no": "record"}\n')
    run = run_cli("export", str(path), "--out", str(tmp_path / "t.json"))
    assert run.returncode != 0 and "line 2" in run.stderr


def test_a_list_dataset_is_what_train_reads_and_one_image_gets_one_label(tmp_path):
    from worker.training.dataset import load_split

    rng = np.random.default_rng(5)
    tasks = json.loads((DATA / "labelstudio-export.json").read_text())
    for t in tasks:
        path = tmp_path / "photos" / f"{t['id']:04d} x.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encoded(color_photo("red", rng)))
        t["data"].update(source=str(path), image=str(path))
    twin = json.loads(json.dumps(tasks[0]))  # the same image, a second task, another label
    twin["id"], twin["annotations"][0]["result"][0]["value"]["choices"] = 99, ["green"]
    export = tmp_path / "export.json"
    export.write_text(json.dumps([*tasks, twin]))
    run = run_cli("import-reviews", str(export), "--out", str(tmp_path / "data"), "--list")
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "data" / "review-summary.json").read_text())
    # task 1 and its twin disagree: a conflict, neither is kept (task 10 maps back now)
    assert summary["per_class"] == {"blue": 3, "purple/violet": 1, "red": 1} and summary["conflicts"] == 3
    train, val = load_split(str(tmp_path / "data"), 0.34, 0)
    assert train.class_names == ["blue", "purple/violet", "red"]
    assert sorted(train.locations + val.locations) == sorted(
        str(tmp_path / "photos" / f"{i:04d} x.jpg") for i in (2, 7, 8, 9, 10))
