"""Small PNG charts drawn with Pillow: training curves and confusion matrices."""

from __future__ import annotations

from PIL import Image, ImageDraw

COLORS = {"accuracy": (31, 119, 180), "val_accuracy": (255, 127, 14),
          "loss": (44, 160, 44), "val_loss": (214, 39, 40)}


def _panel(draw: ImageDraw.ImageDraw, box, series: dict[str, list[float]], title: str,
           marks: list[int]) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 4, y0 - 14), title, fill=(0, 0, 0))
    values = [v for vs in series.values() for v in vs if v == v]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(vs) for vs in series.values())
    def xy(i, v):
        return (x0 + 8 + (x1 - x0 - 16) * (i / max(1, n - 1)),
                y1 - 8 - (y1 - y0 - 16) * ((v - lo) / (hi - lo)))
    for i in marks:  # where a new phase or size starts
        x = xy(i, lo)[0]
        draw.line([(x, y0 + 1), (x, y1 - 1)], fill=(200, 200, 200))
    draw.text((x0 + 4, y0 + 2), f"{hi:.3g}", fill=(90, 90, 90))
    draw.text((x0 + 4, y1 - 14), f"{lo:.3g}", fill=(90, 90, 90))
    legend_x = x1 - 190
    for name, vs in series.items():
        points = [xy(i, v) for i, v in enumerate(vs) if v == v]
        if len(points) > 1:
            draw.line(points, fill=COLORS.get(name, (0, 0, 0)), width=2)
        for p in points:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=COLORS.get(name, (0, 0, 0)))
        draw.text((legend_x, y0 - 14), name, fill=COLORS.get(name, (0, 0, 0)))
        legend_x += 95


def history_png(rows: list[dict], path: str) -> None:
    """Accuracy and loss per epoch (train and validation), phases marked."""
    image = Image.new("RGB", (900, 380), "white")
    draw = ImageDraw.Draw(image)
    marks = [i for i in range(1, len(rows)) if (rows[i]["phase"], rows[i]["stage"]) !=
             (rows[i - 1]["phase"], rows[i - 1]["stage"])]
    get = lambda key: [r.get(key, float("nan")) for r in rows]  # noqa: E731
    _panel(draw, (40, 30, 440, 350), {"accuracy": get("accuracy"), "val_accuracy": get("val_accuracy")},
           "accuracy per epoch", marks)
    _panel(draw, (480, 30, 880, 350), {"loss": get("loss"), "val_loss": get("val_loss")},
           "loss per epoch", marks)
    draw.text((40, 360), "grey lines: a new phase (feature extraction, then fine-tuning) or a new input size",
              fill=(90, 90, 90))
    image.save(path)


def confusion_png(labels: list[str], matrix: list[list[int]], columns: list[str], path: str) -> None:
    """Rows: true class; columns: predicted; cells shaded by the row's share."""
    cell, left, top = 48, 140, 120
    width, height = max(420, left + cell * len(columns) + 20), top + cell * len(labels) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), "confusion matrix (rows: true class, columns: predicted)", fill=(0, 0, 0))
    for j, name in enumerate(columns):
        draw.text((left + j * cell + 2, top - 16 - (j % 3) * 14), name[:14], fill=(0, 0, 0))
    for i, name in enumerate(labels):
        total = sum(matrix[i]) or 1
        draw.text((8, top + i * cell + cell // 2 - 6), name[:18], fill=(0, 0, 0))
        for j, count in enumerate(matrix[i]):
            share = count / total
            shade = int(255 - 200 * share)
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 2, top + (i + 1) * cell - 2]
            draw.rectangle(box, fill=(shade, shade, 255), outline=(180, 180, 180))
            draw.text((box[0] + 6, box[1] + cell // 2 - 8), str(count),
                      fill=(255, 255, 255) if share > 0.6 else (0, 0, 0))
    image.save(path)
