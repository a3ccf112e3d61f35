"""SBER-MoVQGAN (ai-forever/MoVQGAN: movqgan_67M / 102M / 270M.ckpt; Lumina-mGPT 2.0's
tokenizer): the vqtool config read off its state_dict, and its names in vqtool's `movq`
model. The encoder, quant convs and codebook carry taming's names; the decoder's own
(`decoder.*`, spatial norms `norm1.norm_layer` / `conv_y` / `conv_b`) map one to one."""

from __future__ import annotations

import torch

from vqtool.pretrained.renames import taming_names
from vqtool.pretrained.vqgan import stages, vqgan_mapping

#: Lumina-mGPT 2.0's own preprocessing (lumina_mgpt/data/item_processor.py,
#: FlexARItemProcessor(target_size=768): var_center_crop over its crop list of 32-px
#: patches, at most 24^2 of them)
LUMINA_POLICY = "crops:768:32"


def movq_detect(sd: dict) -> bool:
    return taming_names(sd) and "decoder.mid.block_1.norm1.conv_y.weight" in sd


def movq_config(sd: dict, image_size: int) -> dict:
    keys = set(sd)
    shape = stages(sd)
    levels = len(shape["channel_mult"])
    model = {
        "architecture": "movq",
        **shape,
        "attention_levels": [
            i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in keys
        ],
        "z_channels": sd["encoder.conv_out.weight"].shape[0],
        "embed_dim": sd["quant_conv.weight"].shape[0],
    }
    return {
        "model": model,
        "quantizer": {
            "kind": "vq",
            "codebook_size": sd["quantize.embedding.weight"].shape[0],
            "ema_decay": None,
            "kmeans_init": False,
            "distance": "expanded",
        },
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "lumina",
        "pixel_arithmetic": "float64_unit",
        "decode_layout": "contiguous",
        "to_uint8": "lumina",  # inference_solver.py's show_images
        "policy": LUMINA_POLICY,
    }


def movq_mapping(cfg: dict) -> dict[str, str]:
    from vqtool.models.movq import MoVQConfig, MoVQDecoder

    m = cfg["model"]
    as_conv = {**cfg, "model": {**m, "decoder_res_blocks": m["num_res_blocks"] + 1}}
    pairs = {
        theirs: mine
        for theirs, mine in vqgan_mapping(as_conv, "taming").items()
        if theirs.startswith(("encoder.", "quant_conv.", "quantize."))
    }
    with torch.device("meta"):
        decoder = MoVQDecoder(MoVQConfig(**{k: v for k, v in m.items() if k != "architecture"}))
    for name in decoder.state_dict():
        theirs = name if name.startswith("post_quant_conv.") else f"decoder.{name}"
        pairs[theirs] = f"net.decoder.{name}"
    return pairs
