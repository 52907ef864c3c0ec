"""The report's sections after the summary: labels, scores, contact sheet, lowest confidence,
errors. Each function returns one ``<section>``; every text from the records is escaped."""

from __future__ import annotations

from . import charts
from .tally import BINS, Tally
from .text import esc, number, percent, score, short
from .thumbs import Thumb

LOW = 0.5           # a score below this is flagged
MID = 0.8           # a score below this is drawn in amber
MAX_REASONS = 50    # distinct error reasons listed
OPEN_ERRORS = 20    # the list of error images starts open up to this many


def labels(tally: Tally, top: int) -> str:
    ranked = tally.ranked_labels()
    if not ranked:
        return '<section id="labels"><h2>Images per label</h2><p class="empty">No labeled images.</p></section>'
    rows = [(name, t.count, False) for name, t in ranked[:top]]
    rest = ranked[top:]
    if rest:
        rows.append((f"other ({number(len(rest))} labels)", sum(t.count for _, t in rest), True))
    note = (f"{number(len(ranked))} labels over {number(tally.labeled)} labeled images"
            + (f"; the top {number(top)} are drawn, the other {number(len(rest))} together." if rest else "."))
    chart = charts.label_bars(rows, tally.labeled, f"Images per label: {note}")
    return (f'<section id="labels"><h2>Images per label</h2><p class="lead">{esc(note)}</p>'
            f'<div class="chart-box">{chart}</div></section>')


def scores(tally: Tally) -> str:
    if not tally.scored:
        body = '<p class="empty">No scores.</p>'
    else:
        below = sum(tally.histogram[: BINS // 2])
        facts = [f"mean {score(tally.mean_score)}",
                 f"{number(below)} images ({percent(below, tally.scored)}) below {LOW:g}"]
        missing = tally.labeled - tally.scored
        if missing:
            facts.append(f"{number(missing)} labeled images without a score")
        title = f"Top-1 score distribution over {number(tally.scored)} images, {BINS} bins"
        body = (f'<p class="lead">{esc(" · ".join(facts))}</p>'
                f'<div class="chart-box">{charts.score_histogram(tally.histogram, title, LOW)}</div>')
    return f'<section id="scores"><h2>Top-1 scores</h2>{body}</section>'


def thumb(thumbs: dict[str, Thumb], source: str, caption: str = "") -> str:
    """An embedded thumbnail, or a visible placeholder that says why there is none."""
    got = thumbs.get(source) or Thumb(reason="no preview made")
    alt = esc(caption or source)
    if got.ok:
        return (f'<img class="thumb" src="{esc(got.uri)}" width="{got.width}" height="{got.height}" '
                f'alt="{alt}" title="{esc(source)}" loading="eager" decoding="async">')
    reason = got.reason or "no preview"
    return (f'<span class="thumb-missing" role="img" aria-label="no preview: {esc(reason)}" '
            f'title="{esc(source)}: {esc(reason)}">no preview<small>{esc(short(reason, 60))}</small></span>')


def contact_sheet(tally: Tally, thumbs: dict[str, Thumb], sheet_labels: int) -> str:
    ranked = tally.ranked_labels()
    if not ranked or not tally.per_label:
        return ('<section id="contact-sheet"><h2>Contact sheet</h2>'
                '<p class="empty">No images to show.</p></section>')
    shown = ranked[:sheet_labels]
    blocks = []
    for name, t in shown:
        tiles = []
        for source, value in tally.sample(name):
            low = value is not None and value < LOW
            image = thumb(thumbs, source, f"{name} {score(value)}")
            badge = '<span class="badge">low</span>' if low else ""
            tiles.append(f'<figure class="tile{" flagged" if low else ""}">{image}'
                         f'<figcaption><span class="score">{score(value)}</span>{badge}</figcaption></figure>')
        sampled = len(tiles)
        what = f"all {number(t.count)}" if sampled == t.count else f"{number(sampled)} of {number(t.count)}, sampled"
        blocks.append(f'<div class="label-block"><h3><span class="label-name">{esc(name)}</span>'
                      f'<span class="muted"> {esc(what)} · mean {score(t.mean)}</span></h3>'
                      f'<div class="grid">{"".join(tiles)}</div></div>')
    left = len(ranked) - len(shown)
    cut = f"; the top {number(len(shown))} labels by count are shown, {number(left)} more are not" if left else ""
    note = (f"Up to {number(tally.per_label)} images per label, a fixed random sample{cut}."
            f" Flagged: a score below {LOW:g}.")
    return (f'<section id="contact-sheet"><h2>Contact sheet</h2><p class="lead">{esc(note)}</p>'
            f'{"".join(blocks)}</section>')


def _level(value: float) -> str:
    return " low" if value < LOW else " mid" if value < MID else ""


def lowest(tally: Tally, thumbs: dict[str, Thumb]) -> str:
    items = tally.lowest()
    if not items:
        return ('<section id="lowest"><h2>Lowest confidence</h2>'
                '<p class="empty">No scored images.</p></section>')
    rows = []
    for item in items:
        runner = (f'{esc(item.runner_up)} <span class="muted">{score(item.runner_up_score)}</span>'
                  if item.runner_up is not None else '<span class="muted">n/a</span>')
        width = max(0.0, min(1.0, item.score)) * 100
        image = thumb(thumbs, item.source, f"{item.label} {score(item.score)}")
        meter = f'<span class="meter{_level(item.score)}"><span style="width:{width:.0f}%"></span></span>'
        rows.append(f'<tr><td class="cell-thumb">{image}</td><td><code class="path">{esc(item.source)}</code></td>'
                    f'<td>{esc(item.label)}</td><td class="num">{score(item.score)}{meter}</td><td>{runner}</td></tr>')
    note = (f"The {number(len(items))} images of lowest top-1 score, out of {number(tally.scored)} scored: "
            "the first to check by hand.")
    return (f'<section id="lowest"><h2>Lowest confidence</h2><p class="lead">{esc(note)}</p>'
            '<div class="table-wrap"><table class="records"><thead><tr><th></th><th>Source</th><th>Label</th>'
            f'<th class="num">Score</th><th>Runner-up</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            '</section>')


def errors(tally: Tally) -> str:
    if not tally.errors:
        return ('<section id="errors"><h2>Errors</h2>'
                '<p class="empty ok">No errors: every image was labeled.</p></section>')
    reasons = tally.reasons.most_common()
    rest = sum(count for _, count in reasons[MAX_REASONS:]) + tally.other_reasons
    counted = [(esc(reason), count, "") for reason, count in reasons[:MAX_REASONS]]
    counted += [("other reasons", rest, ' class="muted"')] if rest else []
    rows = [f'<tr{kind}><td>{reason}</td><td class="num">{number(count)}</td>'
            f'<td class="num">{percent(count, tally.errors)}</td></tr>' for reason, count, kind in counted]
    listed = [f'<tr><td><code class="path">{esc(e.source)}</code></td><td>{esc(e.reason)}</td></tr>'
              for e in tally.error_records]
    shown = len(listed)
    images = "image" if tally.errors == 1 else "images"
    note = f"{number(tally.errors)} {images} ({percent(tally.errors, tally.records)}) could not be labeled."
    which = f"the first {number(shown)} of {number(tally.errors)}" if shown < tally.errors else f"all {number(shown)}"
    images = (f'<details{" open" if shown <= OPEN_ERRORS else ""}><summary>Images: {which}</summary>'
              '<div class="table-wrap"><table class="records"><thead><tr><th>Source</th><th>Reason</th></tr></thead>'
              f'<tbody>{"".join(listed)}</tbody></table></div></details>') if listed else ""
    return (f'<section id="errors"><h2>Errors</h2><p class="lead">{esc(note)}</p>'
            '<div class="table-wrap"><table class="reasons"><thead><tr><th>Reason</th><th class="num">Images</th>'
            f'<th class="num">Share</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>{images}</section>')

