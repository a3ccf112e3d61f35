"""`inspect --plot FILE.png`: the code-frequency curve (log scale) as a PNG for
reports, drawn with Pillow (no plotting dependency)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

from vqtool.atomic import replacing
from vqtool.errors import InspectError

WIDTH, HEIGHT = 900, 480
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 90, 30, 50, 60


def save_usage_plot(curve: list[float], vocab: int, title: str, top: list[dict], path) -> Path:
    """Draw the sorted share-per-code curve on a log axis, with the top codes listed."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InspectError(f"--plot {path}: give a .png file name")
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    x0, x1 = MARGIN_L, WIDTH - MARGIN_R
    y0, y1 = MARGIN_T, HEIGHT - MARGIN_B
    draw.text((MARGIN_L, 15), title, fill="black")
    draw.rectangle((x0, y0, x1, y1), outline="black")
    positive = [v for v in curve if v > 0]
    if positive:
        hi = math.ceil(math.log10(max(positive)))
        lo = math.floor(math.log10(min(positive)))
        lo = min(lo, hi - 1)

        def y_of(v: float) -> float:
            return y1 - (math.log10(v) - lo) / (hi - lo) * (y1 - y0)

        for decade in range(lo, hi + 1):
            y = y_of(10.0**decade)
            draw.line((x0, y, x1, y), fill=(225, 225, 225))
            draw.text((8, y - 6), f"1e{decade}", fill="black")
        n = len(curve)
        points = [(x0 + (i + 0.5) / n * (x1 - x0), y_of(v)) for i, v in enumerate(curve) if v > 0]
        polygon = [(points[0][0], y1), *points, (points[-1][0], y1)]
        draw.polygon(polygon, fill=(170, 200, 235))
        draw.line(points, fill=(30, 80, 160), width=2)
    draw.text((x0, y1 + 10), "rank 1", fill="black")
    draw.text((x1 - 90, y1 + 10), f"rank {vocab:,}", fill="black")
    draw.text((x0 + (x1 - x0) // 2 - 120, y1 + 30), "codes sorted by frequency", fill="black")
    draw.text((8, y0 - 20), "share per code", fill="black")
    for i, e in enumerate(top[:10]):
        draw.text((x1 - 200, y0 + 10 + 14 * i), f"code {e['code']}: {e['share']:.2%}", fill="black")
    with replacing(path) as tmp:
        img.save(tmp, format="PNG")
    return path
