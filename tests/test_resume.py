"""``bulklabel classify --resume`` on damaged outputs, end to end: every valid record is kept,
damaged lines and a cut last record are dropped (and said so), their images labeled again."""

from __future__ import annotations

import json

from bulklabel import records
from bulklabel.sinks import open_sink, read_records

from conftest import run_cli


def classify(model, folder, out, *more):
    result = run_cli("classify", str(folder), "--model", model.keras_path, "--out", str(out), *more)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def finished_output(out, truth):
    """The output a finished run leaves: one record per image, in sorted order (written
    directly: labeling it for real would only add minutes)."""
    sink = open_sink(out)
    sink.write([records.prediction(s, "colors@1", [(label, 0.9)]) for s, label in sorted(truth.items())])
    sink.close()


def assert_each_image_once(out, truth):
    records = read_records(out)
    assert sorted(r["source"] for r in records) == sorted(truth)
    assert all(r["label"] == truth[r["source"]] and r["error"] is None for r in records)


def test_resume_jsonl_with_a_damaged_line_and_a_cut_character(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    out = tmp_path / "labels.jsonl"
    finished_output(out, truth)
    lines = out.read_bytes().split(b"\n")[:-1]
    assert len(lines) == len(truth)
    lost = [json.loads(lines[2])["source"], json.loads(lines[-1])["source"]]
    lines[2] = lines[2][:30] + b"\xff\x00 disk error"  # line 3: not a record any more
    last = lines.pop()
    cut = last[: last.index("ï".encode()) + 1]  # the crash: inside the 2 bytes of "ï"
    out.write_bytes(b"".join(line + b"\n" for line in lines) + cut)

    again = classify(color_model, folder, out, "--resume")
    n = len(truth)
    assert f"resume: dropped 1 damaged line of {out} (line 3); its image will be labeled again" in again.stderr
    assert f"resume: removed the partial last record of {out} (line {n}," in again.stderr
    assert f"resumed: {n - 2} images already had a record in {out} and were skipped" in again.stdout
    assert "classified 2 images" in again.stdout
    assert_each_image_once(out, truth)
    assert sorted(r["source"] for r in read_records(out)[-2:]) == sorted(lost)  # labeled again, appended
    assert all(json.loads(line) for line in out.read_bytes().split(b"\n")[:-1])  # nothing damaged left

    done = classify(color_model, folder, out, "--resume")
    assert "classified 0 images" in done.stdout and "dropped" not in done.stderr
    assert_each_image_once(out, truth)


def test_resume_csv_cut_inside_a_character_with_a_bad_row(color_model, color_folder, tmp_path):
    folder, truth = color_folder
    out = tmp_path / "labels.csv"
    finished_output(out, truth)
    data = out.read_bytes()
    rows = data.split(b"\r\n")[:-1]  # the header, then one row per image (no newline in these names)
    assert len(rows) == len(truth) + 1
    rows[4] = rows[4].replace(b",", b",,", 1)  # line 5: a cell too many
    cut = rows[-1][: rows[-1].index("ï".encode()) + 1]
    out.write_bytes(b"".join(row + b"\r\n" for row in rows[:-1]) + cut)

    again = classify(color_model, folder, out, "--resume")
    assert f"dropped 1 damaged line of {out} (line 5)" in again.stderr
    assert "partial last record" in again.stderr
    assert f"resumed: {len(truth) - 2} images already had a record" in again.stdout
    assert "1 damaged line dropped" in again.stdout and "classified 2 images" in again.stdout
    assert_each_image_once(out, truth)
    assert out.read_bytes().startswith(b"source,label,score,top_k,model,error\r\n")


def test_resume_refuses_to_rewrite_a_file_that_is_not_its_output(color_model, color_folder, tmp_path):
    folder, _ = color_folder
    out = tmp_path / "notes.jsonl"
    mine = b'{"title": "my notes"}\n{"title": "not image records"}\n'
    out.write_bytes(mine)
    result = run_cli("classify", str(folder), "--model", color_model.keras_path, "--out", str(out), "--resume")
    assert result.returncode == 2, result.stderr
    assert "does not look like bulklabel output" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == mine
