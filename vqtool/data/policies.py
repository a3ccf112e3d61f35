"""Resize policies that keep each image's shape (encode --resize other than square):
their parsing, and the size each rule gives an image.

- smart:MIN:MAX[:AREA]: Emu3's smart_resize;
- area:AREA[:FACTOR]: Emu3.5's smart_resize;
- crops:TARGET:PATCH: Lumina-mGPT's var_center_crop, the crop size of a list (every
  PATCH-multiple size of at most (TARGET/PATCH)^2 patches, aspect ratio at most 4) that
  keeps the most of the image, reached by ADM's resize and centre crop;
- templates:PIXELS: Infinity's aspect-ratio templates (`vqtool.data.templates`), PIXELS
  its total-pixel class (0.06M, 0.25M, 0.60M, 1M).
"""

from __future__ import annotations

import math

from PIL import Image

from vqtool.data.templates import PIXEL_CLASSES
from vqtool.errors import ConfigError, DecodeError


def parse_policy(text: str) -> tuple:
    """`--resize`: "square" (resize and centre-crop to the tokenizer's size), "none" (the
    image as it is), "smart:MIN_PIXELS:MAX_PIXELS[:AREA]" (Emu3's smart_resize),
    "area:AREA[:FACTOR]" (Emu3.5's smart_resize) or "crops:TARGET:PATCH" (Lumina-mGPT's
    var_center_crop), as a tuple."""
    if text in ("square", "none"):
        return (text,)
    parts = text.split(":")
    if parts[0] == "templates" and len(parts) == 2 and parts[1] in PIXEL_CLASSES:
        return ("templates", parts[1])
    values = [int(v) for v in parts[1:]] if all(v.isdigit() for v in parts[1:]) else [0]
    if not all(values):  # each a positive integer
        values = []
    if parts[0] == "smart" and len(values) in (2, 3) and values[0] <= values[1]:
        return ("smart", *values)
    if parts[0] == "area" and len(values) in (1, 2):
        return ("area", *values)
    if parts[0] == "crops" and len(values) == 2 and values[0] >= values[1]:
        return ("crops", *values)
    raise ConfigError(
        f"--resize {text!r}: use square, none, smart:MIN_PIXELS:MAX_PIXELS[:AREA] (Emu3: "
        "smart:262144:1048576:518400, AREA being its prepare_data.py resize to 720x720 pixels), "
        "area:AREA[:FACTOR] (Emu3.5: area:518400:16), crops:TARGET:PATCH (Lumina-mGPT 2.0: "
        f"crops:768:32) or templates:PIXELS (Infinity: PIXELS one of {', '.join(PIXEL_CLASSES)})"
    )


def area_size(height: int, width: int, area: int, factor: int) -> tuple[int, int]:
    """Emu3.5's `smart_resize` (src/utils/input_utils.py): the height for `area` pixels at
    the image's aspect ratio, truncated, the width from it, truncated, then each side
    rounded half up to a multiple of `factor`; (height, width)."""
    aspect = width / height
    new_h = int((area / aspect) ** 0.5)
    new_w = int(new_h * aspect)
    new_h = (new_h + factor // 2) // factor * factor
    new_w = (new_w + factor // 2) // factor * factor
    if not new_h or not new_w:
        raise DecodeError(
            f"{width}x{height}: a side rounds to 0 px at {area} pixels of area", "too_small"
        )
    return new_h, new_w


def smart_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int):
    """Emu3's `smart_resize` (emu3/tokenizer/image_processing_emu3visionvq.py): sides
    rounded to multiples of `factor`, the area brought into [min_pixels, max_pixels] with
    the aspect ratio kept as closely as the rounding allows; (height, width)."""
    if height < factor or width < factor:
        raise DecodeError(f"{width}x{height} is smaller than the factor {factor}", "too_small")
    if max(height, width) / min(height, width) > 5:
        raise DecodeError(
            f"{width}x{height}: aspect ratio above 5, which smart resize refuses", "aspect_ratio"
        )
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def crop_sizes(target: int, patch: int, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """Lumina-mGPT's crop list (`generate_crop_size_list` in its data/item_processor.py):
    every (width, height) of wp x hp patches with wp * hp <= (target / patch)^2 and aspect
    at most `max_ratio`, widest first, in the original's order (its ties break by it)."""
    budget = (target // patch) ** 2
    sizes, wp, hp = [], budget, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= budget:
            hp += 1
        else:
            wp -= 1
    return sizes


def best_crop(width: int, height: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The crop of `sizes` that keeps the largest share of a width x height image after
    scaling to cover it (var_center_crop with random_top_k = 1: the largest share, ties to
    the larger size, as its sort of (share, size) pairs in reverse gives)."""
    return max(
        ((min(cw / width, ch / height) / max(cw / width, ch / height), (cw, ch)))
        for cw, ch in sizes
    )[1]


def adm_crop(img: Image.Image, width: int, height: int) -> Image.Image:
    """Lumina-mGPT's `center_crop` (ADM's, for any crop size): BOX halving while both sides
    are at least twice the crop's, a BICUBIC resize by the larger of the two scales
    (sides rounded), then a centre crop with floored offsets. Pillow resamples the image
    in its own mode, as the original (a palette image with NEAREST, alpha premultiplied)."""
    while img.size[0] >= 2 * width and img.size[1] >= 2 * height:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = max(width / img.size[0], height / img.size[1])
    img = img.resize(tuple(round(x * scale) for x in img.size), Image.Resampling.BICUBIC)
    left, top = (img.size[0] - width) // 2, (img.size[1] - height) // 2
    return img.crop((left, top, left + width, top + height))


def var_center_crop(img: Image.Image, target: int, patch: int) -> Image.Image:
    """Lumina-mGPT's var_center_crop: an image already of a listed size is kept as it is."""
    sizes = crop_sizes(target, patch)
    if img.size in sizes:
        return img
    return adm_crop(img, *best_crop(*img.size, sizes))
