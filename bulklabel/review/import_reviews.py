"""``bulklabel import-reviews``: a Label Studio export → a training dataset + the agreement.

Each task is mapped back to its image (``data.source``, which ``export`` writes; else
``data.image`` when it is an ``s3://`` URI, a local path or a local-files / prefix URL the
``--image-url`` given maps back), its annotations decided (``labelstudio.decide``), and the
decided images written by ``dataset_out.DatasetWriter``. The agreement between the model's
prediction and the people's label is printed and written as JSON (``--report``, default
``DATA/review-summary.json``; ``train`` ignores it).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass

from ..errors import ConfigError
from .agreement import agreement, render
from .dataset_out import DatasetWriter
from .image_urls import ImageUrls
from .labelstudio import decide, predicted

SUMMARY_NAME = "review-summary.json"
MAX_EXPORT_BYTES = 2 << 30


@dataclass
class ImportOptions:
    export: str
    out: str
    mode: str | None = None          # link | copy | list; None: link for local images, list if any is on S3
    from_name: str | None = None     # None: the only Choices control the export uses
    on_conflict: str = "skip"        # skip | majority
    image_urls: ImageUrls | None = None
    report: str | None = None


def read_export(path: str) -> list[dict]:
    try:
        if os.path.getsize(path) > MAX_EXPORT_BYTES:
            raise ConfigError(f"{path} is over 2 GiB: export the project in parts (filter by a data field)")
        with open(path, encoding="utf-8") as f:
            tasks = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not JSON ({exc}): export the project from Label Studio as 'JSON'") from None
    if isinstance(tasks, dict) and isinstance(tasks.get("tasks"), list):
        tasks = tasks["tasks"]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ConfigError(f"{path} is not a Label Studio JSON export (a list of tasks): export the project "
                          "as 'JSON', not 'JSON-MIN' or CSV")
    return tasks


def choice_control(tasks: list[dict], given: str | None) -> str:
    """The ``from_name`` of the Choices control whose answers are the labels."""
    if given:
        return given
    names = Counter(item.get("from_name") for t in tasks for a in (t.get("annotations") or [])
                    if isinstance(a, dict) for item in (a.get("result") or [])
                    if isinstance(item, dict) and item.get("type") == "choices")
    if len(names) > 1:
        raise ConfigError(f"the export has several Choices controls ({', '.join(sorted(map(str, names)))}): "
                          "say which holds the class with --from-name")
    return next(iter(names), "choice")


def _source(task: dict, urls: ImageUrls) -> str | None:
    data = task.get("data") or {}
    if isinstance(data.get("source"), str) and data["source"]:
        return data["source"]
    image = data.get("image")
    return urls.to_source(image) if isinstance(image, str) else None


def _one_label_per_image(decided: list[tuple[str, str, str | None]], status: Counter, conflicts: list):
    """The same image in several tasks: once if the labels agree, else a conflict (left out)."""
    labels: dict[str, set[str]] = {}
    for source, label, _ in decided:
        labels.setdefault(source, set()).add(label)
    kept, seen = [], set()
    for source, label, model in decided:
        if source in seen:
            continue
        seen.add(source)
        if len(labels[source]) > 1:
            status["labeled"] -= 1
            status["conflict"] += 1
            conflicts.append({"task": None, "source": source,
                              "votes": {name: 1 for name in sorted(labels[source])}})
            continue
        kept.append((source, label, model))
    return kept


def run(opts: ImportOptions) -> dict:
    if opts.on_conflict not in ("skip", "majority"):
        raise ConfigError(f"--on-conflict must be skip or majority. Received: {opts.on_conflict!r}")
    tasks = read_export(opts.export)
    from_name = choice_control(tasks, opts.from_name)
    urls = opts.image_urls or ImageUrls()
    status: Counter[str] = Counter()
    decided: list[tuple[str, str, str | None]] = []   # (source, people's label, model's label)
    conflicts, models = [], Counter()
    for t in tasks:
        decision = decide(t, from_name, opts.on_conflict)
        status[decision.status] += 1
        if decision.status == "conflict":
            conflicts.append({"task": t.get("id"), "source": (t.get("data") or {}).get("source"),
                              "votes": decision.votes})
        if decision.status != "labeled":
            continue
        source = _source(t, urls)
        if source is None:
            status["labeled"] -= 1
            status["no source"] += 1
            continue
        model_label, version, _ = predicted(t, from_name)
        if version:
            models[version] += 1
        decided.append((source, decision.label, model_label))
    decided = _one_label_per_image(decided, status, conflicts)
    mode = opts.mode or ("list" if any(s.startswith("s3://") for s, _, _ in decided) else "link")
    if mode == "link" and any("://" in s and not s.startswith("file:") for s, _, _ in decided):
        raise ConfigError("some reviewed images are on S3 (or URLs): they cannot be linked; use --list "
                          "(train reads them where they are) or --copy")
    writer = DatasetWriter(opts.out, mode)
    for source, label, _ in decided:
        writer.add(source, label)
    writer.close()
    pairs = [(model, people) for _, people, model in decided if model is not None]
    result = agreement(pairs)
    summary = {
        "export": opts.export, "dataset": writer.root, "mode": mode, "from_name": from_name,
        "tasks": len(tasks), "labeled": sum(writer.counts.values()), "per_class": dict(sorted(writer.counts.items())),
        "unannotated": status["unannotated"], "skipped": status["skipped"], "conflicts": status["conflict"],
        "unusable": status["unusable"], "no_source": status["no source"],
        "missing_images": [{"source": s, "reason": r} for s, r in writer.missing],
        "models": dict(models), "conflicting_tasks": conflicts, "agreement": result,
    }
    report = opts.report or os.path.join(writer.root, SUMMARY_NAME)
    with open(report, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")
    _print(summary, report)
    return summary


def _print(summary: dict, report: str) -> None:
    print(render(summary["agreement"]), end="")
    parts = [f"{summary['labeled']} images in {len(summary['per_class'])} classes ({summary['mode']})"]
    for key, what in (("unannotated", "without an annotation"), ("skipped", "skipped or cancelled"),
                      ("conflicts", "with annotators disagreeing"), ("unusable", "with several classes picked"),
                      ("no_source", "whose image could not be mapped back")):
        if summary[key]:
            parts.append(f"{summary[key]} {what}")
    if summary["missing_images"]:
        parts.append(f"{len(summary['missing_images'])} images missing")
    print(f"\nbulklabel: import-reviews: {summary['tasks']} tasks → {summary['dataset']}: " + "; ".join(parts)
          + f"\nbulklabel: import-reviews: summary and agreement in {report}", file=sys.stderr)
    for conflict in summary["conflicting_tasks"][:10]:
        votes = ", ".join(f"{label} × {n}" for label, n in conflict["votes"].items())
        print(f"  conflict: task {conflict['task']} ({conflict['source']}): {votes}", file=sys.stderr)
    for missing in summary["missing_images"][:10]:
        print(f"  missing: {missing['source']}: {missing['reason']}", file=sys.stderr)
    if summary["per_class"] and len(summary["per_class"]) < 2:
        print("bulklabel: note: train needs at least 2 classes with images", file=sys.stderr)
