"""The layouts of stage-structured tokenizers: Open-MAGVIT2 (LFQ), the MaskGIT VQGAN port
and Emu3's VisionTokenizer: the vqtool config read off a state_dict's shapes, and the
names of its parameters in vqtool's `magvit2`, `maskgit_vqgan` and `emu3` models."""

from __future__ import annotations

import torch

from vqtool.pretrained.vqgan import conv_io, count, res_renames, stages


def omv2_config(sd: dict, image_size: int) -> dict:
    bits = sd["encoder.conv_out.weight"].shape[0]
    return {
        "model": {
            "architecture": "magvit2",
            **stages(sd),
            "z_channels": bits,
        },
        "quantizer": {"kind": "lfq", "codebook_size": 2**bits, "entropy_weight": 0.0},
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "bilinear",
        "pixel_arithmetic": "float64",
        "decode_layout": "channels_last",  # get_codebook_entry's rearrange is a permute
        "to_uint8": "chameleon",  # reconstruct.py's custom_to_pil: the same arithmetic
    }


def omv2_native_size(sd: dict) -> int:
    """Both released models give 16x16 tokens at their training size (256_L is f16 at
    256 px, 128_L is f8 at 128 px)."""
    return 16 * 2 ** (len(stages(sd)["channel_mult"]) - 1)


def staged_mapping(cfg: dict, mid: str) -> list[tuple[str, str]]:
    """Names shared by the Open-MAGVIT2 and MaskGIT layouts: in/out convs and
    norms, `{side}.{mid}.{j}` middle blocks, `encoder.down.{i}.block.{j}` and
    `decoder.up.{i}.block.{j}` residual blocks -> vqtool's stages."""
    m = cfg["model"]
    levels, blocks = len(m["channel_mult"]), m["num_res_blocks"]
    pairs: list[tuple[str, str]] = []
    for side in ("encoder", "decoder"):
        for name in ("conv_in", "norm_out", "conv_out"):
            pairs += conv_io(f"{side}.{name}", f"net.{side}.{name}")
        for j in range(blocks):
            pairs += res_renames(f"{side}.{mid}.{j}", f"net.{side}.mid.{j}")
    for i in range(levels):
        for j in range(blocks):
            pairs += res_renames(f"encoder.down.{i}.block.{j}", f"net.encoder.stages.{i}.res.{j}")
            pairs += res_renames(f"decoder.up.{i}.block.{j}", f"net.decoder.stages.{i}.res.{j}")
    return pairs


def omv2_mapping(cfg: dict) -> dict[str, str]:
    pairs = staged_mapping(cfg, "mid_block")
    for i in range(len(cfg["model"]["channel_mult"])):
        pairs += conv_io(f"encoder.down.{i}.downsample", f"net.encoder.stages.{i}.down")
        pairs += conv_io(f"decoder.up.{i}.upsample.conv1", f"net.decoder.stages.{i}.up.conv")
        for g in ("gamma", "beta"):
            pairs += conv_io(f"decoder.adaptive.{i}.{g}", f"net.decoder.stages.{i}.norm.{g}")
    return dict(pairs)


def omv2_ema_name(name: str) -> str:
    """Open-MAGVIT2's EMA copy names a parameter `model_ema.` + its name without dots."""
    return "model_ema." + name.replace(".", "")


def maskgit_config(sd: dict, image_size: int) -> dict:
    return {
        "model": {
            "architecture": "maskgit_vqgan",
            **stages(sd),
            "z_channels": sd["encoder.conv_out.weight"].shape[0],
        },
        "quantizer": {
            "kind": "vq",
            "codebook_size": sd["quantize.embedding.weight"].shape[0],
            "ema_decay": None,
            "kmeans_init": False,
            "distance": "addmm",
        },
        "image_size": image_size,
        "pixel_range": "0,1",
        "resize": "bilinear",
        "pixel_arithmetic": "float32",
        "decode_layout": "channels_last",  # get_codebook_entry permutes without a copy
        "to_uint8": "muse",  # pipeline_muse.py's to_pil_image
    }


def maskgit_mapping(cfg: dict) -> dict[str, str]:
    pairs = staged_mapping(cfg, "mid")
    for i in range(len(cfg["model"]["channel_mult"])):
        pairs += conv_io(f"decoder.up.{i}.upsample_conv", f"net.decoder.stages.{i}.up_conv")
    pairs.append(("quantize.embedding.weight", "net.quantizer.embed"))
    return dict(pairs)


#: Emu3's own preprocessing as its released data preparation runs it
#: (emu3/train/prepare_data.py: resize to 720x720 pixels of area, then the image
#: processor's smart_resize: sides multiples of 8, area clamped to [512^2, 1024^2])
EMU3_POLICY = "smart:262144:1048576:518400"


def emu3_config(sd: dict, image_size: int) -> dict:
    keys = set(sd)
    levels = count(keys, r"encoder\.down\.(\d+)\.")
    ch = sd["encoder.conv_in.weight"].shape[0]
    width = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
    embed = sd["quantize.embedding.weight"]
    return {
        "model": {
            "architecture": "emu3",
            "channels": ch,
            "channel_mult": [w // ch for w in width],
            "num_res_blocks": count(keys, r"encoder\.down\.0\.block\.(\d+)\."),
            "attention_levels": [
                i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in keys
            ],
            "z_channels": sd["encoder.conv_out.weight"].shape[0],
            "embed_dim": embed.shape[1],
            "temporal_factor": 2 ** count(keys, r"encoder\.time_conv\.(\d+)\."),
        },
        "quantizer": {
            "kind": "vq",
            "codebook_size": embed.shape[0],
            "ema_decay": None,
            "kmeans_init": False,
            "distance": "expanded",
        },
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "emu3",
        "pixel_arithmetic": "rescale_normalize",
        "decode_layout": "contiguous",
        "to_uint8": "janus",  # the image processor's postprocess: the same arithmetic
        "policy": EMU3_POLICY,
    }


def emu3_mapping(cfg: dict) -> dict[str, str]:
    """The model keeps Emu3's own names under encoder/decoder (read off the modules, built
    on the meta device); the quant convs live in them; the codebook is the quantizer's."""
    from vqtool.models.emu3 import Emu3Config, Emu3Decoder, Emu3Encoder

    c = Emu3Config(**{k: v for k, v in cfg["model"].items() if k != "architecture"})
    pairs = {"quantize.embedding.weight": "net.quantizer.embed"}
    with torch.device("meta"):
        sides = (("encoder", Emu3Encoder(c)), ("decoder", Emu3Decoder(c)))
    for side, module in sides:
        for name in module.state_dict():
            theirs = f"{side}.{name}"
            for ours_at, at in (("quant_conv.", ""), ("post_quant_conv.", "")):
                if name.startswith(ours_at):
                    theirs = at + name
            pairs[theirs] = f"net.{side}.{name}"
    return pairs
