"""Sinks: records round-trip through .jsonl, .csv and .parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bulklabel import record_codec, resume, sinks
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
            assert not cell.startswith(record_codec.FORMULA_START), (field, cell)
    assert rows[0]["label"] == "'=cmd|' /C calc'!A0" and rows[6]["label"] == "''quoted"
    assert rows[7]["label"] == "plain" and rows[-1]["source"].startswith("'=HYPERLINK")
    assert read_records(out) == recs
    assert resume.recorded_sources(out) == {r["source"] for r in recs}


# --- --resume: what an interrupted or damaged output keeps ------------------------------


def written(path: Path, records: list[dict]) -> bytes:
    sink = open_sink(path)
    sink.write(records)
    sink.close()
    return path.read_bytes()


def resume_and_finish(path: Path, records: list[dict]) -> resume.OutputScan:
    """What ``classify --resume`` does with its output: repair, skip what is done, append the rest."""
    scan = resume.resume_output(path)
    sink = open_sink(path, append=True)
    sink.write([r for r in records if r["source"] not in scan.done])
    sink.close()
    return scan


def test_resume_csv_cut_inside_a_multibyte_character(tmp_path: Path) -> None:
    recs = [prediction(f"/photos/été {i} 照片.jpg", MODEL, [("chat", 0.5)]) for i in range(4)]
    path = tmp_path / "out.csv"
    data = written(path, recs)
    cut = data.rindex("照".encode()) + 1  # inside the 3 bytes of 照 in the last record
    assert cut > data.rindex(b"\r\n", 0, len(data) - 2)
    path.write_bytes(data[:cut])
    scan = resume_and_finish(path, recs)
    assert scan.done == {r["source"] for r in recs[:3]} and scan.records == 3
    assert scan.cut == [5] and scan.damaged == []
    assert path.read_bytes() == data
    assert read_records(path) == recs


def test_resume_jsonl_keeps_records_after_a_damaged_line(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    data = written(path, records)
    lines = data.split(b"\n")
    lines[1] = lines[1][:20] + b"\xff\xfe" + lines[1][40:]  # bad UTF-8, broken JSON
    lines[3] = b'{"source": "/not/a/whole/record.jpg"}'  # JSON, but not a record
    path.write_bytes(b"\n".join(lines))
    scan = resume_and_finish(path, records)
    assert scan.damaged == [2, 4] and scan.cut == [] and scan.records == len(records) - 2
    assert scan.done == {r["source"] for i, r in enumerate(records) if i not in (1, 3)}
    assert scan.notes("out.jsonl") == ["resume: dropped 2 damaged lines of out.jsonl (lines 2, 4); "
                                       "their images will be labeled again"]
    back = read_records(path)  # every line is a record again: nothing damaged stays behind
    assert sorted(back, key=lambda r: r["source"]) == sorted(records, key=lambda r: r["source"])
    assert back[-2:] == [records[1], records[3]]  # labeled again, appended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary file left


def test_resume_jsonl_damaged_line_and_cut_tail_together(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    data = written(path, records)
    lines = data.split(b"\n")
    lines[0] = b"garbage"
    path.write_bytes(b"\n".join(lines)[:-30])  # the last record cut short
    scan = resume.resume_output(path)
    assert scan.damaged == [1] and scan.cut == [6]
    assert scan.done == {r["source"] for r in records[1:5]}
    assert path.read_bytes() == b"".join(line + b"\n" for line in data.split(b"\n")[1:5])
    assert scan.notes("o.jsonl")[1] == ("resume: removed the partial last record of o.jsonl (line 6, cut short "
                                        "when the job stopped); its image will be labeled again")


def test_resume_only_a_cut_tail_is_truncated_in_place(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    data = written(path, records)
    path.write_bytes(data[:-5])
    inode = path.stat().st_ino
    scan = resume.resume_output(path)
    assert path.stat().st_ino == inode  # truncated, not rewritten
    assert path.read_bytes() == jsonl_bytes(records[:-1]) and scan.cut == [6] and scan.damaged == []


def test_resume_rewrite_keeps_the_file_mode(tmp_path: Path, records) -> None:
    path = tmp_path / "out.jsonl"
    data = written(path, records)
    path.write_bytes(b"oops\n" + data)
    path.chmod(0o640)
    resume.resume_output(path)
    assert path.read_bytes() == data and (path.stat().st_mode & 0o777) == 0o640


def test_resume_csv_skips_rows_with_wrong_cells_or_bad_bytes(tmp_path: Path, records) -> None:
    path = tmp_path / "out.csv"
    data = written(path, records)
    text = data.decode("utf-8")
    bad = text.replace("/photos/cat.jpg,", "/photos/cat.jpg,extra,", 1)  # 7 cells
    bad = bad.encode("utf-8").replace("照片".encode(), b"\xe7\x85", 1)  # cut character in the middle
    path.write_bytes(bad)
    scan = resume_and_finish(path, records)
    assert scan.damaged == [2, 5] and scan.cut == [] and scan.records == len(records) - 2
    assert records[0]["source"] not in scan.done and records[3]["source"] not in scan.done
    assert sorted(r["source"] for r in read_records(path)) == sorted(r["source"] for r in records)
    assert read_records(path)[-2:] == [records[0], records[3]]


def test_resume_csv_cut_inside_a_quoted_newline(tmp_path: Path) -> None:
    """A cut right after the newline inside a quoted file name leaves a complete-looking last
    line: the record is still partial, and its image must be labeled again."""
    recs = [prediction("/a.jpg", MODEL, [("x", 0.5)]), prediction("/multi\nline.jpg", MODEL, [("y", 0.5)])]
    path = tmp_path / "out.csv"
    data = written(path, recs)
    cut = data.index(b"multi\n") + len(b"multi\n")
    path.write_bytes(data[:cut])
    scan = resume_and_finish(path, recs)
    assert scan.done == {"/a.jpg"} and scan.cut == [3] and scan.damaged == []
    assert path.read_bytes() == data and read_records(path) == recs


def test_resume_csv_broken_quote_in_the_middle(tmp_path: Path, records) -> None:
    """A row whose quoting is broken (a cut row with the next record written after it) costs
    that line only: parsing starts again on the next line."""
    path = tmp_path / "out.csv"
    data = written(path, records)
    lines = data.split(b"\r\n")
    lines[2] = lines[2][:12]  # '"/photos/été' : a quote opened, never closed
    path.write_bytes(b"\r\n".join(lines))
    scan = resume_and_finish(path, records)
    assert scan.damaged == [3] and scan.records == len(records) - 1
    assert sorted(r["source"] for r in read_records(path)) == sorted(r["source"] for r in records)


def test_resume_csv_cut_inside_the_header(tmp_path: Path, records) -> None:
    path = tmp_path / "out.csv"
    data = written(path, records)
    path.write_bytes(data[:10])
    scan = resume_and_finish(path, records)
    assert scan.done == set() and scan.cut == [1]
    assert read_records(path) == records and path.read_bytes() == data


@pytest.mark.parametrize("name,content", [
    ("notes.jsonl", b'{"my": "own data"}\n["not", "a", "record"]\n'),
    ("table.csv", b"name,size\r\na.jpg,12\r\n"),
])
def test_resume_refuses_a_file_that_is_not_bulklabel_output(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="does not look like bulklabel output"):
        resume.resume_output(path)
    assert path.read_bytes() == content


def test_resume_missing_or_empty_output(tmp_path: Path) -> None:
    assert resume.resume_output(tmp_path / "none.jsonl").done == set()
    (tmp_path / "empty.csv").write_bytes(b"")
    scan = resume.resume_output(tmp_path / "empty.csv")
    assert scan.done == set() and scan.notes("x") == []


def test_line_list() -> None:
    assert resume.line_list([7]) == "line 7"
    assert resume.line_list([7, 12]) == "lines 7, 12"
    assert resume.line_list([3, 4, 5, 9]) == "lines 3-5, 9"
    assert resume.line_list(list(range(1, 40, 2)), most=3) == "lines 1, 3, 5, and 17 more"


def test_csv_keeps_empty_strings_apart_from_missing_values(tmp_path: Path) -> None:
    recs = [{"source": "", "label": "", "score": 0.0, "top_k": [{"label": "", "score": 1.0}], "model": "",
             "error": ""}, failure("/x.jpg", "m", "")]
    path = tmp_path / "out.csv"
    written(path, recs)
    assert read_records(path) == recs
    assert resume.recorded_sources(path) == {"", "/x.jpg"}


def test_resume_rewrite_through_a_symbolic_link(tmp_path: Path, records) -> None:
    real = tmp_path / "store" / "out.jsonl"
    real.parent.mkdir()
    data = written(real, records)
    real.write_bytes(data[:40] + b"\n" + data)  # a cut line in the middle, complete records after
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    scan = resume.resume_output(link)
    assert scan.damaged == [1] and scan.records == len(records)
    assert link.is_symlink() and real.read_bytes() == data
