"""The record formats on disk: which format a file name means, how a record is validated, how
its text goes into a CSV cell and back, and how a written file is read back into records.

Shared by the writers (``bulklabel.sinks``) and the readers (``read_records``,
``bulklabel.resume``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError
from .records import FIELDS, Record

FORMATS = (".jsonl", ".csv", ".parquet")


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"cannot tell the output format from the file name: use one of "
            f"{', '.join(FORMATS)}. Received: --out {os.fspath(path)!r}"
        )
    return suffix


def _optional(value, kinds, what: str):
    if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise ValueError(f"{what} is not a {kinds}")
    return value


def json_record(obj) -> Record:
    """``obj`` (a parsed JSONL line) if it is a record; ValueError if not."""
    if not isinstance(obj, dict) or not set(FIELDS) <= obj.keys():
        raise ValueError("not a record object")
    if not isinstance(obj["source"], str):
        raise ValueError("source is not a string")
    for name in ("label", "model", "error"):
        _optional(obj[name], str, name)
    _optional(obj["score"], (int, float), "score")
    top_k = obj["top_k"]
    if not isinstance(top_k, list) or not all(isinstance(t, dict) for t in top_k):
        raise ValueError("top_k is not a list of objects")
    return obj


# A spreadsheet runs a cell that begins with one of these as a formula ("CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """``value`` safe for a spreadsheet: a leading ``'`` before a formula-like start (and before
    a ``'`` itself, so that ``csv_value`` can always undo it). The empty string is ``'``, so that
    it stays apart from a missing value, which is an empty cell."""
    return "'" + value if not value or value.startswith(FORMULA_START + ("'",)) else value


def csv_value(cell: str) -> str:
    """Undo ``csv_cell``."""
    return cell[1:] if cell.startswith("'") else cell


def csv_record(row: list[str]) -> Record:
    """A record from a CSV row as ``CsvSink`` writes it (header excluded); ValueError if it is not one."""
    if len(row) != len(FIELDS):
        raise ValueError(f"{len(row)} cells, not {len(FIELDS)}")
    rec: Record = {k: (csv_value(cell) if cell != "" else None) for k, cell in zip(FIELDS, row)}
    if rec["source"] is None:
        raise ValueError("no source")
    rec["score"] = float(rec["score"]) if rec["score"] is not None else None
    return json_record(dict(rec, top_k=json.loads(rec["top_k"]) if rec["top_k"] is not None else []))


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read a file written by a sink back into records (for tests and small merges)."""
    fmt = output_format(path)
    if fmt == ".jsonl":
        with open(path, "rb") as f:
            return [json.loads(line) for line in jsonl_lines(f.read()) if line.strip()]
    if fmt == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = [row for row in csv.reader(f, strict=True) if row]
        if rows and rows[0] != list(FIELDS):
            raise ValueError(f"{os.fspath(path)}: the first line is not the header {','.join(FIELDS)}")
        return [csv_record(row) for row in rows[1:]]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def iter_records(path: str | os.PathLike, batch: int = 2048) -> Iterator[list[Record]]:
    """Stream a file written by a sink (or any file of records) back, ``batch`` records at a
    time, in bounded memory; ValueError naming the line or row that is not a record."""
    fmt = output_format(path)
    if fmt == ".parquet":
        import pyarrow.parquet as pq

        for part in pq.ParquetFile(path).iter_batches(batch_size=batch):
            yield part.to_pylist()
        return
    out: list[Record] = []
    with open(path, "rb" if fmt == ".jsonl" else "r", **({} if fmt == ".jsonl" else
                                                           {"encoding": "utf-8", "newline": ""})) as f:
        if fmt == ".jsonl":
            rows = ((n, line) for n, line in enumerate(f, 1) if line.strip())
            parse = json_record_line
        else:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if header is not None and header != list(FIELDS):
                raise ValueError(f"{os.fspath(path)}: the first line is not the header {','.join(FIELDS)}")
            rows = ((n, row) for n, row in enumerate(reader, 2) if row)
            parse = csv_record
        for n, row in rows:
            try:
                out.append(parse(row))
            except ValueError as exc:
                raise ValueError(f"{os.fspath(path)}, line {n}: not a bulklabel record ({exc})") from None
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def json_record_line(line: bytes) -> Record:
    return json_record(json.loads(line))


def jsonl_lines(data: bytes) -> list[bytes]:
    """JSONL split into lines, each with its ending: on ``\n`` only. (``str.splitlines`` also
    breaks at U+2028, U+2029 and U+0085, which may stand unescaped inside a file name.)"""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    return out + [lines[-1]] if lines[-1] else out
