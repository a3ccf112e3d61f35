"""NVIDIA's Cosmos discrete tokenizers (Cosmos-0.1 / 1.0-Tokenizer-DI8x8, DI16x16,
DV4x8x8, DV8x8x8, DV8x16x16), from the released TorchScript files (`encoder.jit`,
`decoder.jit`, or `autoencoder.jit`; read by `pretrained.torchscript`, nothing run).

Sizes come from the tensors: widths, blocks, patch size (the first conv's input channels),
Haar or rearrange patching (the patcher's stored taps), FSQ levels (the quantizer's stored
`_levels`) and, for images, the compression (the number of downsampling convs). A video
tokenizer's down/up blocks hold the same weights whether they halve space, time or both,
so its temporal and spatial compression are read from the release's name (DV8x16x16:
8x in time, 16x in space), which the folder or file keeps as downloaded.

The default preprocessing is SimpleAR's (the published pipeline that writes Cosmos
tokens for LM training: simpar/data/extract_token.py with T2IDataset's "centercrop"):
convert('RGB'), ADM's centre crop, ToTensor + Normalize(0.5, 0.5), then bfloat16.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vqtool.errors import CheckpointError

#: file and folder names of the releases: DI<f>x<f>, DV<t>x<f>x<f>
_VARIANT = re.compile(r"D([IV])(\d+)x(\d+)(?:x(\d+))?")
DEFAULT_LEVELS = [8, 8, 8, 5, 5, 5]


def cosmos_detect(sd: dict) -> bool:
    return any(
        k.startswith(("encoder.patcher", "decoder.unpatcher", "inv_quant.quantizer."))
        or k in ("quantizer._levels", "encoder.conv_in.0.conv3d.weight")
        for k in sd
    )


def _video(sd: dict) -> bool:
    return "encoder.conv_in.0.conv3d.weight" in sd or "decoder.conv_in.0.conv3d.weight" in sd


def _weight(sd: dict, name: str, video: bool) -> torch.Tensor:
    """`name` (2D spelling: encoder.conv_in) in the file's layout."""
    if not video:
        return sd[f"{name}.weight"]
    for spelled in (f"{name}.conv3d.weight", f"{name}.0.conv3d.weight", f"{name}.1.conv3d.weight"):
        if spelled in sd:
            return sd[spelled]
    raise KeyError(f"{name}.weight")


def variant_from_name(path: Path | None) -> tuple[str, list[int]] | None:
    """("I" or "V", [compressions]) from the release's name in `path`, nearest first."""
    if path is None:
        return None
    for part in reversed(Path(path).resolve().parts):
        found = _VARIANT.search(part)
        if found:
            kind, *nums = found.groups()
            return kind, [int(n) for n in nums if n]
    return None


def cosmos_config(sd: dict, image_size: int, path: Path | None = None) -> dict:
    video = _video(sd)
    if not any(k.startswith("encoder.") for k in sd):
        raise CheckpointError(
            "this Cosmos file holds the decoder only; tokenizing needs encoder.jit (or "
            "autoencoder.jit): give the release's folder"
        )
    conv_in = _weight(sd, "encoder.conv_in", video)
    channels, patched = conv_in.shape[0], conv_in.shape[1]
    patch = round((patched / 3) ** (1 / (3 if video else 2)))
    widths, i = [], 0
    while f"encoder.down.{i}.block.0.norm1.{'norm.' if video else ''}weight" in sd:
        widths.append(_weight(sd, f"encoder.down.{i}.block.0.conv2", video).shape[0])
        i += 1
    blocks = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    taps = sd.get("encoder.patcher3d.wavelets" if video else "encoder.patcher.wavelets")
    method = "rearrange" if taps is not None and float(taps[0]) == 1.0 else "haar"
    levels = sd.get("quantizer._levels", sd.get("inv_quant.quantizer._levels"))
    levels = [int(v) for v in levels] if levels is not None else DEFAULT_LEVELS
    embed = _weight(sd, "quant_conv", video).shape[0]
    if len(levels) != embed:
        raise CheckpointError(f"FSQ levels {levels} do not fit {embed} code channels")
    model = {
        "architecture": "cosmos",
        "dims": 3 if video else 2,
        "channels": channels,
        "channel_mult": [w // channels for w in widths],
        "num_res_blocks": blocks,
        "patch_size": patch,
        "patch_method": method,
        "z_channels": _weight(sd, "encoder.conv_out", video).shape[0],
        "embed_dim": embed,
        "compute_dtype": "bfloat16",
    }
    if video:
        named = variant_from_name(path)
        if named is None or named[0] != "V" or len(named[1]) != 3:
            raise CheckpointError(
                f"{path}: a Cosmos video tokenizer's compression is not in its weights; keep "
                "the release's name on its folder or file (e.g. "
                "Cosmos-1.0-Tokenizer-DV8x16x16/encoder.jit)"
            )
        model["temporal_compression"], model["spatial_compression"] = named[1][:2]
    else:
        steps = sum(f"encoder.down.{j}.downsample.conv.weight" in sd for j in range(len(widths)))
        model["spatial_compression"] = patch * 2**steps
    return {
        "model": model,
        "quantizer": {"kind": "fsq", "levels": levels},
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "adm",
        "pixel_arithmetic": "normalize_half",
        "to_uint8": "round",  # tensor2numpy: clamp((x + 1) / 2, 0, 1) * 255 + 0.5
        "encoder_only": not any(k.startswith("decoder.") for k in sd),
    }


def cosmos_mapping(cfg: dict) -> dict[str, str]:
    """The release's names (encoder_jit / decoder_jit: `encoder.*`, `quant_conv.*`,
    `post_quant_conv.*`, `decoder.*`) -> vqtool's."""
    from vqtool.models.cosmos import CosmosConfig
    from vqtool.models.cosmos_net import CosmosDecoder, CosmosEncoder

    m = CosmosConfig(**{k: v for k, v in cfg["model"].items() if k != "architecture"})
    pairs = {}
    with torch.device("meta"):
        for part, module in (("encoder", CosmosEncoder(m)), ("decoder", CosmosDecoder(m))):
            for name in module.state_dict():
                pairs[name] = f"net.{part}.{name}"
    return pairs
