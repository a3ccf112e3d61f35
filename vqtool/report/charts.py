"""The charts `inspect` draws with block characters, each fitting an 80-column terminal:
a log-scale code-frequency curve, top codes with bars, and per-position entropy maps."""

from __future__ import annotations

import math

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from vqtool.report.tokens import PositionMap

BLOCKS = " ▁▂▃▄▅▆▇█"
SHADES = " ░▒▓█"
MAP_CELLS = 36  # position-map cells per row (2 characters each)
CURVE_COLUMNS = 60


def top_table(
    top: list[dict], title: str, bar_width: int = 24, peak: float | None = None
) -> Table:
    """Codes with their counts, shares and bars scaled to `peak` (default: the table's
    largest share; the rarest codes are drawn against the most used one)."""
    t = Table(title=title, title_justify="left")
    t.add_column("code", justify="right")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    t.add_column("", no_wrap=True)
    peak = peak or max(e["share"] for e in top) or 1.0
    for e in top:
        n = e["share"] / peak * bar_width
        bar = "█" * int(n) + (BLOCKS[round((n - int(n)) * 8)] if n - int(n) >= 1 / 16 else "")
        t.add_row(str(e["code"]), f"{e['count']:,}", f"{e['share']:.2%}", f"[cyan]{bar}[/]")
    return t


def frequency_chart(curve: list[float], height: int = 8) -> list[str]:
    """Rows of a log-scale bar chart of `curve` (one column per value)."""
    positive = [v for v in curve if v > 0]
    if not positive:
        return ["(no tokens)"]
    hi, lo = math.log10(max(positive)), math.log10(min(positive))
    if hi - lo < 1e-9:
        lo = hi - 1
    eighths = []
    for v in curve:
        if v <= 0:
            eighths.append(0)
        else:
            eighths.append(max(1, round((math.log10(v) - lo) / (hi - lo) * height * 8)))
    rows = []
    for row in range(height - 1, -1, -1):
        line = ""
        for e in eighths:
            fill = e - row * 8
            line += BLOCKS[8] if fill >= 8 else BLOCKS[max(fill, 0)]
        rows.append(line)
    return rows


def resample(curve: list[float], points: int) -> list[float]:
    """Mean of equal rank buckets, so a long curve fits `points` columns."""
    if len(curve) <= points:
        return curve
    edges = [round(i * len(curve) / points) for i in range(points + 1)]
    return [sum(curve[a:b]) / (b - a) for a, b in zip(edges[:-1], edges[1:])]


def frequency_curve(curve: list[float], vocab: int, top_share: dict) -> RenderableType:
    curve = resample(curve, CURVE_COLUMNS)
    chart = frequency_chart(curve)
    positive = [v for v in curve if v > 0]
    text = Text()
    text.append("code frequency, most to least used (log scale, share per code)\n", style="bold")
    label_hi = f"{max(positive):.1e} " if positive else ""
    label_lo = f"{min(positive):.1e} " if positive else ""
    pad = max(len(label_hi), len(label_lo))
    for i, line in enumerate(chart):
        label = label_hi if i == 0 else label_lo if i == len(chart) - 1 else ""
        text.append(label.rjust(pad) + "│", style="dim")
        text.append(line + "\n", style="cyan")
    axis = "rank 1".ljust(max(len(chart[0]) - len(f"rank {vocab:,}"), 7)) + f"rank {vocab:,}"
    text.append(" " * pad + "└" + axis + "\n", style="dim")
    names = " / ".join(k.split("_")[1] for k in top_share)
    values = " / ".join(f"{v:.1%}" for v in top_share.values())
    text.append(f"the top {names} of codes hold {values} of the tokens", style="dim")
    return text


def position_map(pm: PositionMap, name_level: bool = False) -> RenderableType:
    h, w = pm.grid
    values = pm.entropy_bits
    step = max(1, math.ceil(w / MAP_CELLS))
    cells = [
        [
            sum(
                values[y][x] for y in range(r, min(r + step, h)) for x in range(c, min(c + step, w))
            )
            / (min(step, h - r) * min(step, w - c))
            for c in range(0, w, step)
        ]
        for r in range(0, h, step)
    ]
    flat = [v for row in cells for v in row]
    lo, hi = min(flat), max(flat)
    span = hi - lo if hi - lo > 1e-9 else 1.0
    text = Text()
    title = f"per-position entropy{f', level {pm.level}' if name_level else ''} ({h}x{w}"
    title += f", {step}x{step} per cell)" if step > 1 else ")"
    text.append(title + "\n", style="bold")
    for row in cells:
        line = "".join(SHADES[round((v - lo) / span * (len(SHADES) - 1))] * 2 for v in row)
        text.append("  " + line + "\n", style="magenta")
    text.append(f"  ' ' = {lo:.2f} bits ... '█' = {hi:.2f} bits", style="dim")
    return text
