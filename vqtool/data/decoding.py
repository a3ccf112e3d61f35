"""Image files to RGB pictures, under an explicit input rule: decode any stored image (a
pixel limit against decompression bombs, JPEG `draft()` for fast reduced-scale decoding),
turn it upright by its EXIF orientation or keep it as stored, and bring every PIL mode to
RGB (transparency and more than 8 bits per value handled as the rule and the tokenizer's
family say). No torch: the crops live in `vqtool.data.images`.

The public tokenizers' originals all read images as `Image.open(f).convert("RGB")` (or
hand a PIL image straight to their processor): the picture stays as stored whatever its
EXIF orientation says, and Pillow clips 16-bit values above 255. vqtool's own tokenizers
turn photos upright and scale high bit depths by their range: the better picture, but not
the originals' tokens. `InputRule` names the two choices, `family_rule` gives each
tokenizer's default, and encode records the rule it used.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from vqtool.errors import ConfigError, DecodeError

#: default refusal threshold: larger images are treated as decompression bombs
MAX_PIXELS = 1 << 28  # 268 megapixels
#: PIL modes holding more than 8 bits per value (16-bit and 32-bit greyscale, float)
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
#: EXIF orientations that swap width and height on display
_SWAPS = (5, 6, 7, 8)

ORIENTATIONS = ("exif", "stored")
HIGH_BIT_DEPTHS = ("scale", "clip")


@dataclass(frozen=True)
class InputRule:
    """How a stored image becomes the picture a tokenizer sees.

    `orientation`: "exif" turns the picture the way its EXIF orientation tag says (a phone
    photo taken upright comes out upright); "stored" keeps the pixels as stored (what
    `Image.open(f).convert("RGB")` gives). `high_bit_depth`: "scale" maps 16/32-bit and
    float greyscale to 8 bits by its range; "clip" converts as Pillow does, values above
    255 becoming 255."""

    orientation: Literal["exif", "stored"] = "exif"
    high_bit_depth: Literal["scale", "clip"] = "scale"

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise ConfigError(
                f"--orientation {self.orientation!r}: use exif (turn photos upright by their "
                "EXIF tag) or stored (pixels as stored, as the public tokenizers' originals)"
            )
        if self.high_bit_depth not in HIGH_BIT_DEPTHS:
            raise ConfigError(
                f"--high-bit-depth {self.high_bit_depth!r}: use scale (16-bit values scaled "
                "to 8 bits) or clip (Pillow's conversion, as the public tokenizers' originals)"
            )

    def to_dict(self) -> dict:
        return {"orientation": self.orientation, "high_bit_depth": self.high_bit_depth}


#: vqtool's own tokenizers: upright, scaled
OWN_RULE = InputRule("exif", "scale")
#: every public family's original loader: as stored, clipped (`convert("RGB")`)
ORIGINALS_RULE = InputRule("stored", "clip")


def family_rule(
    resize: str, orientation: str | None = None, high_bit_depth: str | None = None
) -> InputRule:
    """The input rule for a tokenizer whose preprocessing is `resize`: its family's
    original rule (vqtool's own "bicubic": exif + scale; every public family: stored +
    clip), with either choice overridden by name."""
    base = OWN_RULE if resize == "bicubic" else ORIGINALS_RULE
    return InputRule(
        orientation or base.orientation,  # type: ignore[arg-type]
        high_bit_depth or base.high_bit_depth,  # type: ignore[arg-type]
    )


class Decoded(NamedTuple):
    image: Image.Image  # RGB (or the stored mode, composite "keep")
    size: tuple[int, int]  # (width, height) as shown, before any draft reduction
    # what the input rule met: "exif_oriented" (an EXIF orientation other than 1),
    # "high_bit_depth" (a mode in HIGH_BIT_MODES)
    touched: tuple[str, ...]


def decode_image(
    data: bytes, draft_size: int | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Bytes -> RGB PIL image, upright. `draft_size` lets JPEGs decode at a reduced scale
    whose short side is still >= draft_size."""
    return decode_file(data, draft_size, max_pixels).image


def decode_with_size(
    data: bytes,
    draft_size: int | Callable[[int, int], int] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> tuple[Image.Image, tuple[int, int]]:
    """`decode_file`'s upright RGB picture and its (width, height) as shown (training crops
    and image-shard reports, which use vqtool's own rule)."""
    return decode_file(data, draft_size, max_pixels)[:2]


def decode_file(
    data: bytes,
    draft_size: int | Callable[[int, int], int] | None = None,
    max_pixels: int = MAX_PIXELS,
    composite: str = "pil",
    rule: InputRule = OWN_RULE,
) -> Decoded:
    """Decode `data` under `rule`: the picture, its (width, height) as shown (turned by its
    EXIF orientation under "exif"; before any draft reduction) and what the rule met.
    `draft_size` may be a function of that shown size giving the short side the decoded
    image needs (so a crop can pick the JPEG scale from the region it will actually
    take). `composite` says how transparency meets the white background (`to_rgb`)."""
    if not data:
        raise DecodeError("empty file", "empty")
    try:
        with _own_pixel_limit():
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError(
                    f"{w}x{h} exceeds the pixel limit of {max_pixels} (decompression bomb?)",
                    "too_many_pixels",
                )
            if w == 0 or h == 0:
                raise DecodeError(f"image has no pixels ({w}x{h})", "no_pixels")
            tag = img.getexif().get(0x0112, 1)
            touched = (("exif_oriented",) if tag in range(2, 9) else ()) + (
                ("high_bit_depth",) if img.mode in HIGH_BIT_MODES else ()
            )
            turn = rule.orientation == "exif" and tag in range(2, 9)
            shown = (h, w) if turn and tag in _SWAPS else (w, h)
            if callable(draft_size):
                draft_size = draft_size(*shown)
            if draft_size and img.format == "JPEG":
                scale = min(w, h) / draft_size
                if scale >= 2:
                    img.draft("RGB", (math.ceil(w / scale), math.ceil(h / scale)))
            img.load()
            if turn:
                img = ImageOps.exif_transpose(img)
            return Decoded(to_rgb(img, composite, rule.high_bit_depth), shown, touched)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"decompression bomb: {stable(exc)}", "too_many_pixels") from exc
    except Exception as exc:  # PIL raises many types for corrupt data
        raise DecodeError(f"undecodable image: {type(exc).__name__}: {stable(exc)}") from exc


def stable(exc: BaseException) -> str:
    """An exception's text without the memory addresses (`<... at 0x7f...>`) that
    change on every run, so error files of two runs compare equal."""
    return re.sub(r"<([^<>]*?) (object )?at 0x[0-9a-fA-F]+>", r"<\1>", str(exc))


@contextlib.contextmanager
def _own_pixel_limit():
    """`max_pixels` is the only limit: Pillow's own (a warning from 89.5 MP, an error
    from 179 MP) is lifted while an image is opened, and our check runs right after."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def to_rgb(img: Image.Image, composite: str = "pil", high_bit_depth: str = "scale") -> Image.Image:
    """Any PIL mode -> RGB. `high_bit_depth="scale"` maps 16/32-bit greyscale to 8 bits by
    its range first; "clip" leaves it to Pillow's conversions (values above 255 become
    255, as in the originals' `convert("RGB")`). Transparency: `composite="pil"` blends
    over white with Pillow's `alpha_composite`; `"chameleon"` as Chameleon's image
    tokenizer does (`_whiten_transparency`: `(1 - a) * 255 + a * rgb` in float64 with
    a = alpha / 255, truncated to uint8), which its tokens depend on; `"drop"` discards it
    (`convert("RGB")`, as Janus' and most originals' loaders do); `"keep"` leaves the image
    in its own mode for a family that resizes first and blends afterwards (Lumina-mGPT)."""
    if img.mode in HIGH_BIT_MODES and high_bit_depth == "scale":
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode == "RGB" or composite == "keep":
        return img
    if composite == "drop":
        return img.convert("RGB")
    if composite == "chameleon":
        rgba = np.array(img.convert("RGBA"))
        if not (rgba[:, :, 3] < 255).any():
            return img.convert("RGB")
        alpha = rgba[:, :, 3:] / 255.0
        blended = (1 - alpha) * 255 + alpha * rgba[:, :, :3]
        return Image.fromarray(blended.astype(np.uint8), "RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
