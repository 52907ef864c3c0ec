"""Label Studio's formats: tasks with pre-annotations, the labeling config, and its export.

Import (what ``export --format labelstudio`` writes): a JSON list of tasks, each::

    {"data": {"image": URL, "source": ..., "label": ..., "score": ..., "review": "doubtful"},
     "predictions": [{"model_version": MODEL, "score": TOP1,
                      "result": [{"id": ..., "from_name": "choice", "to_name": "image",
                                  "type": "choices", "value": {"choices": [LABEL]}}]}]}

``data.source`` keeps the image's own location, so the reviews can be mapped back whatever
URL the browser was given; the other ``data`` fields show as columns in the Data Manager
(sort by ``score`` to review the lowest first).

Export (what ``import-reviews`` reads): Label Studio's JSON export, the same tasks with
``annotations`` (each with ``result``, ``was_cancelled``, ``ground_truth``, ``completed_by``)
beside ``predictions``. ``decide`` turns a task's annotations into one label, or says why not.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

FROM_NAME = "choice"
TO_NAME = "image"
DATA_KEY = "image"


def labeling_config(class_names: list[str], from_name: str = FROM_NAME, to_name: str = TO_NAME) -> str:
    """The labeling config for these tasks: an ``<Image>`` and single ``<Choices>`` with every class, in order."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in class_names)
    return (f"<View>\n"
            f"  <Image name={quoteattr(to_name)} value=\"${DATA_KEY}\" zoom=\"true\"/>\n"
            f"  <Header value=\"Which class is this image?\"/>\n"
            f"  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice=\"single\" "
            f"showInline=\"false\">\n{choices}\n  </Choices>\n</View>\n")


def task(record: dict, url: str, reason: str, from_name: str = FROM_NAME, to_name: str = TO_NAME) -> dict:
    """One import task with the record's top-1 label as a prediction."""
    label, score = record["label"], float(record["score"])
    runner_up = record["top_k"][1] if len(record.get("top_k") or []) > 1 else None
    data: dict[str, Any] = {DATA_KEY: url, "source": record["source"], "label": label, "score": score,
                            "review": reason}
    if runner_up:
        data["runner_up"] = f"{runner_up['label']} ({runner_up['score']:.3f})"
    if record.get("job_id"):
        data["job_id"] = record["job_id"]
    result_id = hashlib.blake2b(record["source"].encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()
    return {"data": data,
            "predictions": [{"model_version": record.get("model") or "unknown", "score": score,
                             "result": [{"id": result_id, "from_name": from_name, "to_name": to_name,
                                         "type": "choices", "value": {"choices": [label]}}]}]}


@dataclass
class Decision:
    """What a reviewed task says: a label, or why there is none (``status``)."""

    status: str                      # labeled | unannotated | skipped | conflict | unusable
    label: str | None = None
    votes: dict[str, int] = field(default_factory=dict)
    detail: str = ""


def _choices(result: list, from_name: str | None) -> list[list[str]]:
    """The choices lists of the ``choices`` results in an annotation (one per matching control)."""
    found = []
    for item in result or []:
        if not isinstance(item, dict) or item.get("type") != "choices":
            continue
        if from_name is not None and item.get("from_name") != from_name:
            continue
        values = (item.get("value") or {}).get("choices")
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            found.append(values)
    return found


def predicted(task: dict, from_name: str | None) -> tuple[str | None, str | None, float | None]:
    """(label, model_version, score) of the task's model prediction, if it has one."""
    for prediction in task.get("predictions") or []:
        if not isinstance(prediction, dict):
            continue
        picks = _choices(prediction.get("result"), from_name)
        if picks and len(picks[0]) == 1:
            score = prediction.get("score")
            return picks[0][0], prediction.get("model_version"), score if isinstance(score, (int, float)) else None
    data = task.get("data") or {}
    label = data.get("label")
    return (label, None, data.get("score")) if isinstance(label, str) else (None, None, None)


def decide(task: dict, from_name: str | None, on_conflict: str = "skip") -> Decision:
    """One label from a task's annotations.

    Cancelled (skipped) annotations do not count; a ground-truth annotation, where there is
    one, decides; otherwise annotators who agree decide, and a disagreement is a conflict —
    left out (``skip``) or settled by a strict majority (``majority``). An annotation that
    picks several classes counts as no vote."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if not annotations:
        return Decision("unannotated")
    live = [a for a in annotations if not a.get("was_cancelled")]
    if not live:
        return Decision("skipped", detail="every annotation was skipped")
    votes: Counter[str] = Counter()
    truth: Counter[str] = Counter()
    several = 0
    for annotation in live:
        picks = _choices(annotation.get("result"), from_name)
        if not picks:
            continue
        if len(picks[0]) != 1:
            several += 1
            continue
        votes[picks[0][0]] += 1
        if annotation.get("ground_truth"):
            truth[picks[0][0]] += 1
    if not votes:
        why = "annotations pick several classes" if several else "no choice in the annotations"
        return Decision("unusable" if several else "skipped", detail=why)
    tally = dict(votes)
    if len(truth) == 1:
        return Decision("labeled", next(iter(truth)), tally, "ground truth")
    if len(votes) == 1:
        return Decision("labeled", next(iter(votes)), tally)
    (first, n1), (_, n2) = votes.most_common(2)
    if on_conflict == "majority" and n1 > sum(votes.values()) / 2:
        return Decision("labeled", first, tally, "majority")
    return Decision("conflict", None, tally, "annotators disagree")
