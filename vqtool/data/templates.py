"""Infinity's aspect-ratio templates (FoundationVision/Infinity
`infinity/utils/dynamic_resolution.py`): a template per height/width ratio (1:1, 4:5, 3:4,
2:3, 4:7, 1:2, 2:5, 1:3 and their transposes), each a list of 13 latent sizes (16 pixels a
position) of which a "total pixels" class (its `pn`) takes the first 7 (0.06M), 10 (0.25M),
12 (0.60M) or 13 (1M). An image is cropped to the last size of the template nearest its
ratio, and its pyramid of scales is that list: the schedule is a function of the latent
grid it ends at (`SCHEDULES`). Torch-free: encode's preprocessing and the model share it.
"""

from __future__ import annotations

#: latent sizes (h, w) of each template, by height / width ratio (Infinity's ratio2hws)
_RATIOS = {
    1.000: "1x1 2x2 4x4 6x6 8x8 12x12 16x16 20x20 24x24 32x32 40x40 48x48 64x64",
    1.250: "1x1 2x2 3x3 5x4 10x8 15x12 20x16 25x20 30x24 35x28 45x36 55x44 70x56",
    1.333: "1x1 2x2 4x3 8x6 12x9 16x12 20x15 24x18 28x21 36x27 48x36 60x45 72x54",
    1.500: "1x1 2x2 3x2 6x4 9x6 15x10 21x14 27x18 33x22 39x26 48x32 63x42 78x52",
    1.750: "1x1 2x2 3x3 7x4 11x6 14x8 21x12 28x16 35x20 42x24 56x32 70x40 84x48",
    2.000: "1x1 2x2 4x2 6x3 10x5 16x8 22x11 30x15 38x19 46x23 60x30 74x37 90x45",
    2.500: "1x1 2x2 5x2 10x4 15x6 20x8 25x10 30x12 40x16 50x20 65x26 80x32 100x40",
    3.000: "1x1 2x2 6x2 9x3 15x5 21x7 27x9 36x12 45x15 54x18 72x24 90x30 111x37",
}
#: total-pixel classes (Infinity's `pn`) -> how many scales of a template they take
PIXEL_CLASSES = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
PATCH = 16  # pixels per latent position (Infinity's vae_stride)


def _templates() -> dict[float, list[tuple[int, int]]]:
    """Every template by its height/width ratio, in Infinity's order (each ratio, then its
    transpose at int(1000 / ratio) / 1000): `np.argmin` breaks ties by this order."""
    out = {}
    for ratio, text in _RATIOS.items():
        sizes = [tuple(int(v) for v in s.split("x")) for s in text.split()]
        out[ratio] = sizes
        if ratio != 1.0:
            out[int(1 / ratio * 1000) / 1000] = [(w, h) for h, w in sizes]
    return out


TEMPLATES = _templates()
#: the scale schedule ending at each latent grid (h, w): one per template and pixel class
SCHEDULES = {
    sizes[n - 1]: sizes[:n] for sizes in TEMPLATES.values() for n in PIXEL_CLASSES.values()
}

MAX_SCALES = max(PIXEL_CLASSES.values())


def template_of(height: int, width: int) -> float:
    """The template nearest an image's height / width ratio (Infinity's
    `h_div_w_templates[np.argmin(np.abs(h_div_w - h_div_w_templates))]`: the first on ties)."""
    ratio = height / width
    return min(TEMPLATES, key=lambda t: abs(ratio - t))


def template_pixels(height: int, width: int, pixels: str) -> tuple[int, int]:
    """(height, width) in pixels an image of this shape is cropped to, for a pixel class."""
    h, w = TEMPLATES[template_of(height, width)][PIXEL_CLASSES[pixels] - 1]
    return h * PATCH, w * PATCH
