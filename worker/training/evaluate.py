"""``bulklabel evaluate``: accuracy, per-class precision/recall/F1 and a confusion matrix.

Images are labeled through the same engine (and records) as ``classify``; metrics are then
computed from those records, so the accuracy here is what ``classify`` output gives on the
same files. An image that cannot be decoded counts as a miss (column ``error``).
DATA is a folder of class subfolders; with ``train/`` and ``val/``, ``val/`` is evaluated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from bulklabel.errors import ConfigError
from bulklabel.options import EngineOptions
from bulklabel.records import Record

from ..inference.engine import open_engine
from ..inference.models import LoadedModel
from .dataset import dataset_tree

ERROR_COLUMN = "error"
OTHER_COLUMN = "other"


def labeled_files(data: str) -> list[tuple[str, str]]:
    """(location, true class name) for every image in DATA (its val/ split if it has one)."""
    tree, _ = dataset_tree(data)
    classes = tree.get("val") or tree.get("") or {}
    if not classes:
        raise ConfigError(f"no class folders with images in {data} (expected DATA/<class>/<image>, "
                          "or lists in DATA/lists/<class>.txt)")
    return [(loc, name) for name in sorted(classes) for loc in sorted(classes[name])]


def metrics(records: Iterable[Record], truth: dict[str, str], class_names: list[str]) -> dict:
    """Metrics from classify-style records and the true class of each source."""
    labels = sorted(set(truth.values()))
    columns = labels + [c for c in class_names if c not in labels]
    extra = []
    index = {c: i for i, c in enumerate(columns)}
    matrix = [[0] * len(columns) for _ in labels]
    errors = correct = total = 0
    for r in records:
        true = truth[r["source"]]
        total += 1
        if r["error"]:
            errors += 1
            predicted = ERROR_COLUMN
        else:
            predicted = r["label"] if r["label"] in index else OTHER_COLUMN
        if predicted not in index:
            index[predicted] = len(columns) + len(extra)
            extra.append(predicted)
            for row in matrix:
                row.append(0)
        matrix[labels.index(true)][index[predicted]] += 1
        correct += predicted == true
    columns += extra
    per_class = {}
    for i, name in enumerate(labels):
        tp = matrix[i][index[name]]
        support = sum(matrix[i])
        predicted_as = sum(row[index[name]] for row in matrix)
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": round(precision, 4), "recall": round(recall, 4),
                           "f1": round(f1, 4), "support": support}
    return {
        "accuracy": round(correct / total, 6) if total else 0.0,
        "images": total, "correct": correct, "errors": errors,
        "per_class": per_class,
        "macro_f1": round(sum(c["f1"] for c in per_class.values()) / len(per_class), 4) if per_class else 0.0,
        "confusion": {"rows": labels, "columns": columns, "matrix": matrix},
    }


def evaluate(model: LoadedModel, data: str, options: EngineOptions) -> dict:
    files = labeled_files(data)
    truth = dict(files)
    missing = sorted(set(truth.values()) - set(model.class_names or []))
    records: list[Record] = []
    open_engine(model, options).run([loc for loc, _ in files], records.extend)
    result = metrics(records, truth, list(model.class_names or []))
    result["model"] = model.model_id
    result["data"] = data if data.startswith("s3://") else os.path.abspath(data)
    if missing:
        result["unknown_classes"] = missing
    return result


def render(result: dict) -> str:
    lines = [f"model {result['model']} on {result['data']}",
             f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['images']}), "
             f"{result['errors']} unreadable, macro F1 {result['macro_f1']:.4f}", "",
             f"{'class':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, c in result["per_class"].items():
        lines.append(f"{name[:23]:<24}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10}")
    conf = result["confusion"]
    width = max(8, *(len(c[:12]) + 2 for c in conf["columns"]))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * 24 + "".join(f"{c[:12]:>{width}}" for c in conf["columns"])]
    for name, row in zip(conf["rows"], conf["matrix"]):
        lines.append(f"{name[:23]:<24}" + "".join(f"{v:>{width}}" for v in row))
    if result.get("unknown_classes"):
        lines.append(f"\nnote: the model does not know class(es) {', '.join(result['unknown_classes'])}")
    return "\n".join(lines)
