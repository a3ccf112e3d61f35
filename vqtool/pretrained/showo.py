"""Show-o's and MMaDA's MAGVIT-v2 (showlab/magvitv2, Show-o's `models/modeling_magvitv2.py`):
the vqtool config read off its state_dict, and its names in vqtool's `conv` model.

What sets it apart from the other VQGAN-style layouts: stages of their own block counts
(encoder 4,3,4,3,4; decoder 4,4,3,4,3 by stage from full resolution) and widths (the
decoder's channel multipliers are not the encoder's); 1x1 convs 13 -> 13 inside the
encoder (`encoder.quant_conv`) and decoder (`decoder.post_quant_conv`); lookup-free
quantization of 13 channels whose code numbers channel 0 as the MOST significant bit
(`quantize.power_vals` = 4096, ..., 1), unlike Open-MAGVIT2's LFQ."""

from __future__ import annotations

import torch

from vqtool.errors import CheckpointError
from vqtool.pretrained.vqgan import count, vqgan_mapping


def showo_detect(sd: dict) -> bool:
    return "quantize.power_vals" in sd and "encoder.quant_conv.weight" in sd


def _bit_order(sd: dict) -> str:
    """"msb" or "lsb", from the file's own power table; its code table is checked
    against the order (a file whose tables disagree is refused)."""
    power = sd["quantize.power_vals"]
    if power.is_meta:
        return "msb"
    bits = power.numel()
    msb = 2 ** torch.arange(bits - 1, -1, -1)
    order = "msb" if torch.equal(power.long(), msb) else "lsb"
    if order == "lsb" and not torch.equal(power.long(), msb.flip(0)):
        raise CheckpointError(f"quantize.power_vals {power.tolist()} are not powers of two")
    table = sd.get("quantize.embedding")
    if table is not None:
        index = torch.arange(2**bits).unsqueeze(1)
        shifts = torch.arange(bits - 1, -1, -1) if order == "msb" else torch.arange(bits)
        if not torch.equal(table.float(), ((index >> shifts) & 1).float() * 2 - 1):
            raise CheckpointError("quantize.embedding is not the +-1 table of its power_vals")
    return order


def showo_config(sd: dict, image_size: int) -> dict:
    keys = set(sd)
    levels = count(keys, r"encoder\.down\.(\d+)\.")
    ch = sd["encoder.conv_in.weight"].shape[0]

    def widths(side: str, stages: str) -> list[int]:
        first = [sd[f"{side}.{stages}.{i}.block.0.conv1.weight"] for i in range(levels)]
        return [w.shape[0] // ch for w in first]

    def blocks(side: str, stages: str) -> list[int]:
        return [count(keys, rf"{side}\.{stages}\.{i}\.block\.(\d+)\.") for i in range(levels)]

    enc = blocks("encoder", "down")
    attn = "encoder.down.{}.attn.0.q.weight"
    z = sd["encoder.conv_out.weight"].shape[0]
    bits = sd["encoder.quant_conv.weight"].shape[0]
    model = {
        "architecture": "conv",
        "channels": ch,
        "channel_mult": widths("encoder", "down"),
        "num_res_blocks": max(enc),
        "stage_res_blocks": enc,
        "decoder_stage_res_blocks": blocks("decoder", "up"),
        "decoder_channel_mult": widths("decoder", "up"),
        "attention": True,
        "attention_levels": [i for i in range(levels) if attn.format(i) in keys],
        "z_channels": z,
        "embed_dim": bits,
        "swish": "x_sigmoid",
        "attention_impl": "manual",
    }
    quantizer = {"kind": "lfq", "codebook_size": 2**bits, "bit_order": _bit_order(sd)}
    return {
        "model": model,
        "quantizer": quantizer,
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "showo",
        "pixel_arithmetic": "normalize_half",
        "decode_layout": "contiguous",
        "to_uint8": "janus",  # inference_t2i.py: clamp((x + 1) / 2, 0, 1) * 255, truncated
    }


def showo_mapping(cfg: dict) -> dict[str, str]:
    moved = {"quant_conv.": "encoder.quant_conv.", "post_quant_conv.": "decoder.post_quant_conv."}
    out = {}
    for theirs, mine in vqgan_mapping(cfg, "taming").items():
        if theirs.startswith("quantize."):
            continue  # the LFQ tables: derived from the bit order, checked when read
        for old, new in moved.items():
            if theirs.startswith(old):
                theirs = new + theirs[len(old) :]
        out[theirs] = mine
    return out
