"""Pixels to PNG files: one image, or many in a grid (decode, sample)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqtool.atomic import replacing


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] or uint8 -> RGB PIL image."""
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy().astype(np.uint8), "RGB")


def side_by_side(images: list[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """Images of equal height -> one (3, H, sum W + gaps) uint8 image, white gaps."""
    parts = [_u8(x) for x in images]
    h = parts[0].shape[1]
    white = torch.full((3, h, gap), 255, dtype=torch.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [white, p]
    return torch.cat(out, dim=2)


def make_grid(images: list[torch.Tensor], columns: int | None = None, gap: int = 2) -> Image.Image:
    """Equal-size images -> a near-square grid on white."""
    if not images:
        raise ValueError("no images to put in a grid")
    parts = [_u8(x) for x in images]
    _, h, w = parts[0].shape
    cols = columns or math.ceil(math.sqrt(len(parts)))
    rows = math.ceil(len(parts) / cols)
    canvas = torch.full((3, rows * (h + gap) - gap, cols * (w + gap) - gap), 255, dtype=torch.uint8)
    for i, p in enumerate(parts):
        r, c = divmod(i, cols)
        canvas[:, r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = p
    return to_pil(canvas)


def save_png(image: Image.Image | torch.Tensor, path: str | Path) -> Path:
    """Write a PNG atomically (temporary name, then rename)."""
    path = Path(path)
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        pil.save(tmp, format="PNG")
    return path


def safe_name(key: str) -> str:
    """A sample key -> a file name (path separators and odd characters replaced)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "image"
    return name[:200]


def _u8(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.cpu()
    return (x.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
