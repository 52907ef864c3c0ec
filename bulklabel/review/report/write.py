"""``write_report``: records → one self-contained HTML file.

Three steps: one streaming pass over the record batches (``tally``), thumbnails for the few
sources the page shows (``thumbs``, in a thread pool), the page (``page``), written atomically
(a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from ...storage.local import write_atomic
from ..gc_pause import gc_paused
from . import page
from .tally import SEED, Tally
from .thumbs import make_thumbs

CHART_LABELS = 30   # bars in the labels chart (then one "other" bar)
SHEET_LABELS = 24   # labels on the contact sheet


def write_report(batches: Iterable[list[dict]], summary: dict[str, Any] | None, out_path: str | os.PathLike, *,
                 per_label: int = 12, lowest: int = 40, max_errors: int = 200, thumb_px: int = 96,
                 reader=None, threads: int = 8, chart_labels: int = CHART_LABELS,
                 sheet_labels: int = SHEET_LABELS, seed: int = SEED) -> dict[str, Any]:
    """Write the report of the records in ``batches`` (iterated once) to ``out_path``.

    ``summary`` says what is known of the job (any key may be missing); ``reader`` reads image
    locations (``bulklabel.storage.open_reader()`` when None). Returns counts: records, labeled,
    errors, labels, thumbnails (made), placeholders (images that could not be shown), bytes
    (of the file), seconds."""
    start = time.perf_counter()
    thumb_px = max(16, min(512, int(thumb_px)))
    with gc_paused():
        tally = Tally(per_label, lowest, max_errors, seed).add_all(batches)
    wanted = [source for name, _ in tally.ranked_labels()[:max(0, sheet_labels)]
              for source, _ in tally.sample(name)]
    wanted += [item.source for item in tally.lowest()]
    thumbs = make_thumbs(wanted, thumb_px, reader=reader, threads=threads)
    html = page.render(dict(summary or {}), tally, thumbs, chart_labels=max(1, chart_labels),
                       sheet_labels=max(0, sheet_labels), thumb_px=thumb_px)
    data = html.encode("utf-8", "replace")
    write_atomic(out_path, data, mode=0o644)
    made = sum(1 for t in thumbs.values() if t.ok)
    return {"records": tally.records, "labeled": tally.labeled, "errors": tally.errors,
            "labels": len(tally.labels), "thumbnails": made, "placeholders": len(thumbs) - made,
            "bytes": len(data), "seconds": round(time.perf_counter() - start, 3)}
