"""The report's charts as inline SVG (no script, no external resource): the images per label as
horizontal bars and the top-1 score histogram. Colours come from the page's stylesheet
(classes ``bar``, ``other``, ``low``, ``axis``, ``grid``); every text is escaped."""

from __future__ import annotations

import math

from .text import esc, number, percent, short

WIDTH = 1080
NAME_CHARS = 32   # a longer label is cut in the chart (whole in its tooltip)


def _svg(height: int, title: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
            f'aria-label="{esc(title)}" preserveAspectRatio="xMinYMin meet"><title>{esc(title)}</title>'
            + "".join(body) + "</svg>")


def nice_step(top: float, ticks: int = 4) -> int:
    """A round step (1, 2 or 5 × 10^n, at least 1) giving about ``ticks`` grid lines up to ``top``."""
    raw = max(top, 1) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return max(1, int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)))


def label_bars(rows: list[tuple[str, int, bool]], total: int, title: str) -> str:
    """Horizontal bars: ``rows`` of (name, count, is_other), drawn in order."""
    longest = max((len(short(name, NAME_CHARS)) for name, _, _ in rows), default=0)
    left, right, row, bar = max(80, min(290, 16 + int(longest * 8.2))), 110, 24, 16
    span = WIDTH - left - right
    top = max((count for _, count, _ in rows), default=0) or 1
    height = row * len(rows) + 8
    body = []
    for i, (name, count, other) in enumerate(rows):
        y = 4 + i * row
        width = 0 if not count else max(1.0, span * count / top)
        share = percent(count, total)
        body.append(
            f'<g class="{"other" if other else "bar"}"><title>{esc(name)}: {number(count)} images ({share})</title>'
            f'<text class="name" x="{left - 8}" y="{y + bar - 3}" text-anchor="end">'
            f'{esc(short(name, NAME_CHARS))}</text>'
            f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar}" rx="3"></rect>'
            f'<text class="value" x="{left + width + 6:.1f}" y="{y + bar - 3}">{number(count)}'
            f'<tspan class="share"> \u00b7 {share}</tspan></text></g>')
    return _svg(height, title, body)


def score_histogram(bins: list[int], title: str, low_below: float = 0.5) -> str:
    """Vertical bars over [0, 1], one per bin; bins ending at or below ``low_below`` drawn as low."""
    left, right, top_pad, bottom = 64, 14, 12, 40
    height = 260
    plot_w, plot_h = WIDTH - left - right, height - top_pad - bottom
    n = len(bins)
    step = nice_step(max(bins, default=0))
    top = max(step, math.ceil(max(bins, default=0) / step) * step)
    base = top_pad + plot_h
    body = []
    for value in range(0, top + 1, step):
        y = base - plot_h * value / top
        body.append(f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"></line>'
                    f'<text class="tick" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{number(value)}</text>')
    slot = plot_w / n if n else plot_w
    for i, count in enumerate(bins):
        lo, hi = i / n, (i + 1) / n
        h = plot_h * count / top
        if count:
            h = max(h, 1.5)
        kind = "low" if hi <= low_below + 1e-9 else "bar"
        body.append(f'<g class="{kind}"><title>score {lo:.2f}\u2013{hi:.2f}: {number(count)} images</title>'
                    f'<rect x="{left + i * slot + 1:.1f}" y="{base - h:.1f}" width="{slot - 2:.1f}" '
                    f'height="{h:.1f}" rx="2"></rect></g>')
    body.append(f'<line class="axis" x1="{left}" x2="{WIDTH - right}" y1="{base}" y2="{base}"></line>')
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + plot_w * tick
        body.append(f'<text class="tick" x="{x:.1f}" y="{base + 18}" text-anchor="middle">{tick:g}</text>')
    body.append(f'<text class="axis-title" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
                f'top-1 score</text>')
    body.append(f'<text class="axis-title" x="14" y="{top_pad + plot_h / 2:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {top_pad + plot_h / 2:.1f})">images</text>')
    return _svg(height, title, body)
