"""The report as one HTML document: head (a Content-Security-Policy that allows no network and
no script, the stylesheet), title and navigation, the sections, a footer."""

from __future__ import annotations

from ... import __version__
from . import sections, summary
from .style import CSS
from .tally import Tally
from .text import esc, number
from .thumbs import Thumb

# Nothing may be fetched or run: images are data: URIs, styles inline.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _subtitle(info: dict) -> str:
    parts = []
    for key, name in (("kind", ""), ("source", ""), ("job_id", "job "), ("state", "")):
        value = info.get(key)
        if value not in (None, "") and (key != "job_id" or value != info.get("source")):
            parts.append(f"{name}{value}")
    return " · ".join(str(p) for p in parts)


def render(info: dict, tally: Tally, thumbs: dict[str, Thumb], *, chart_labels: int, sheet_labels: int,
           thumb_px: int) -> str:
    title = str(info.get("title") or info.get("job_id") or info.get("source") or "bulklabel report")
    nav = [("summary", "Summary", None), ("labels", "Labels", len(tally.labels)), ("scores", "Scores", None),
           ("contact-sheet", "Contact sheet", None), ("lowest", "Lowest confidence", None),
           ("errors", "Errors", tally.errors)]
    links = "".join(f'<a href="#{anchor}">{name}{f"<span class=n>{number(n)}</span>" if n is not None else ""}</a>'
                    for anchor, name, n in nav)
    body = [
        summary.render(info, tally),
        sections.labels(tally, chart_labels),
        sections.scores(tally),
        sections.contact_sheet(tally, thumbs, sheet_labels),
        sections.lowest(tally, thumbs),
        sections.errors(tally),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex">'
        f'<meta name="generator" content="bulklabel {esc(__version__)}">'
        f'<title>{esc(title)} \u2014 bulklabel report</title><link rel="icon" href="data:,">'
        f'<style>:root {{ --thumb: {int(thumb_px)}px; }}{CSS}</style></head>\n<body>'
        f'<header class="top"><div class="wrap"><p class="eyebrow">bulklabel report</p><h1>{esc(title)}</h1>'
        f'<p class="subtitle">{esc(_subtitle(info))}</p><nav aria-label="Sections">{links}</nav></div></header>\n'
        f'<main class="wrap">\n' + "\n".join(body) + '\n</main>\n'
        f'<footer class="wrap">Made by bulklabel {esc(__version__)}. One self-contained file: thumbnails are '
        'embedded, nothing is fetched. Samples are drawn with a fixed seed, so the same records give the same '
        'report.</footer>\n</body></html>\n'
    )
