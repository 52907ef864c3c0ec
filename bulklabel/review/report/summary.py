"""The report's summary section: the job as its summary describes it (any key may be missing)
and the counts computed from the records, with the summary's own counts beside them when they
differ (a partial job, a snapshot)."""

from __future__ import annotations

import math

from .tally import Tally
from .text import NA, decimal, duration, esc, number, percent, timestamp

# Summary keys shown in the details list, in this order, with how each is written.
DETAILS = (
    ("job_id", "Job", str), ("state", "State", str), ("kind", "Source kind", str),
    ("source", "Source", str), ("dest", "Destination", str), ("queue", "Queue", str),
    ("jobs", "Jobs", number), ("total", "Listed", number), ("skipped", "Skipped (unchanged)", number),
    ("submitted_at", "Submitted", timestamp), ("started_at", "Started", timestamp),
    ("finished_at", "Finished", timestamp),
)
SHOWN = {"title", "models", "images", "done", "errors", "seconds", "images_per_second"} | {k for k, _, _ in DETAILS}


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _seconds(summary: dict) -> float | None:
    seconds = _num(summary.get("seconds"))
    if seconds is None:
        start = _num(summary.get("started_at")) or _num(summary.get("submitted_at"))
        end = _num(summary.get("finished_at"))
        if start is not None and end is not None and end >= start:
            seconds = end - start
    return seconds


def _speed(summary: dict, images: int) -> float | None:
    speed = _num(summary.get("images_per_second"))
    seconds = _seconds(summary)
    if speed is None and seconds and images:
        speed = images / seconds
    return speed


def _card(name: str, value: str, note: str = "", kind: str = "", unit: str = "") -> str:
    unit = f' <span class="unit">{esc(unit)}</span>' if unit else ""
    return (f'<div class="card{" " + kind if kind else ""}"><div class="card-name">{esc(name)}</div>'
            f'<div class="card-value">{esc(value)}{unit}</div>'
            f'<div class="card-note">{esc(note) if note else "&nbsp;"}</div></div>')


def _models(summary: dict, tally: Tally) -> str:
    named = summary.get("models")
    names = [str(m) for m in named if m is not None] if isinstance(named, (list, tuple)) else []
    counted = {m: n for m, n in tally.models.items() if m is not None}
    for model in sorted(counted, key=lambda m: (-counted[m], m)):
        if model not in names:
            names.append(model)
    if not names:
        return NA
    items = [f'<code>{esc(m)}</code>' + (f' <span class="muted">({number(counted[m])} records)</span>'
                                        if m in counted and len(counted) > 1 else "") for m in names[:20]]
    if len(names) > 20:
        items.append(f'<span class="muted">and {number(len(names) - 20)} more</span>')
    return ", ".join(items)


def _differences(summary: dict, tally: Tally) -> str:
    """A note when the summary's counts are not the records' counts."""
    said = []
    images = _num(summary.get("images"))
    if images is None:
        images = _num(summary.get("done"))
    if images is not None and int(images) != tally.records:
        said.append(f"{number(images)} images")
    errors = _num(summary.get("errors"))
    if errors is not None and int(errors) != tally.errors:
        said.append(f"{number(errors)} errors")
    if not said:
        return ""
    return (f'<p class="note">The job\'s own counts say {esc(" and ".join(said))}; the figures here are '
            f'computed from the {number(tally.records)} records that were read.</p>')


def render(summary: dict, tally: Tally) -> str:
    seconds = _seconds(summary)
    speed = _speed(summary, tally.records)
    labeled_note = percent(tally.labeled, tally.records) + " of images" if tally.records else ""
    cards = [
        _card("Images", number(tally.records), "records read"),
        _card("Labeled", number(tally.labeled), labeled_note),
        _card("Errors", number(tally.errors), percent(tally.errors, tally.records) if tally.records else "",
              "bad" if tally.errors else ""),
        _card("Labels", number(len(tally.labels)), "distinct top-1 labels"),
        _card("Mean score", decimal(tally.mean_score, 3), "top-1, labeled images"),
        _card("Speed", decimal(speed, 0 if speed >= 100 else 1) if speed is not None else NA,
              f"in {duration(seconds)}" if seconds is not None else "", unit="img/s" if speed is not None else ""),
    ]
    rows = [f"<dt>Model{'s' if len(tally.models) > 1 else ''}</dt><dd>{_models(summary, tally)}</dd>"]
    for key, name, show in DETAILS:
        value = summary.get(key)
        if value is not None and value != "":
            rows.append(f"<dt>{esc(name)}</dt><dd>{esc(show(value))}</dd>")
    if tally.unlabeled:
        rows.append(f"<dt>No label, no error</dt><dd>{number(tally.unlabeled)}</dd>")
    for key in sorted(k for k in summary if k not in SHOWN):
        value = summary[key]
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
            rows.append(f"<dt>{esc(key)}</dt><dd>{esc(value)}</dd>")
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
            f'{_differences(summary, tally)}<dl class="details">{"".join(rows)}</dl></section>')
