"""The crops: a random resized crop with flip for training, and for evaluation and
encoding a short-side resize and centre crop, or each public family's own resize and
crop (`RESIZERS`), on pictures decoded by `vqtool.data.decoding` under the tokenizer's
input rule. Results are uint8 `(3, S, S)` tensors.
"""

from __future__ import annotations

import math
import random
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from vqtool.data.decoding import (
    MAX_PIXELS,
    InputRule,
    decode_file,
    decode_with_size,
    family_rule,
    to_rgb,
)
from vqtool.data.opencv_linear import taming_center_crop
from vqtool.data.policies import adm_crop, area_size, smart_size, var_center_crop
from vqtool.data.templates import template_pixels
from vqtool.errors import DecodeError

RESAMPLE = Image.Resampling.BICUBIC


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 `(3, H, W)`."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def center_crop(img: Image.Image, size: int) -> torch.Tensor:
    """Resize the short side to `size` and take the centre square (one resample)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    return to_tensor(img.resize((size, size), RESAMPLE, box=box, reducing_gap=3.0))


def random_resized_crop(
    img: Image.Image,
    size: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """A random crop covering `scale` of the area at an aspect ratio in `ratio`,
    resized to `size` x `size`, mirrored half of the time."""
    box = sample_box(*img.size, rng, scale, ratio)
    return crop_box(img, box, size, flip and rng.random() < 0.5)


def sample_box(
    w: float,
    h: float,
    rng: random.Random,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) of a random-resized crop of a w x h image."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if cw <= w and ch <= h:
            left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (left, top, left + cw, top + ch)
    side = min(w, h)  # fall back to the centre square
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


def crop_box(img: Image.Image, box, size: int, flip: bool = False) -> torch.Tensor:
    """`box` of `img` resized to `size` x `size` (one resample), optionally mirrored."""
    out = img.resize((size, size), RESAMPLE, box=box, reducing_gap=3.0)
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(out)


def decode_random_crop(
    data: bytes,
    size: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.5, 1.0),
    max_pixels: int = MAX_PIXELS,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode and take a random-resized crop, with the JPEG draft scale chosen from
    the crop actually taken (its short side stays >= `size`), not the whole image."""
    chosen: list = []

    def needed(w: int, h: int) -> int:
        chosen.append((sample_box(w, h, rng, scale), (w, h)))
        left, top, right, bottom = chosen[0][0]
        return math.ceil(min(w, h) * size / max(1e-6, min(right - left, bottom - top)))

    img, shown = decode_with_size(data, needed, max_pixels)
    (left, top, right, bottom), (w, h) = chosen[0]
    r = img.size[0] / w  # the draft's reduction
    box = (left * r, top * r, right * r, bottom * r)
    return crop_box(img, box, size, rng.random() < 0.5), shown


def short_side_resize(img: Image.Image, short: int) -> Image.Image:
    """Resize (bicubic) so the short side is `short` pixels; images already at most
    that size are kept as they are (never upsampled)."""
    w, h = img.size
    if min(w, h) <= short:
        return img
    s = short / min(w, h)
    return img.resize(
        (max(short, round(w * s)), max(short, round(h * s))), RESAMPLE, reducing_gap=3.0
    )


def random_crop(arr: np.ndarray, size: int, rng: random.Random) -> torch.Tensor:
    """A random `size` x `size` crop of an (H, W, 3) uint8 photo, mirrored half of the
    time; photos smaller than `size` are first resized up to it."""
    h, w = arr.shape[:2]
    if min(h, w) < size:
        s = size / min(w, h)
        img = Image.fromarray(arr).resize(
            (max(size, round(w * s)), max(size, round(h * s))), RESAMPLE
        )
        arr = np.asarray(img)
        h, w = arr.shape[:2]
    y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
    crop = arr[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous()


def adm_center_crop(img: Image.Image, size: int) -> torch.Tensor:
    """LlamaGen's (ADM) crop: halve with BOX while the short side is >= 2x size,
    BICUBIC-resize the short side to `size` (rounded), integer centre crop."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.Resampling.BICUBIC)
    arr = np.array(img, dtype=np.uint8)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    crop = np.ascontiguousarray(arr[top : top + size, left : left + size])
    return torch.from_numpy(crop).permute(2, 0, 1).contiguous()


def torchvision_center_crop(
    img: Image.Image, size: int, resample=Image.Resampling.BILINEAR, resize_to: int | None = None
):
    """torchvision `Resize(resize_to or size, interpolation)` on a PIL image (short side,
    long side truncated) then `CenterCrop(size)` (offsets rounded half to even)."""
    w, h = img.size
    short = resize_to or size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize(new, resample=resample)
    top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
    return to_tensor(img.crop((left, top, left + size, top + size)))


def var_crop(img: Image.Image, size: int) -> torch.Tensor:
    """VAR's evaluation transform (utils/data.py): torchvision `Resize(round(1.125 *
    size), LANCZOS)` of the short side, then `CenterCrop(size)`."""
    return torchvision_center_crop(img, size, Image.Resampling.LANCZOS, round(1.125 * size))


def infinity_crop(img: Image.Image, height: int, width: int | None = None) -> torch.Tensor:
    """Infinity's training `transform` (infinity/dataset/dataset_t2i_iterable.py): LANCZOS
    resize to cover height x width (the side that binds set exactly, the other
    `int(...)`-truncated), then a centre crop with floored offsets."""
    width = width or height
    w, h = img.size
    if w / h <= width / height:
        size = (width, int(width / (w / h)))
    else:
        size = (int((w / h) * height), height)
    img = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return to_tensor(img.crop((left, top, left + width, top + height)))


def lanczos_center_crop(img: Image.Image, size: int) -> torch.Tensor:
    """Chameleon's `_vqgan_input_from`: LANCZOS resize of the short side to `size`
    (both sides `round(scale * side)`), then a centre crop with floored offsets."""
    scale = size / min(img.size)
    img = img.resize(tuple(round(scale * x) for x in img.size), Image.Resampling.LANCZOS)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return to_tensor(img.crop((left, top, left + size, top + size)))


#: Janus' padding colour: its image processor's `int(mean * 255)` for mean 0.5
JANUS_BACKGROUND = (127, 127, 127)


def pad_to_square(img: Image.Image, size: int, min_side: int = 14) -> torch.Tensor:
    """Janus' `VLMImageProcessor.resize`: BICUBIC resize of the long side to `size`
    (each side `int(side / long * size)`, at least `min_side`), then `expand2square`:
    pasted on a grey square at offset `(long - short) // 2`."""
    w, h = img.size
    long = max(w, h)
    new_h, new_w = max(int(h / long * size), min_side), max(int(w / long * size), min_side)
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    side = max(new_w, new_h)
    if new_w != new_h:
        square = Image.new("RGB", (side, side), JANUS_BACKGROUND)
        square.paste(img, ((side - new_w) // 2, (side - new_h) // 2))
        img = square
    return to_tensor(img)


#: the resize + crop of each preprocessing mode (TokenizerConfig.resize)
RESIZERS = {
    "bicubic": center_crop,
    "adm": adm_center_crop,
    "bilinear": torchvision_center_crop,
    "showo": partial(torchvision_center_crop, resample=Image.Resampling.BICUBIC),
    "taming": taming_center_crop,
    "chameleon": lanczos_center_crop,
    "janus": pad_to_square,
    "var": var_crop,
    "infinity": infinity_crop,
    "emu3": center_crop,  # --resize square only: Emu3 itself keeps the aspect (smart)
    # a picture kept in its own mode is blended after the crop (16-bit values were scaled
    # at decode, or are clipped here as the original's blend does)
    "lumina": lambda img, size: to_tensor(to_rgb(adm_crop(img, size, size), "chameleon", "clip")),
}
#: how each mode composites transparency (to_rgb); vqtool's own ("bicubic") blends over
#: white with Pillow, every original but two drops it with `convert("RGB")`
COMPOSITE = {
    "adm": "drop",  # LlamaGen's ImageFolder and SimpleAR's T2IDataset
    "taming": "drop",  # taming's and Open-MAGVIT2's ImagePaths
    "bilinear": "drop",  # Open-MAGVIT2's loaders, open-muse's webdataset decode("pil")
    "chameleon": "chameleon",
    "janus": "drop",
    "emu3": "drop",
    "showo": "drop",
    "var": "drop",  # VAR's pil_loader: convert("RGB")
    "infinity": "drop",  # Infinity's dataset: PImage.open(f).convert("RGB")
    "lumina": "keep",
}


class Pixels(NamedTuple):
    pixels: torch.Tensor  # (3, H, W) uint8
    size: tuple[int, int]  # the stored picture's (width, height) as shown
    touched: tuple[str, ...]  # what the input rule met (`vqtool.data.decoding.Decoded`)


def native_pixels(
    data: bytes,
    policy: tuple,
    factor: int,
    resize: str = "bicubic",
    max_pixels: int = MAX_PIXELS,
    rule: InputRule | None = None,
) -> Pixels:
    """What encode feeds a tokenizer that keeps each image's shape: "none" the image as it
    is (a side below `factor` is refused), "smart" Emu3's rule and "area" Emu3.5's, each
    with a BICUBIC resize, "crops" Lumina-mGPT's crop list, "templates" Infinity's
    aspect-ratio templates; transparency handled as the tokenizer's family does, under
    `rule` (default: the family's own, `family_rule`)."""
    rule = rule or family_rule(resize)
    img, original, touched = decode_file(data, None, max_pixels, COMPOSITE.get(resize, "pil"), rule)
    w, h = img.size
    if policy[0] == "smart" and len(policy) > 3:  # Emu3's prepare_data.py: to AREA pixels
        ratio = (policy[3] / (h * w)) ** 0.5
        img = img.resize((int(round(w * ratio)), int(round(h * ratio))), Image.Resampling.BICUBIC)
        w, h = img.size
    if policy[0] in ("smart", "area"):
        if policy[0] == "smart":
            new_h, new_w = smart_size(h, w, factor, policy[1], policy[2])
        else:
            new_h, new_w = area_size(h, w, policy[1], policy[2] if len(policy) > 2 else factor)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    elif policy[0] == "crops":
        img = var_center_crop(img, policy[1], policy[2])
    elif policy[0] == "templates":  # Infinity: its template's size, then its crop
        return Pixels(infinity_crop(img, *template_pixels(h, w, policy[1])), original, touched)
    elif min(w, h) < factor:
        raise DecodeError(f"{w}x{h} is smaller than the tokenizer's factor {factor}", "too_small")
    # a "keep" picture blends here (its high bit depth scaled at decode, or clipped now)
    return Pixels(to_tensor(to_rgb(img, "chameleon", "clip")), original, touched)


def encode_pixels(
    data: bytes,
    size: int,
    resize: str = "bicubic",
    max_pixels: int = MAX_PIXELS,
    rule: InputRule | None = None,
    draft: bool | None = None,
) -> Pixels:
    """What encode feeds a tokenizer: decoded under `rule` (default: the family's own,
    `family_rule`), RGB, resized and centre-cropped to `size` with the tokenizer's resize,
    as (3, size, size) uint8, the original (w, h) and what the rule met. `draft`: a JPEG
    at least twice `size` is first reduced in libjpeg's DCT (by 1/2, 1/4 or 1/8, its short
    side kept at `size` or more) before the exact resize; default: for vqtool's own
    ("bicubic") resize, never for a public family's (their originals decode in full)."""
    draft = size if (resize == "bicubic" if draft is None else draft) else None
    rule = rule or family_rule(resize)
    img, original, touched = decode_file(
        data, draft, max_pixels, COMPOSITE.get(resize, "pil"), rule
    )
    return Pixels(RESIZERS[resize](img, size), original, touched)
