"""Remake ``docs/img/report.png``: the report of the bundled sample, rendered in a headless
Chromium (Debian's ``chromium``, driven by Playwright; ``bash scripts/setup.sh test``).

    bulklabel classify sample/images --model sample/model.keras --out /tmp/sample.jsonl
    python -m tools.report_screenshot /tmp/sample.jsonl --full --max-height 1600  # → docs/img/report.png

``--html`` keeps the report itself; ``--full`` takes the whole page instead of the first screen.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from bulklabel.record_codec import read_records
from bulklabel.review.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def sample_summary(records: list[dict], results: str, seconds: float | None) -> dict:
    models = sorted({r["model"] for r in records if r.get("model")})
    source = os.path.relpath(results, ROOT) if results.startswith(str(ROOT)) else os.path.basename(results)
    return {"title": "Bundled sample", "kind": "file", "source": source, "models": models,
            "images": len(records), "errors": sum(1 for r in records if r.get("error")), "seconds": seconds}


def relative(records: list[dict]) -> list[dict]:
    """Sources shown relative to the repository (the screenshot should not show this machine's paths);
    the reader gets them back as absolute paths through ``RepoReader``."""
    prefix = str(ROOT) + os.sep
    return [dict(r, source=r["source"][len(prefix):]) if r["source"].startswith(prefix) else r for r in records]


class RepoReader:
    def __init__(self):
        from bulklabel.storage import open_reader

        self._reader = open_reader()

    def read(self, location: str) -> bytes:
        return self._reader.read(location if os.path.isabs(location) else str(ROOT / location))


def screenshot(html: Path, png: Path, width: int, full: bool, max_height: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("chromium is not installed: run `bash scripts/setup.sh test`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.goto(html.resolve().as_uri())
            data = page.screenshot(full_page=full)
        finally:
            browser.close()
    image = Image.open(io.BytesIO(data))
    if image.height > max_height:
        image = image.crop((0, 0, image.width, max_height))
    image = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.save(png, optimize=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="records written by classify (.jsonl, .csv, .parquet)")
    parser.add_argument("--out", default=str(ROOT / "docs/img/report.png"))
    parser.add_argument("--html", help="also keep the report here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--full", action="store_true", help="the whole page, not the first screen")
    parser.add_argument("--max-height", type=int, default=1800, help="crop the screenshot to this height")
    parser.add_argument("--seconds", type=float, help="the classify run's time, as it printed it")
    args = parser.parse_args(argv)
    records = read_records(args.results)
    summary = sample_summary(records, os.path.abspath(args.results), args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(args.html) if args.html else Path(tmp) / "report.html"
        stats = write_report([relative(records)], summary, html, reader=RepoReader())
        screenshot(html, Path(args.out), args.width, args.full, args.max_height)
    print(f"{stats['records']} records, {stats['thumbnails']} thumbnails → {args.out} "
          f"({os.path.getsize(args.out):,} bytes)")


if __name__ == "__main__":
    main()
