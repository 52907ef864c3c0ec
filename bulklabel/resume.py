"""``--resume``: make an interrupted .jsonl/.csv output safe to append to, and say what it holds.

``resume_output`` keeps every valid record of the output, drops its damaged lines and a
partial last record, and says what it dropped (``OutputScan.notes``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .record_codec import csv_record, json_record, jsonl_lines, output_format
from .records import FIELDS
from .sinks import open_sink


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
