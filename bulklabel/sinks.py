"""Writers for prediction records: the output file's extension picks the format.

``.jsonl`` and ``.csv`` stream: each batch is written and flushed as it comes, so a
long job's output can be followed while it runs. ``.parquet`` buffers a bounded number of
rows per row group and appears under its final name only when complete.

``--resume`` (``resume_output``) keeps every valid record of an interrupted .jsonl/.csv
output, drops its damaged lines and a partial last record, and says what it dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    """Sources that already have a record in an interrupted .jsonl/.csv output, after
    ``resume_output`` has made the file safe to append to."""
    return resume_output(path).done


@dataclass
class OutputScan:
    """What an existing .jsonl/.csv output holds, for ``--resume`` (see ``scan_output``).

    Line numbers count from 1 and break at ``\n`` only (a CSV record may span several)."""

    size: int                                  # bytes scanned
    keep: list[tuple[int, int]] = field(default_factory=list)  # byte ranges kept, in order
    done: set[str] = field(default_factory=set)  # sources of the valid records
    records: int = 0                           # valid records kept
    damaged: list[int] = field(default_factory=list)  # lines dropped: not a valid record
    cut: list[int] = field(default_factory=list)      # lines dropped: a partial last record

    @property
    def kept_size(self) -> int:
        return sum(end - start for start, end in self.keep)

    @property
    def is_prefix(self) -> bool:
        """Whether what is kept is the file's beginning (truncation is enough)."""
        return self.kept_size == (self.keep[-1][1] if self.keep else 0)

    def kept_bytes(self, data: bytes) -> bytes:
        return b"".join(data[start:end] for start, end in self.keep)

    def notes(self, name: str) -> list[str]:
        """What was dropped, in words; empty when nothing was."""
        out = []
        if self.damaged:
            n = len(self.damaged)
            out.append(f"resume: dropped {n} damaged line{'s' if n != 1 else ''} of {name} "
                       f"({line_list(self.damaged)}); {'its image' if n == 1 else 'their images'} "
                       "will be labeled again")
        if self.cut:
            out.append(f"resume: removed the partial last record of {name} ({line_list(self.cut)}, "
                       "cut short when the job stopped); its image will be labeled again")
        return out


def line_list(lines: list[int], most: int = 10) -> str:
    """``[3, 4, 5, 9]`` as ``"lines 3-5, 9"``; at most ``most`` runs, then how many more."""
    runs: list[list[int]] = []
    for n in lines:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    words = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most]]
    if len(runs) > most:
        words.append(f"and {sum(b - a + 1 for a, b in runs[most:])} more")
    return ("line " if len(lines) == 1 else "lines ") + ", ".join(words)


def resume_output(path: str | os.PathLike) -> OutputScan:
    """Make an interrupted .jsonl/.csv output safe to append to, and say what it holds.

    Every valid record is kept, wherever it is. A partial last record (the job was stopped
    while writing it: no line ending, a cut multi-byte character, an open CSV quote) is cut
    off by truncation. Damaged lines elsewhere (not a record, wrong columns, bytes that are
    not UTF-8) are removed by rewriting the file without them (a temporary file, then
    ``os.replace``, so a crash leaves the old or the new file, never half of one); their
    images have no record, so a resumed job labels them again. ``OutputScan.notes`` says
    what was dropped. A file that does not look like bulklabel output is refused untouched.
    """
    path = Path(path)
    fmt = output_format(path)
    if fmt == ".parquet":
        open_sink(path, append=True)  # raises the explanation
    if not path.exists():
        return OutputScan(0)
    data = path.read_bytes()
    scan = scan_output(data, fmt, os.fspath(path))
    if scan.kept_size == scan.size:
        return scan
    if scan.is_prefix:
        with open(path, "r+b") as f:
            f.truncate(scan.kept_size)
            os.fsync(f.fileno())
    else:
        replace_file(path, scan.kept_bytes(data))
    return scan


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same folder, fsync, ``os.replace``), keeping its mode;
    a symbolic link stays one (its target is replaced)."""
    path = Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def scan_output(data: bytes, fmt: str, name: str = "the output") -> OutputScan:
    """Sort the bytes of a .jsonl/.csv output (``fmt``) into valid records, damaged lines and a
    partial last record (see ``resume_output``); reads nothing and changes nothing."""
    return _scan_csv(data, name) if fmt == ".csv" else _scan_jsonl(data, name)


def _scan_jsonl(data: bytes, name: str) -> OutputScan:
    scan = OutputScan(len(data))
    start = 0
    for number, line in enumerate(jsonl_lines(data), 1):
        end = start + len(line)
        if not line.endswith(b"\n"):
            scan.cut.append(number)
        elif not line.strip():
            scan.keep.append((start, end))  # a blank line: readers skip it
        else:
            try:
                record = json_record(json.loads(line.decode("utf-8")))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError included
                scan.damaged.append(number)
            else:
                scan.keep.append((start, end))
                scan.done.add(record["source"])
                scan.records += 1
        start = end
    if scan.damaged and not scan.records:
        raise ConfigError(
            f"{name} does not look like bulklabel output: none of its {len(scan.damaged)} complete "
            "lines is a record, so --resume will not rewrite it. Move it away or pick another --out")
    scan.keep = _merged(scan.keep)
    return scan


def _scan_csv(data: bytes, name: str) -> OutputScan:
    """CSV records may span lines (a quoted cell with a newline), so the csv parser runs from
    the top. A record that does not parse or is not valid loses its first line only, and the
    parser starts again on the next line, so a damaged line costs no record but its own. The
    file ending inside a quoted cell is a partial last record, whatever it spans: a damaged
    line that opens a quote never closed drops the rest of the file (labeled again, never
    wrongly skipped)."""
    scan = OutputScan(len(data))
    lines = jsonl_lines(data)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    texts, readable = [], []
    for line in lines:
        try:
            texts.append(line.decode("utf-8"))
            readable.append(True)
        except UnicodeDecodeError:  # keep its structure for the parser; its record is damaged
            texts.append(line.decode("utf-8", "surrogateescape"))
            readable.append(False)
    header = True
    i = 0  # the line the next record starts on
    while i < len(lines):
        feed = _Feed(texts, i)
        reader = csv.reader(feed, strict=True)
        while i < len(lines):
            try:
                row = next(reader)
            except StopIteration:
                i = len(lines)
                break
            except csv.Error:
                if feed.exhausted:  # the file ends inside a quoted cell
                    scan.cut.extend(range(i + 1, len(lines) + 1))
                    i = len(lines)
                else:
                    scan.damaged.append(i + 1)
                    i += 1
                break  # a new parser from line i
            end = feed.next_line  # the record took lines i .. end - 1
            if not lines[end - 1].endswith(b"\n"):
                scan.cut.extend(range(i + 1, end + 1))
            elif not row:
                scan.keep.append((offsets[i], offsets[end]))  # a blank line: readers skip it
            elif header:
                if row != list(FIELDS) or not all(readable[i:end]):
                    raise ConfigError(
                        f"{name} does not look like bulklabel output: its first line is not the header "
                        f"{','.join(FIELDS)}, so --resume will not rewrite it. Move it away or pick another --out")
                scan.keep.append((offsets[i], offsets[end]))
                header = False
            else:
                try:
                    if not all(readable[i:end]):
                        raise ValueError("not UTF-8")
                    record = csv_record(row)
                except ValueError:
                    scan.damaged.append(i + 1)
                    i += 1
                    break  # a new parser from line i
                scan.keep.append((offsets[i], offsets[end]))
                scan.done.add(record["source"])
                scan.records += 1
            i = end
    if header and scan.damaged:
        raise ConfigError(f"{name} does not look like bulklabel output: it has no header line "
                          f"{','.join(FIELDS)}, so --resume will not rewrite it. Move it away or pick another --out")
    scan.keep = _merged(scan.keep)
    return scan


class _Feed:
    """Lines for ``csv.reader`` from ``start`` on, counting what it took."""

    def __init__(self, texts: list[str], start: int):
        self._texts = texts
        self.next_line = start
        self.exhausted = False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.next_line >= len(self._texts):
            self.exhausted = True
            raise StopIteration
        self.next_line += 1
        return self._texts[self.next_line - 1]


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


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
            rows = [row for row in csv.reader(f, strict=True) if row]
        if rows and rows[0] != list(FIELDS):
            raise ValueError(f"{os.fspath(path)}: the first line is not the header {','.join(FIELDS)}")
        return [csv_record(row) for row in rows[1:]]
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
