"""Writers for prediction records: the output file's extension picks the format.

``.jsonl`` and ``.csv`` stream: each batch is written and flushed as it comes, so a
long job's output can be followed while it runs. ``.parquet`` buffers a bounded number of
rows per row group and appears under its final name only when complete.
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
from .records import FIELDS, Record

FORMATS = (".jsonl", ".csv", ".parquet")


class Sink(Protocol):
    def write(self, records: Iterable[Record]) -> None: ...

    def close(self) -> None: ...


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"cannot tell the output format from the file name: use one of "
            f"{', '.join(FORMATS)}. Received: --out {os.fspath(path)!r}"
        )
    return suffix


def open_sink(path: str | os.PathLike, append: bool = False) -> Sink:
    """A sink writing to a local file, by extension; checks dependencies before any work.
    ``append`` adds to an existing .jsonl/.csv file (see ``recorded_sources``)."""
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


class OutputLock:
    """An exclusive lock on an output file, so that two jobs never write one file.

    The lock is ``flock`` on ``.<name>.lock`` beside the output: the kernel releases it when
    the holder exits, however it exits, so a crash leaves nothing stale. The file says who
    holds it, for the message the second job prints.
    """

    def __init__(self, path: str | os.PathLike):
        import fcntl
        import socket
        import sys
        import time

        target = Path(path).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target.with_name(f".{target.name}.lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(self._fd)
            raise ConfigError(f"{os.fspath(path)} is being written by another job ({holder}): wait "
                              "for it to finish, or pick another --out") from None
        what = " ".join(["bulklabel", *sys.argv[1:2]])
        note = f"{what}, pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, note.encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def recorded_sources(path: str | os.PathLike) -> set[str]:
    """Sources that already have a record in an interrupted .jsonl/.csv output.

    A line cut short by a crash is dropped (the file is truncated to its last complete
    record), so appending after it yields well-formed output.
    """
    path = Path(path)
    fmt = output_format(path)
    if fmt == ".parquet":
        open_sink(path, append=True)  # raises the explanation
    if not path.exists():
        return set()
    done: set[str] = set()
    good_end = 0
    with open(path, "rb") as f:
        data = f.read()
    if fmt == ".jsonl":
        for line in jsonl_lines(data):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline: cut short")
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError):
                break
            good_end += len(line)
    else:
        text = data.decode("utf-8")
        complete = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(complete)))
        done = {csv_value(row["source"]) for row in rows if row.get("source")}
        good_end = len(complete.encode("utf-8"))
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


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


# A spreadsheet runs a cell that begins with one of these as a formula ("CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str) -> str:
    """``value`` safe for a spreadsheet: a leading ``'`` before a formula-like start (and before
    a ``'`` itself, so that ``csv_value`` can always undo it)."""
    return "'" + value if value.startswith(FORMULA_START + ("'",)) else value


def csv_value(cell: str) -> str:
    """Undo ``csv_cell``."""
    return cell[1:] if cell.startswith("'") else cell


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


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read a file written by a sink back into records (for tests and small merges)."""
    fmt = output_format(path)
    if fmt == ".jsonl":
        with open(path, "rb") as f:
            return [json.loads(line) for line in jsonl_lines(f.read()) if line.strip()]
    if fmt == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        out = []
        for row in rows:
            rec: Record = {k: (csv_value(row[k]) if row[k] != "" else None) for k in FIELDS}
            rec["score"] = float(rec["score"]) if rec["score"] is not None else None
            rec["top_k"] = json.loads(rec["top_k"]) if rec["top_k"] else []
            out.append(rec)
        return out
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def jsonl_lines(data: bytes) -> list[bytes]:
    """JSONL split into lines, each with its ending: on ``\n`` only. (``str.splitlines`` also
    breaks at U+2028, U+2029 and U+0085, which may stand unescaped inside a file name.)"""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    return out + [lines[-1]] if lines[-1] else out


def jsonl_bytes(records: Iterable[Record]) -> bytes:
    """Records as JSONL bytes (used for shards written to storage)."""
    buf = io.StringIO()
    for r in records:
        buf.write(to_json_line(r) + "\n")
    return buf.getvalue().encode("utf-8")
