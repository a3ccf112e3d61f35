"""VAR's multi-scale VQ-VAE (FoundationVision/VAR `vae_ch160v4096z32.pth`): the vqtool
config read off the state_dict's shapes and the names of its parameters in vqtool's `var`
model (`vqtool.models.var`)."""

from __future__ import annotations

from vqtool.errors import CheckpointError
from vqtool.models.var import PATCH_NUMS
from vqtool.pretrained.vqgan import conv_io, count, stages, vqgan_mapping


def var_detect(keys) -> bool:
    return "quantize.quant_resi.qresi_ls.0.weight" in keys and "quantize.embedding.weight" in keys


def var_config(sd: dict, image_size: int) -> dict:
    if image_size not in PATCH_NUMS:
        raise CheckpointError(
            f"--image-size {image_size}: VAR's tokenizer runs at "
            f"{' or '.join(map(str, PATCH_NUMS))} px (its scale schedules end at 16x16 and "
            "32x32 codes)"
        )
    v, z = sd["quantize.embedding.weight"].shape
    return {
        "model": {
            "architecture": "var",
            **stages(sd),
            "z_channels": int(z),
            "patch_nums": list(PATCH_NUMS[image_size]),
            "phi_convs": count(set(sd), r"quantize\.quant_resi\.qresi_ls\.(\d+)\."),
        },
        "quantizer": {"kind": "vq", "codebook_size": int(v), "ema_decay": None,
                      "kmeans_init": False, "distance": "addmm"},  # fmt: skip
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "var",
        "pixel_arithmetic": "float32",  # ToTensor, then x + x - 1
        "to_uint8": "chameleon",  # clamp, (x + 1) * 0.5, * 255, truncated (VAR's demo)
    }


def var_mapping(cfg: dict) -> dict[str, str]:
    """VAR's names -> vqtool's: the taming layout of the encoder/decoder (each attention's
    q, k, v one `qkv` conv), the 3x3 quant convs, the codebook and the phi convs."""
    m = cfg["model"]
    last = len(m["channel_mult"]) - 1
    taming = {"model": {**m, "attention_levels": [last],
                        "decoder_res_blocks": m["num_res_blocks"] + 1},
              "quantizer": {"kind": "vq"}}  # fmt: skip
    pairs = {}
    for theirs, ours in vqgan_mapping(taming, "taming").items():
        if theirs.startswith(("quant_conv.", "post_quant_conv.", "quantize.")):
            continue
        if ".attn" in theirs and theirs.rsplit(".", 2)[-2] in ("q", "k", "v"):
            theirs, ours = (x.rsplit(".", 2)[0] + f".qkv.{x.rsplit('.', 1)[1]}"
                            for x in (theirs, ours))  # fmt: skip
        pairs[theirs] = ours
    for name in ("quant_conv", "post_quant_conv"):
        pairs.update(conv_io(name, f"net.{name}"))
    pairs["quantize.embedding.weight"] = "net.quantizer.embed"
    for i in range(m.get("phi_convs", 4)):
        pairs.update(conv_io(f"quantize.quant_resi.qresi_ls.{i}", f"net.phi.{i}"))
    return pairs
