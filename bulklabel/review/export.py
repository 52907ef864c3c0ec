"""``bulklabel export``: the records people should look at, for Label Studio or as records.

SOURCE (``source.open_records``) → selection (``select.Selection``) → a Label Studio task
list (``labelstudio.task``, written as one JSON array, atomically) or the selected records
as ``.jsonl`` / ``.csv`` / ``.parquet``. ``--config-out`` writes the matching labeling config.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError
from ..sinks import open_sink, output_format
from .gc_pause import gc_paused
from .image_urls import ImageUrlError, ImageUrls
from .labelstudio import FROM_NAME, TO_NAME, labeling_config, task
from .select import Selection
from .source import Records

FORMATS = ("labelstudio", "jsonl", "csv", "parquet")


@dataclass
class ExportOptions:
    out: str
    format: str = "labelstudio"
    selection: Selection | None = None
    image_urls: ImageUrls | None = None
    from_name: str = FROM_NAME
    to_name: str = TO_NAME
    config_out: str | None = None
    class_names: list[str] | None = None   # the model's, in order; None: the labels the records show


def check(opts: ExportOptions) -> None:
    """Fail fast on options that cannot work, before any record is read."""
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}. Received: {opts.format!r}")
    if opts.format == "labelstudio":
        if not opts.out.lower().endswith(".json"):
            raise ConfigError(f"--format labelstudio writes a JSON task list: --out must end in .json. "
                              f"Received: {opts.out!r}")
    elif output_format(opts.out) != "." + opts.format:
        raise ConfigError(f"--format {opts.format} needs --out ending in .{opts.format}. Received: {opts.out!r}")
    if opts.config_out and opts.format != "labelstudio":
        raise ConfigError("--config-out goes with --format labelstudio")
    for name, value in (("--from-name", opts.from_name), ("--to-name", opts.to_name)):
        if not value or not value.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{name} must be a Label Studio tag name (letters, digits, _ and -). Received: {value!r}")
    folder = os.path.dirname(os.path.abspath(opts.out))
    if not os.path.isdir(folder):
        raise ConfigError(f"--out {opts.out}: folder {folder} does not exist")


def _write_json_list(path: str, items: Iterable[dict]) -> int:
    tmp = f"{path}.tmp-{os.getpid()}"
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[")
            for item in items:
                f.write(",\n" if n else "\n")
                f.write(json.dumps(item, ensure_ascii=False))
                n += 1
            f.write("\n]\n" if n else "]\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return n


def run(records: Records, opts: ExportOptions) -> dict:
    check(opts)
    with gc_paused():
        return _run(records, opts)


def _run(records: Records, opts: ExportOptions) -> dict:
    selection = opts.selection or Selection()
    urls = opts.image_urls or ImageUrls()
    seen_labels: dict[str, None] = {}
    no_url: dict[str, int] = {}

    def note_labels(batches):
        for batch in batches:
            if opts.class_names is None:
                for record in batch:
                    for entry in record.get("top_k") or []:
                        seen_labels.setdefault(entry["label"])
            yield batch

    picked = selection.apply(note_labels(records.batches()))
    if opts.format == "labelstudio":
        def tasks():
            for reason, record in picked:
                try:
                    url = urls(record["source"])
                except ImageUrlError as exc:
                    no_url[str(exc)] = no_url.get(str(exc), 0) + 1
                    continue
                yield task(record, url, reason, opts.from_name, opts.to_name)

        written = _write_json_list(opts.out, tasks())
    else:
        written, pending = 0, []
        sink = open_sink(opts.out)
        try:
            for _, record in picked:
                pending.append(record)
                if len(pending) == 4096:
                    sink.write(pending)
                    written, pending = written + len(pending), []
            sink.write(pending)
            written += len(pending)
        finally:
            sink.close()
    names = opts.class_names if opts.class_names is not None else sorted(seen_labels)
    if opts.config_out:
        if not names:
            raise ConfigError("no class names for --config-out: the records hold no labels; give --classes")
        with open(opts.config_out, "w", encoding="utf-8") as f:
            f.write(labeling_config(names, opts.from_name, opts.to_name))
    report = {"out": opts.out, "format": opts.format, "written": written, "records": selection.records,
              "errors_left_out": selection.errors, "no_url_left_out": sum(no_url.values()),
              "doubtful": selection.doubtful, "sampled": selection.sampled, "classes": len(names)}
    what = "tasks" if opts.format == "labelstudio" else "records"
    print(f"bulklabel: export: {written} {what} into {opts.out} ({selection.describe()}) from "
          f"{selection.records} records; {selection.errors} error records left out", file=sys.stderr)
    for reason, n in sorted(no_url.items()):
        print(f"bulklabel: export: {n} images left out, no URL: {reason}", file=sys.stderr)
    if opts.config_out:
        origin = "the model's" if opts.class_names is not None else "the labels seen in the records' top-k"
        print(f"bulklabel: export: labeling config with {len(names)} classes ({origin}) in {opts.config_out}"
              + ("" if opts.class_names is not None else "; give --classes MODEL for all of the model's, in order"),
              file=sys.stderr)
    return report
