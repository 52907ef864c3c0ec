"""``bulklabel.review.report``: the streaming tally against a plain computation, bounded memory
on a large generated stream, escaping of hostile records, no external URL, placeholders for
images that cannot be shown, and the page rendered in a real headless Chromium."""

from __future__ import annotations

import io
import math
import os
import random
import shutil
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bulklabel.review.report import thumbs as thumbs_module
from bulklabel.review.report import write_report
from bulklabel.review.report.tally import BINS, Tally


def record(source, label=None, score=None, *, error=None, model="m@1", runner=None):
    top_k = [] if error else [{"label": label, "score": score}]
    if runner and not error:
        top_k.append({"label": runner[0], "score": runner[1]})
    return {"source": source, "label": None if error else label, "score": None if error else score,
            "top_k": top_k, "model": model, "error": error}


def synthetic(n: int, seed: int = 7, labels: int = 15):
    """n records: ~5% errors (4 reasons), ~3% labeled without a score, unique scores otherwise."""
    rng = random.Random(seed)
    for i in range(n):
        source = f"/data/{i:07d}.jpg"
        u = rng.random()
        if u < 0.05:
            yield record(source, error=f"reason {rng.randrange(4)}", model=f"m{i % 2}")
        elif u < 0.08:
            yield record(source, f"label{rng.randrange(labels)}", None, model=f"m{i % 2}")
        else:
            label = f"label{rng.randrange(labels)}"
            yield record(source, label, rng.random(), model=f"m{i % 2}", runner=("runner", 0.01))


def batched(records, size: int = 97):
    batch = []
    for rec in records:
        batch.append(rec)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def jpeg(color=(200, 80, 40), size=(64, 48), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


class BytesReader:
    """A reader over a dict of location → bytes (missing: FileNotFoundError)."""

    def __init__(self, files: dict[str, bytes] | None = None, default: bytes | None = None):
        self.files, self.default, self.reads = files or {}, default, 0

    def read(self, location: str) -> bytes:
        self.reads += 1
        if location in self.files:
            return self.files[location]
        if self.default is None:
            raise FileNotFoundError("file not found")
        return self.default


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Elements:
    parser = Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


# The streaming tally.

def test_tally_matches_a_plain_computation():
    records = list(synthetic(3000))
    tally = Tally(per_label=5, lowest=25, max_errors=30).add_all(batched(records))

    ok = [r for r in records if r["error"] is None]
    scored = [r for r in ok if r["score"] is not None]
    errors = [r for r in records if r["error"] is not None]
    assert (tally.records, tally.labeled, tally.errors, tally.scored) == (3000, len(ok), len(errors), len(scored))
    assert {name: t.count for name, t in tally.labels.items()} == Counter(r["label"] for r in ok)
    assert tally.models == Counter(r["model"] for r in records)
    assert tally.reasons == Counter(r["error"] for r in errors)
    assert [e.source for e in tally.error_records] == [r["source"] for r in errors[:30]]
    plain = [0] * BINS
    for r in scored:
        plain[min(BINS - 1, int(r["score"] * BINS))] += 1
    assert tally.histogram == plain and sum(plain) == len(scored)
    assert math.isclose(tally.mean_score, sum(r["score"] for r in scored) / len(scored))
    for name, t in tally.labels.items():
        mine = [r["score"] for r in scored if r["label"] == name]
        assert math.isclose(t.mean, sum(mine) / len(mine))

    lowest = sorted(scored, key=lambda r: r["score"])[:25]
    got = tally.lowest()
    assert [f.source for f in got] == [r["source"] for r in lowest]
    assert [f.score for f in got] == [r["score"] for r in lowest]
    assert {(f.runner_up, f.runner_up_score) for f in got} == {("runner", 0.01)}

    by_label: dict[str, set[str]] = {}
    for r in ok:
        by_label.setdefault(r["label"], set()).add(r["source"])
    for name, sources in by_label.items():
        sample = tally.sample(name)
        assert len(sample) == min(5, len(sources))
        assert {s for s, _ in sample} <= sources


def test_samples_are_reproducible_and_independent_of_record_order():
    records = list(synthetic(2000, labels=6))
    first = Tally(per_label=8, lowest=10).add_all([records])
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    second = Tally(per_label=8, lowest=10).add_all(batched(shuffled, 13))
    for name in first.labels:
        assert first.sample(name) == second.sample(name)
    assert first.lowest() == second.lowest()
    other_seed = Tally(per_label=8, lowest=10, seed=99).add_all([records])
    assert any(first.sample(n) != other_seed.sample(n) for n in first.labels)
    # roughly uniform: over many labels' samples, sources come from the whole stream, not its start
    positions = [int(s[6:13]) for n in first.labels for s, _ in first.sample(n)]
    assert min(positions) < 500 and max(positions) > 1500


def test_duplicate_sources_are_sampled_once():
    records = [record("/a.jpg", "cat", 0.1), record("/a.jpg", "cat", 0.1), record("/b.jpg", "cat", 0.2)]
    tally = Tally(per_label=5, lowest=5).add_all([records])
    assert [s for s, _ in tally.sample("cat")] == ["/a.jpg", "/b.jpg"]
    assert [f.source for f in tally.lowest()] == ["/a.jpg", "/b.jpg"]


def test_odd_values_are_tolerated():
    records = [
        {"source": "/x.jpg", "label": "a", "score": float("nan"), "top_k": None, "model": None, "error": None},
        {"source": "/y.jpg", "label": 3, "score": 1.5, "top_k": [{"label": 3, "score": 1.5}, "junk"],
         "model": "m", "error": None},
        {"source": "/z.jpg", "label": "b", "score": -0.2, "top_k": [], "model": "m", "error": None},
        {"source": "/w.jpg", "label": None, "score": None, "top_k": [], "model": "m", "error": None},
        {"source": "/v.jpg", "label": None, "score": None, "top_k": [], "model": "m", "error": ""},
    ]
    tally = Tally().add_all([records])
    assert (tally.records, tally.labeled, tally.errors, tally.unlabeled, tally.scored) == (5, 3, 1, 1, 2)
    assert tally.histogram[0] == 1 and tally.histogram[-1] == 1
    assert set(tally.labels) == {"a", "3", "b"}
    assert tally.reasons == {"(no reason given)": 1}


# The whole report.

def test_a_large_stream_stays_small_and_fast(tmp_path):
    labels = 60
    reader = BytesReader(default=jpeg())
    start = time.perf_counter()
    stats = write_report(batched(synthetic(200_000, labels=labels), 1000), {"title": "big"}, tmp_path / "r.html",
                         reader=reader)
    elapsed = time.perf_counter() - start
    size = (tmp_path / "r.html").stat().st_size
    assert stats["records"] == 200_000 and stats["labels"] == labels and stats["bytes"] == size
    assert elapsed < 10, f"{elapsed:.1f} s for 200k records"
    assert size < 1_500_000
    page = parse(tmp_path / "r.html")
    thumbs = [a for tag, a in page.tags if tag == "img" and a.get("class") == "thumb"]
    assert len(thumbs) <= 24 * 12 + 40 and reader.reads <= 24 * 12 + 40
    assert stats["thumbnails"] == reader.reads
    text = " ".join(page.text)
    assert f"other ({labels - 30} labels)" in text
    assert f"{labels - 24} more are not" in text
    assert "200,000" in text
    tiles = [a for tag, a in page.tags if tag == "figure"]
    assert len(tiles) == 24 * 12


HOSTILE_SOURCE = "/data/<script>alert(1)</script>.jpg"
HOSTILE_LABEL = '"><img src=x onerror=alert(2)>'
HOSTILE_REASON = "bad </td></table><b onmouseover='x'>bold</b>"


def test_hostile_text_is_escaped(tmp_path):
    records = [record(HOSTILE_SOURCE, HOSTILE_LABEL, 0.2, runner=("<i>r</i>", 0.1), model='m"<x>'),
               record("/data/ok.jpg", "cat", 0.9),
               record("/data/<svg onload=alert(3)>.jpg", error=HOSTILE_REASON)]
    summary = {"title": "<title>t</title>", "source": "<u>s</u>", "job_id": "j\"'<>", "extra": "<em>e</em>"}
    out = tmp_path / "r.html"
    write_report([records], summary, out, reader=BytesReader(default=jpeg()))
    page = parse(out)
    allowed = {"html", "head", "meta", "title", "link", "style", "body", "header", "div", "p", "h1", "h2", "h3",
               "nav", "a", "span", "main", "section", "dl", "dt", "dd", "code", "svg", "g", "text", "tspan",
               "rect", "line", "figure", "figcaption", "img", "small", "table", "thead", "tbody", "tr", "th", "td",
               "footer", "details", "summary"}
    assert {tag for tag, _ in page.tags} <= allowed
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["class"] == "thumb" and attrs["src"].startswith("data:image/jpeg;base64,")
    text = "".join(page.text)
    for hostile in (HOSTILE_SOURCE, HOSTILE_LABEL, HOSTILE_REASON, "<svg onload=alert(3)>", "<i>r</i>", 'm"<x>',
                    "<u>s</u>", "<em>e</em>"):
        assert hostile in text, hostile
    titles = [a["title"] for _, a in page.tags if "title" in a]
    assert HOSTILE_SOURCE in titles  # whole in its attribute, escaped
    raw = out.read_text(encoding="utf-8")
    assert "<script" not in raw and "<b " not in raw and "<u>" not in raw


def test_no_external_url_and_one_file(tmp_path):
    records = list(synthetic(500))
    out = tmp_path / "sub" / "report.html"
    write_report([records], {}, out, reader=BytesReader(default=jpeg()))
    raw = out.read_text(encoding="utf-8")
    assert "http://" not in raw and "https://" not in raw and "//cdn" not in raw
    assert "<script" not in raw and "@import" not in raw and "url(" not in raw
    page = parse(out)
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("data:", "#")), (tag, attrs)
    assert os.listdir(out.parent) == ["report.html"]  # no temporary file left
    for section in ("summary", "labels", "scores", "contact-sheet", "lowest", "errors"):
        assert ("section", {"id": section}) in page.tags
    assert sum(1 for tag, a in page.tags if tag == "svg" and a.get("class") == "chart") == 2


def test_images_that_cannot_be_shown_get_placeholders(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbs_module, "MAX_BYTES", 10_000)
    files = {
        "/ok.jpg": jpeg(),
        "/ok.png": jpeg(fmt="PNG", mode="RGBA", color=(0, 0, 255, 128)),
        "/corrupt.jpg": jpeg()[:200],
        "/text.jpg": b"not an image at all",
        "/huge.jpg": jpeg(size=(2000, 1500)) + b"\0" * 20_000,
        "/eps.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    }
    records = [record(s, "cat", 0.5 + i / 100) for i, s in enumerate([*files, "/missing.jpg"])]
    out = tmp_path / "r.html"
    stats = write_report([records], {}, out, reader=BytesReader(files))
    assert (stats["thumbnails"], stats["placeholders"]) == (2, 5)
    page = parse(out)
    shown = {a["title"] for tag, a in page.tags if tag == "img"}
    assert shown == {"/ok.jpg", "/ok.png"}
    missing = [a for tag, a in page.tags if a.get("class") == "thumb-missing"]
    reasons = {a["title"] for a in missing}
    assert len(missing) == 10  # five sources, on the contact sheet and in the lowest list
    assert {r.split(":")[0] for r in reasons} == {"/corrupt.jpg", "/text.jpg", "/huge.jpg", "/eps.jpg",
                                                   "/missing.jpg"}
    assert any("too large" in r for r in reasons if r.startswith("/huge.jpg"))
    assert any("not an image" in r for r in reasons if r.startswith("/eps.jpg"))


def test_too_many_pixels_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(thumbs_module, "MAX_PIXELS", 1000)
    got = thumbs_module.read_thumb(BytesReader(default=jpeg(size=(100, 100))), "/x.jpg", 96)
    assert not got.ok and "too many pixels" in got.reason


def test_summary_shows_what_is_known(tmp_path):
    records = list(synthetic(100))
    out = tmp_path / "r.html"
    write_report([records], {"job_id": "nightly-1", "images": 150, "errors": 2, "seconds": 75.0,
                             "submitted_at": 1700000000.0, "state": "done"}, out, reader=BytesReader(default=jpeg()))
    text = " ".join(parse(out).text)
    assert "150 images" in text and "computed from the 100 records" in text
    assert "1 min 15 s" in text and "2023-11-14 22:13:20 UTC" in text and "nightly-1" in text
    assert "img/s" in text
    write_report([[]], {}, out)
    text = " ".join(parse(out).text)
    assert "n/a" in text and "No labeled images." in text and "No errors" in text


# The page in a real browser.

def _browser():
    """Playwright and Debian's chromium; a failure saying how to install them, or a skip if asked."""
    if os.environ.get("BULKLABEL_SKIP_BROWSER") == "1":
        pytest.skip("BULKLABEL_SKIP_BROWSER=1: the report is not opened in a browser")
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: run `bash scripts/setup.sh test` "
                    "(or set BULKLABEL_SKIP_BROWSER=1 to skip this test)")
    if not chromium:
        pytest.fail("chromium is not on PATH: run `bash scripts/setup.sh test` (as root it installs Debian's "
                    "chromium; or set BULKLABEL_SKIP_BROWSER=1 to skip this test)")
    return sync_playwright, chromium


def photo(rng: random.Random, base: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", size, base)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        shade = tuple(min(255, max(0, c + rng.randrange(-90, 90))) for c in base)
        img.paste(shade, (x, y, min(size[0], x + size[0] // 3), min(size[1], y + size[1] // 3)))
    return img


def test_report_renders_in_headless_chromium(tmp_path):
    sync_playwright, chromium = _browser()
    rng = random.Random(5)
    colors = {"cat": (200, 120, 60), "sky": (60, 120, 220), "<b>grass</b>": (60, 180, 70)}
    records = []
    for i in range(30):
        label = list(colors)[i % 3]
        fmt = "PNG" if i % 4 == 0 else "JPEG"
        path = tmp_path / f"img_{i:02d}.{fmt.lower()}"
        photo(rng, colors[label], (rng.randrange(60, 300), rng.randrange(60, 300))).save(path, fmt)
        score = round(rng.uniform(0.3, 1.0), 4)
        records.append(record(str(path), label, score, runner=("other", round(1 - score, 4))))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes((tmp_path / "img_01.jpeg").read_bytes()[:100])
    records.append(record(str(corrupt), "cat", 0.35))
    records.append(record(str(tmp_path / "broken.jpg"), error="truncated or corrupt image data"))
    out = tmp_path / "report.html"
    stats = write_report(batched(records, 7), {"title": "browser test", "kind": "file", "seconds": 3.0}, out,
                         threads=4)
    assert stats["placeholders"] == 1 and stats["thumbnails"] == 30

    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri(), wait_until="load")
            charts = page.eval_on_selector_all(
                "svg.chart", "els => els.map(e => [e.querySelectorAll('rect').length, e.getBoundingClientRect().width,"
                             " e.querySelector('title') && e.querySelector('title').textContent])")
            images = page.eval_on_selector_all(
                "img.thumb", "els => els.map(e => [e.complete, e.naturalWidth, e.getBoundingClientRect().width])")
            placeholders = page.locator(".thumb-missing").count()
            sections = page.eval_on_selector_all("section[id]", "els => els.map(e => e.id)")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [u for u in requests if not u.startswith(("data:", out.as_uri()))] == []
    assert len(charts) >= 2 and all(rects >= 3 and width > 200 and title for rects, width, title in charts)
    assert len(images) >= 30 and all(complete and natural > 0 and width > 0 for complete, natural, width in images)
    assert placeholders >= 1
    assert sections == ["summary", "labels", "scores", "contact-sheet", "lowest", "errors"]
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    assert image.width == 1280 and image.height > 900
    colours = image.resize((image.width // 4, image.height // 4)).getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot looks blank"
