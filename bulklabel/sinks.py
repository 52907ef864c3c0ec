"""Writers for prediction records: the output file's extension picks the format.

``.jsonl`` and ``.csv`` stream: each batch is written and flushed as it comes, so a
long job's output can be followed while it runs. ``.parquet`` buffers a bounded number of
rows per row group and appears under its final name only when complete.

Reading records back and the CSV cell encoding live in ``bulklabel.record_codec``;
``--resume`` lives in ``bulklabel.resume``; the one-writer lock in ``bulklabel.output_lock``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from .errors import ConfigError, MissingDependency
from .record_codec import FORMATS, csv_cell, jsonl_lines, output_format, read_records
from .records import FIELDS, Record

# The public names; FORMATS, output_format, read_records and jsonl_lines are re-exported from
# ``bulklabel.record_codec`` so that existing imports keep working.
__all__ = [
    "FORMATS", "Sink", "CsvSink", "JsonlSink", "ParquetSink", "jsonl_bytes", "jsonl_lines",
    "open_sink", "output_format", "read_records", "to_json_line",
]


class Sink(Protocol):
    def write(self, records: Iterable[Record]) -> None: ...

    def close(self) -> None: ...


def open_sink(path: str | os.PathLike, append: bool = False) -> Sink:
    """A sink writing to a local file, by extension; checks dependencies before any work.
    ``append`` adds to an existing .jsonl/.csv file (made safe to append to by ``resume_output``)."""
    fmt = output_format(path)
    path = Path(path)
    if fmt == ".parquet":
        if append:
            raise ConfigError("a .parquet file is complete only when its job ends, so it cannot be "
                              "resumed: use .jsonl or .csv with --resume")
        return ParquetSink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ".csv":
        return CsvSink(path, append)
    return JsonlSink(path, append)


def to_json_line(record: Record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class JsonlSink:
    def __init__(self, path: Path, append: bool = False):
        self._file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, records: Iterable[Record]) -> None:
        self._file.write("".join(to_json_line(r) + "\n" for r in records))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class CsvSink:
    """CSV with the record's columns; ``top_k`` is a JSON string. Text cells are neutralised
    against formula injection (``csv_cell``)."""

    def __init__(self, path: Path, append: bool = False):
        fresh = not append or not path.exists() or path.stat().st_size == 0
        self._file = open(path, "w" if fresh else "a", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file)
        if fresh:
            self._csv.writerow(FIELDS)

    def write(self, records: Iterable[Record]) -> None:
        for r in records:
            row = dict(r, top_k=json.dumps(r["top_k"], ensure_ascii=False))
            self._csv.writerow(["" if row[f] is None else csv_cell(row[f]) if isinstance(row[f], str)
                                else row[f] for f in FIELDS])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ParquetSink:
    """Parquet with ``top_k`` as a list of {label, score} structs."""

    ROW_GROUP = 10_000

    def __init__(self, path: Path):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependency("pyarrow", "parquet", "writing .parquet output") from None
        self._pa = pa
        self._schema = pa.schema([
            ("source", pa.string()),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("top_k", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
            ("model", pa.string()),
            ("error", pa.string()),
        ])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._final = path
        self._partial = path.with_name(path.name + ".partial")
        self._writer = pq.ParquetWriter(self._partial, self._schema)
        self._rows: list[Record] = []

    def write(self, records: Iterable[Record]) -> None:
        self._rows.extend(records)
        if len(self._rows) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = self._pa.Table.from_pylist(self._rows, schema=self._schema)
            self._writer.write_table(table)
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._partial, self._final)


def jsonl_bytes(records: Iterable[Record]) -> bytes:
    """Records as JSONL bytes (used for shards written to storage)."""
    buf = io.StringIO()
    for r in records:
        buf.write(to_json_line(r) + "\n")
    return buf.getvalue().encode("utf-8")
