"""Sinks: records round-trip through .jsonl, .csv and .parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulklabel import sinks
from bulklabel.errors import ConfigError
from bulklabel.records import FIELDS, failure, prediction
from bulklabel.sinks import jsonl_bytes, open_sink, output_format, read_records

MODEL = "mobilenet_v3_small"


def sample_records() -> list[dict]:
    return [
        prediction(
            "/photos/cat.jpg", MODEL, [("tabby", 0.8123456789), ("tiger cat", 0.1), ("lynx", 0.05)]
        ),
        prediction('/photos/été, "quoted" & \'single\'.png', MODEL, [("golden retriever", 0.99)]),
        failure("/photos/broken,file.jpg", MODEL, 'cannot decode: "truncated", at byte 12'),
        prediction(
            "/données/照片 🐱.webp", "custom,model", [("label, with comma", 0.5), ('say "hi"', 0.25)]
        ),
        failure("s3://bucket/missing.jpg", MODEL, "file not found"),
        prediction("/photos/multi\nline.jpg", MODEL, [("ünïcødé", 1.0)]),
    ]


@pytest.fixture
def records() -> list[dict]:
    return sample_records()


def write_all(path: Path, records: list[dict], batch: int = 2) -> None:
    sink = open_sink(path)
    for i in range(0, len(records), batch):
        sink.write(records[i : i + batch])
    sink.close()


def test_records_shape(records) -> None:
    ok, err = records[0], records[2]
    assert tuple(ok) == FIELDS and tuple(err) == FIELDS
    assert ok["label"] == "tabby" and ok["score"] == 0.812346
    assert ok["top_k"][1] == {"label": "tiger cat", "score": 0.1}
    assert err["score"] is None and err["label"] is None and err["top_k"] == []
    assert err["error"].startswith("cannot decode")


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path: Path, records, ext: str) -> None:
    path = tmp_path / "nested" / "folder" / ("out" + ext)  # parent folders are created
    write_all(path, records)
    back = read_records(path)
    assert back == records
    assert [tuple(r) for r in back] == [FIELDS] * len(records)
    errors = [r for r in back if r["error"]]
    assert len(errors) == 2 and all(r["score"] is None and r["top_k"] == [] for r in errors)


@pytest.mark.parametrize("ext", [".jsonl", ".csv", ".parquet"])
def test_empty_output(tmp_path: Path, ext: str) -> None:
    path = tmp_path / ("empty" + ext)
    sink = open_sink(path)
    sink.write([])
    sink.close()
    assert path.exists()
    assert read_records(path) == []


@pytest.mark.parametrize("ext", [".JSONL", ".Csv", ".PARQUET"])
def test_extension_case_insensitive(tmp_path: Path, records, ext: str) -> None:
    path = tmp_path / ("out" + ext)
    write_all(path, records)
    assert read_records(path) == records


def test_csv_layout(tmp_path: Path, records) -> None:
    path = tmp_path / "out.csv"
    write_all(path, records)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["source", "label", "score", "top_k", "model", "error"]
    assert len(rows) == len(records) + 1
    first = dict(zip(rows[0], rows[1]))
    assert json.loads(first["top_k"]) == records[0]["top_k"]
    assert first["score"] == "0.812346"
    assert first["error"] == ""
    err = dict(zip(rows[0], rows[3]))
    assert err["source"] == "/photos/broken,file.jpg"
    assert err["score"] == "" and err["label"] == "" and err["top_k"] == "[]"
    unicode_row = dict(zip(rows[0], rows[4]))
    assert "照片 🐱" in unicode_row["source"]
    assert "ü" in rows[6][3]  # top_k JSON keeps non-ASCII as is


def test_parquet_schema(tmp_path: Path, records) -> None:
    path = tmp_path / "out.parquet"
    write_all(path, records)
    schema = pq.read_schema(path)
    assert schema.names == list(FIELDS)
    top_k = schema.field("top_k").type
    assert pa.types.is_list(top_k)
    item = top_k.value_type
    assert pa.types.is_struct(item)
    assert [item.field(i).name for i in range(item.num_fields)] == ["label", "score"]
    assert item.field("label").type == pa.string()
    assert item.field("score").type == pa.float64()
    assert schema.field("score").type == pa.float64()
    for name in ("source", "label", "model", "error"):
        assert schema.field(name).type == pa.string()


def test_parquet_appears_only_at_close(tmp_path: Path, records) -> None:
    path = tmp_path / "out.parquet"
    partial = tmp_path / "out.parquet.partial"
    sink = open_sink(path)
    sink.write(records)
    assert not path.exists()
    assert partial.exists()
    sink.close()
    assert path.exists()
    assert not partial.exists()
    assert read_records(path) == records


def test_parquet_several_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    sink = open_sink(path)
    sink.ROW_GROUP = 3
    recs = [prediction(f"/p/{i}.jpg", MODEL, [("x", i / 10)]) for i in range(8)]
    for r in recs:
        sink.write([r])
    sink.close()
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # 3 + 3 + 2
    assert read_records(path) == recs


def test_jsonl_flushed_per_write(tmp_path: Path, records) -> None:
    path = tmp_path / "live.jsonl"
    sink = open_sink(path)
    sink.write(records[:2])
    assert read_records(path) == records[:2]
    sink.write(records[2:3])
    assert read_records(path) == records[:3]
    sink.write(records[3:])
    sink.close()
    assert read_records(path) == records


def test_csv_flushed_per_write(tmp_path: Path, records) -> None:
    path = tmp_path / "live.csv"
    sink = open_sink(path)
    sink.write(records[:1])
    assert read_records(path) == records[:1]
    sink.close()


def test_jsonl_one_line_per_record(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    write_all(path, records)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(records)  # the newline in a source is escaped
    assert "照片 🐱" in lines[3]  # not \u-escaped
    assert json.loads(lines[2])["score"] is None


def test_jsonl_bytes_matches_sink(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    write_all(path, records, batch=4)
    data = jsonl_bytes(records)
    assert isinstance(data, bytes)
    assert path.read_bytes() == data
    assert jsonl_bytes([]) == b""


@pytest.mark.parametrize("name", ["out.txt", "out", "out.json", "out.jsonl.gz", "out.tsv"])
def test_output_format_rejects(name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        output_format(name)
    msg = str(exc.value)
    for ext in (".jsonl", ".csv", ".parquet"):
        assert ext in msg
    assert repr(name) in msg


def test_output_format_accepts() -> None:
    assert output_format("a/b.jsonl") == ".jsonl"
    assert output_format(Path("x.CSV")) == ".csv"
    assert output_format("x.Parquet") == ".parquet"


def test_open_sink_rejects_before_creating_anything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.jsonl"):
        open_sink(tmp_path / "sub" / "out.txt")
    assert not (tmp_path / "sub").exists()


def test_read_records_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_records(tmp_path / "x.txt")


def test_sink_classes_by_extension(tmp_path: Path) -> None:
    classes = {".jsonl": sinks.JsonlSink, ".csv": sinks.CsvSink, ".parquet": sinks.ParquetSink}
    for ext, cls in classes.items():
        s = open_sink(tmp_path / ("o" + ext))
        assert isinstance(s, cls)
        s.close()


FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", "\tindent", "\rcr", "'quoted", "plain"]


def test_csv_cells_cannot_run_as_formulas(tmp_path: Path) -> None:
    """Cells a spreadsheet would evaluate get a leading ' (and a leading ' is doubled, so the
    escaping is undone exactly when bulklabel reads its own CSV back)."""
    out = tmp_path / "labels.csv"
    recs = [prediction(f"/photos/{label}.jpg", "m@1", [(label, 0.9)]) for label in FORMULAS]
    recs.append(failure("=HYPERLINK(\"http://x\")", "m@1", "-not decodable"))
    sink = open_sink(out)
    sink.write(recs)
    sink.close()
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for field in ("source", "label", "error"):
            cell = row[field]
            assert not cell.startswith(sinks.FORMULA_START), (field, cell)
    assert rows[0]["label"] == "'=cmd|' /C calc'!A0" and rows[6]["label"] == "''quoted"
    assert rows[7]["label"] == "plain" and rows[-1]["source"].startswith("'=HYPERLINK")
    assert read_records(out) == recs
    assert sinks.recorded_sources(out) == {r["source"] for r in recs}
