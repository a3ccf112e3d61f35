"""Infinity's bitwise multi-scale VAE (FoundationVision/Infinity `infinity_vae_d16.pth`,
`_d24`, `_d32`, `_d32reg`: the weights under `vae`): the vqtool config read off the
state_dict's shapes and the names of its parameters in vqtool's `infinity` model
(`vqtool.models.infinity`).

The release's module wraps every conv in a `Conv` (`.conv.`) and every GroupNorm in a
`Normalize` (`.norm.`); its loader (`vae.py` `load_cnn`) also takes the plain taming names.
Both are read: wrapped names are unwrapped on reading (`infinity_plain_names`)."""

from __future__ import annotations

import re

from vqtool.data.templates import PATCH, SCHEDULES
from vqtool.errors import CheckpointError
from vqtool.pretrained.vqgan import conv_io, res_renames, stages

#: Infinity's own resolution: its 2B model's pixel class (pn "1M", 1024 px at 1:1)
DEFAULT_PIXELS = "1M"


def infinity_detect(sd: dict) -> bool:
    return (
        "quantizer.lfq.mask" in sd
        or "quantize.lfq.mask" in sd
        or "encoder.conv_in.conv.weight" in sd
    )


def infinity_plain_names(sd: dict) -> dict:
    """The release's `Conv`/`Normalize`-wrapped names (`conv1.conv.weight`,
    `norm1.norm.weight`, `downsample.conv.conv.weight`) as taming's."""
    if "encoder.conv_in.conv.weight" not in sd:
        return sd
    return {re.sub(r"\.(conv|norm)\.(weight|bias)$", r".\2", k): v for k, v in sd.items()}


def infinity_config(sd: dict, image_size: int) -> dict:
    sd = infinity_plain_names(sd)
    if (image_size // PATCH,) * 2 not in SCHEDULES or image_size % PATCH:
        squares = sorted(h * PATCH for h, w in SCHEDULES if h == w)
        raise CheckpointError(
            f"--image-size {image_size}: Infinity's square template ends at "
            f"{', '.join(map(str, squares))} px; other shapes: --resize templates:PN"
        )
    bits = int(sd["encoder.conv_out.weight"].shape[0])
    shape = stages(sd)
    if 2 ** (len(shape["channel_mult"]) - 1) != PATCH:
        raise CheckpointError(
            f"an Infinity VAE of {len(shape['channel_mult'])} stages: vqtool reads the "
            f"{PATCH}-pixel releases (d16, d24, d32), not the 8-pixel patchify ones"
        )
    if bits > 32:
        raise CheckpointError(
            f"a {bits}-bit Infinity VAE: vqtool's token columns hold up to 32 bits per "
            "position (d16, d24, d32); infinity_vae_d64 is not supported"
        )
    return {
        "model": {"architecture": "infinity", **shape, "bits": bits},
        "quantizer": {"kind": "bsq", "codebook_size": 2**bits, "bit_order": "msb"},
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "infinity",
        "pixel_arithmetic": "float32",  # to_tensor, then x + x - 1
        "to_uint8": "chameleon",  # clamp, (x + 1) / 2, * 255, truncated (labels2image)
        "policy": f"templates:{DEFAULT_PIXELS}",
    }


def infinity_mapping(cfg: dict) -> dict[str, str]:
    """Infinity's (taming's) names -> vqtool's: no attention, no quant convs."""
    m = cfg["model"]
    levels, blocks = len(m["channel_mult"]), m["num_res_blocks"]
    pairs = []
    for side in ("encoder", "decoder"):
        for name in ("conv_in", "norm_out", "conv_out"):
            pairs += conv_io(f"{side}.{name}", f"net.{side}.{name}")
    n = 0
    for i in range(levels):
        for j in range(blocks):
            pairs += res_renames(f"encoder.down.{i}.block.{j}", f"net.encoder.blocks.{n}")
            n += 1
        if i < levels - 1:
            pairs += conv_io(f"encoder.down.{i}.downsample.conv", f"net.encoder.blocks.{n}.conv")
            n += 1
    for k, side_n in enumerate((n, 0)):
        side = ("encoder", "decoder")[k]
        pairs += res_renames(f"{side}.mid.block_1", f"net.{side}.blocks.{side_n}")
        pairs += res_renames(f"{side}.mid.block_2", f"net.{side}.blocks.{side_n + 1}")
    n = 2
    for i in reversed(range(levels)):
        for j in range(blocks + 1):
            pairs += res_renames(f"decoder.up.{i}.block.{j}", f"net.decoder.blocks.{n}")
            n += 1
        if i > 0:
            pairs += conv_io(f"decoder.up.{i}.upsample.conv", f"net.decoder.blocks.{n}.conv")
            n += 1
    return dict(pairs)
