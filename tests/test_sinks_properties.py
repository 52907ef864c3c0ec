"""Sinks, property-based: any record round-trips through every format and reader, and
``--resume`` after any cut or damage keeps exactly the complete, valid records."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bulklabel import record_codec, resume
from bulklabel.records import FIELDS
from bulklabel.sinks import jsonl_bytes, open_sink, read_records

# Characters that stress the formats: line breaks (``str.splitlines`` breaks at U+2028,
# U+2029 and U+0085 too), CSV quoting, formula starts, the neutralising quote itself.
AWKWARD = list("\n\r\u2028\u2029\u0085\x1c\x1d\x1e\x0b\x0c\"',;=+-@\t \\{}[]:é照🐱\ufeff")
CHAR = st.one_of(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), st.sampled_from(AWKWARD))
TEXT = st.builds(lambda start, rest: start + rest,
                 st.sampled_from(["", "", "=", "+", "-", "@", "\t", "\r", "'", "''", '"', " "]),
                 st.text(CHAR, max_size=12))
SCORE = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.5, 5e-324, 2.2250738585072014e-308,
                                                         1 - 2**-53, 0.1, 1e-6]))
TOP_K = st.lists(st.fixed_dictionaries({"label": TEXT, "score": SCORE}), max_size=3)


def _record(source, label, score, top_k, model, error) -> dict:
    return dict(zip(FIELDS, (source, label, score, top_k, model, error)))


RECORD = st.builds(_record, TEXT, st.none() | TEXT, st.none() | SCORE, TOP_K, st.none() | TEXT, st.none() | TEXT)
RECORDS = st.lists(RECORD, max_size=8)
STREAMED = st.sampled_from([".jsonl", ".csv"])

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(path: Path, records: list[dict], batches: list[int] = ()) -> list[int]:
    """Write ``records`` in batches of the given sizes (the rest in one); the file's size after
    each record, as the sink leaves it."""
    sink = open_sink(path)
    sink.write([])
    ends, i = [], 0
    for size in [*batches, len(records)]:
        for r in records[i:i + size]:
            sink.write([r])
            ends.append(path.stat().st_size if path.suffix != ".parquet" else 0)
        i += size
        if i >= len(records):
            break
    sink.close()
    return ends


@SETTINGS
@given(records=RECORDS, ext=st.sampled_from([".jsonl", ".csv", ".parquet"]),
       batches=st.lists(st.integers(1, 4), max_size=3))
@example(records=[_record("", "", 0.0, [{"label": "", "score": 1.0}], "", "")], ext=".csv", batches=[])
@example(records=[_record("=1\u2028\r\n\u0085'", "'", 5e-324, [], None, "\r")], ext=".csv", batches=[])
def test_every_record_round_trips(records, ext, batches) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("out" + ext)
        write(path, records, batches)
        back = read_records(path)
        assert back == records
        assert [list(r) for r in back] == [list(FIELDS)] * len(records)
        if ext != ".parquet":
            data = path.read_bytes()
            scan = resume.scan_output(data, ext)
            assert (scan.records, scan.damaged, scan.cut) == (len(records), [], [])
            assert scan.done == {r["source"] for r in records} and scan.kept_size == len(data)
        if ext == ".jsonl":
            assert path.read_bytes() == jsonl_bytes(records)  # the shards' bytes, read by `results`
            assert [record_codec.json_record(json.loads(line)) for line in record_codec.jsonl_lines(data)] == records


@SETTINGS
@given(value=TEXT)
def test_csv_neutralisation_is_undone(value) -> None:
    cell = record_codec.csv_cell(value)
    assert cell and not cell.startswith(record_codec.FORMULA_START)
    assert record_codec.csv_value(cell) == value


@SETTINGS
@given(records=RECORDS.filter(bool), ext=STREAMED, data=st.data())
def test_resume_after_any_cut_keeps_exactly_the_complete_records(records, ext, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("out" + ext)
        ends = write(path, records)
        full = path.read_bytes()
        cut = data.draw(st.integers(0, len(full)), label="cut")
        path.write_bytes(full[:cut])
        complete = sum(end <= cut for end in ends)  # records whose last byte (the newline) survived
        kept = ends[complete - 1] if complete else (len(header(ext)) if cut >= len(header(ext)) else 0)
        assert resume.recorded_sources(path) == {r["source"] for r in records[:complete]}
        assert path.read_bytes() == full[:kept]
        scan = resume.scan_output(full[:cut], ext)
        assert scan.records == complete and scan.damaged == [] and bool(scan.cut) == (cut > kept)
        sink = open_sink(path, append=True)  # resume goes on where the file now ends
        sink.write(records[complete:])
        sink.close()
        assert path.read_bytes() == full and read_records(path) == records


def header(ext: str) -> bytes:
    return b"source,label,score,top_k,model,error\r\n" if ext == ".csv" else b""


JUNK = st.binary(min_size=0, max_size=20).map(lambda b: b.replace(b"\n", b"").replace(b'"', b""))


@SETTINGS
@given(records=st.lists(RECORD, min_size=2, max_size=8), ext=STREAMED, data=st.data())
def test_resume_drops_a_damaged_record_and_keeps_all_others(records, ext, data) -> None:
    """One record replaced by a line that is not one (bytes that are not UTF-8 among any others;
    no quote, see ``resume._scan_csv`` on quotes): every other record is kept, the file is left
    without the damaged line, and appending the missing record completes it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("out" + ext)
        ends = write(path, records)
        full = path.read_bytes()
        k = data.draw(st.integers(0, len(records) - 1), label="damaged record")
        start = ends[k - 1] if k else len(header(ext))
        junk = data.draw(JUNK, label="junk") + b"\xff" + data.draw(JUNK, label="more junk") + b"\n"
        damaged = full[:start] + junk + full[ends[k]:]
        path.write_bytes(damaged)
        others = records[:k] + records[k + 1:]
        assert resume.recorded_sources(path) == {r["source"] for r in others}
        assert path.read_bytes() == full[:start] + full[ends[k]:]
        assert read_records(path) == others
        scan = resume.scan_output(damaged, ext)
        assert scan.records == len(others) and scan.cut == [] and len(scan.damaged) == 1
