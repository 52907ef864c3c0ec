"""How far the model and its reviewers agree, on the images people labeled.

Pairs are (model's label, people's label). Reports accuracy, per-class precision and recall
(a class is a row if the model or the people used it), the confusion matrix (rows: people,
columns: model) and the most frequent corrections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def agreement(pairs: Iterable[tuple[str, str]], order: list[str] | None = None, top: int = 20) -> dict:
    """``pairs`` of (model label, reviewed label); ``order`` puts known classes first."""
    counts: Counter[tuple[str, str]] = Counter(pairs)
    total = sum(counts.values())
    agreed = sum(n for (model, human), n in counts.items() if model == human)
    used = {label for pair in counts for label in pair}
    classes = [c for c in (order or []) if c in used]
    classes += sorted(used - set(classes))
    per_class = {}
    for name in classes:
        true_pos = counts[(name, name)]
        predicted = sum(n for (model, _), n in counts.items() if model == name)
        actual = sum(n for (_, human), n in counts.items() if human == name)
        precision = true_pos / predicted if predicted else None
        recall = true_pos / actual if actual else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall else None)
        per_class[name] = {"precision": _round(precision), "recall": _round(recall), "f1": _round(f1),
                           "reviewed": actual, "predicted": predicted}
    corrections = [{"model": model, "people": human, "count": n}
                   for (model, human), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                   if model != human][:top]
    return {
        "reviewed": total, "agreed": agreed, "accuracy": _round(agreed / total if total else None),
        "classes": classes, "per_class": per_class,
        "confusion": {"rows": "people", "columns": "model", "labels": classes,
                      "matrix": [[counts[(model, human)] for model in classes] for human in classes]},
        "corrections": corrections,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def render(result: dict, width: int = 24) -> str:
    """The agreement as text for a terminal."""
    if not result["reviewed"]:
        return "no reviewed image has a model prediction to compare with\n"
    lines = [f"model vs reviewers on {result['reviewed']} images: accuracy {result['accuracy']:.1%} "
             f"({result['agreed']} agreed)", "",
             f"{'class':<{width}} {'precision':>9} {'recall':>7} {'reviewed':>8} {'predicted':>9}"]
    for name, row in result["per_class"].items():
        p = "-" if row["precision"] is None else f"{row['precision']:.2f}"
        r = "-" if row["recall"] is None else f"{row['recall']:.2f}"
        lines.append(f"{_cut(name, width):<{width}} {p:>9} {r:>7} {row['reviewed']:>8} {row['predicted']:>9}")
    labels = result["confusion"]["labels"]
    if len(labels) <= 12:
        cell = max(5, *(len(_cut(c, 10)) for c in labels))
        lines += ["", "confusion (rows: people, columns: model)",
                  " " * width + " " + " ".join(f"{_cut(c, 10):>{cell}}" for c in labels)]
        for name, row in zip(labels, result["confusion"]["matrix"]):
            lines.append(f"{_cut(name, width):<{width}} " + " ".join(f"{n:>{cell}}" for n in row))
    if result["corrections"]:
        lines += ["", "most frequent corrections"]
        lines += [f"  model said {c['model']}, people said {c['people']}: {c['count']} "
                  + ("time" if c["count"] == 1 else "times") for c in result["corrections"]]
    return "\n".join(lines) + "\n"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
