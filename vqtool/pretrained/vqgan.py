"""The VQGAN-style layouts (LlamaGen, taming, Chameleon, Janus): the vqtool config read
off a state_dict's shapes, and the names of its parameters in vqtool's `conv` model;
with the naming helpers the other layouts (`pretrained.staged`) use too."""

from __future__ import annotations

import re

from vqtool.pretrained.renames import janus_hf_detect, taming_names


def count(keys: set[str], pattern: str) -> int:
    """1 + the largest index the pattern's group captures in any key (0 if none)."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def stages(sd: dict, stages: str = "encoder.down", res: str = "block") -> dict:
    """channels, channel_mult and num_res_blocks read from the encoder's weights."""
    keys = set(sd)
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = count(keys, rf"{re.escape(stages)}\.(\d+)\.")
    width = [sd[f"{stages}.{i}.{res}.0.conv1.weight"].shape[0] for i in range(levels)]
    return {
        "channels": ch,
        "channel_mult": [w // ch for w in width],
        "num_res_blocks": count(keys, rf"{re.escape(stages)}\.0\.{res}\.(\d+)\."),
    }


def res_renames(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    """A residual block's parameters (taming/LlamaGen naming -> vqtool naming)."""
    out = []
    for name in ("norm1", "conv1", "norm2", "conv2"):
        for p in ("weight", "bias"):
            out.append((f"{prefix_from}.{name}.{p}", f"{prefix_to}.{name}.{p}"))
    for p in ("weight", "bias"):
        out.append((f"{prefix_from}.nin_shortcut.{p}", f"{prefix_to}.skip.{p}"))
    return out


def attn_renames(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    out = []
    for a, b in (("norm", "norm"), ("q", "q"), ("k", "k"), ("v", "v"), ("proj_out", "proj")):
        for p in ("weight", "bias"):
            out.append((f"{prefix_from}.{a}.{p}", f"{prefix_to}.{b}.{p}"))
    return out


def conv_io(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    return [(f"{prefix_from}.{p}", f"{prefix_to}.{p}") for p in ("weight", "bias")]


#: each VQGAN-style family's resize, pixel arithmetic and saving (TokenizerConfig fields)
PREPROCESS = {
    "llamagen": ("adm", "normalize_half", "llamagen"),
    "taming": ("taming", "float64", "taming"),
    "chameleon": ("chameleon", "float64_unit", "chameleon"),
    "janus": ("janus", "rescale_normalize", "janus"),
    "emu3.5": ("emu3", "float64", "taming"),
}


def vqgan_config(sd: dict, image_size: int, style: str, preprocess: str | None = None) -> dict:
    keys = set(sd)
    if style == "llamagen":
        shape = stages(sd, "encoder.conv_blocks", "res")
        dec_blocks = count(keys, r"decoder\.conv_blocks\.0\.res\.(\d+)\.")
        attn_key = "encoder.conv_blocks.{}.attn.0.q.weight"
    else:
        shape = stages(sd)
        dec_blocks = count(keys, r"decoder\.up\.0\.block\.(\d+)\.")
        attn_key = "encoder.down.{}.attn.0.q.weight"
    levels = len(shape["channel_mult"])
    attn = [i for i in range(levels) if attn_key.format(i) in keys]
    encoder_only = not any(k.startswith("decoder.") for k in keys)
    if encoder_only:  # transformers' ChameleonVQVAE: the decoder taming would build
        dec_blocks = shape["num_res_blocks"] + 1
    z = sd["encoder.conv_out.weight"].shape[0]
    embed = sd["quant_conv.weight"].shape[0]
    model = {
        "architecture": "conv",
        **shape,
        "decoder_res_blocks": dec_blocks,
        "attention": True,
        "attention_levels": attn,
        "z_channels": z,
        "embed_dim": embed,
        "swish": "x_sigmoid",
        "attention_impl": "manual",
    }
    if "quantize.proj.weight" in keys:  # taming Gumbel
        k = sd["quantize.proj.weight"].shape[0]
        quantizer = {"kind": "gumbel", "codebook_size": k}
    else:
        k = sd["quantize.embedding.weight"].shape[0]
        quantizer = {
            "kind": "vq",
            "codebook_size": k,
            "cosine": style == "llamagen",
            "ema_decay": None,
            "kmeans_init": False,
            "distance": "expanded",
        }
    resize, arithmetic, to_uint8 = PREPROCESS[preprocess or style]
    return {
        "model": model,
        "quantizer": quantizer,
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": resize,
        "pixel_arithmetic": arithmetic,
        "to_uint8": to_uint8,  # as the original saves its images
        # taming's Gumbel decodes an einsum's result (channels-last for a batch of two or
        # more, contiguous for one image); the VQ paths call .contiguous()
        "decode_layout": "einsum" if quantizer["kind"] == "gumbel" else "contiguous",
        "encoder_only": encoder_only,
    }


def vqgan_mapping(cfg: dict, style: str) -> dict[str, str]:
    m = cfg["model"]
    levels, attn = len(m["channel_mult"]), set(m["attention_levels"])
    pairs: list[tuple[str, str]] = []
    for side in ("encoder", "decoder"):
        pairs += conv_io(f"{side}.conv_in", f"net.{side}.conv_in")
        pairs += conv_io(f"{side}.norm_out", f"net.{side}.norm_out")
        pairs += conv_io(f"{side}.conv_out", f"net.{side}.conv_out")
    pairs += conv_io("quant_conv", "net.encoder.quant_conv")
    pairs += conv_io("post_quant_conv", "net.decoder.post_quant_conv")

    def mid(side: str, n: int) -> tuple[list[tuple[str, str]], int]:
        names = (
            [f"{side}.mid.0", f"{side}.mid.1", f"{side}.mid.2"]
            if style == "llamagen"
            else [f"{side}.mid.block_1", f"{side}.mid.attn_1", f"{side}.mid.block_2"]
        )
        out = res_renames(names[0], f"net.{side}.blocks.{n}")
        out += attn_renames(names[1], f"net.{side}.blocks.{n + 1}")
        out += res_renames(names[2], f"net.{side}.blocks.{n + 2}")
        return out, n + 3

    def level(side: str, i: int) -> str:
        if style == "llamagen":
            return f"{side}.conv_blocks.{i if side == 'encoder' else levels - 1 - i}"
        return f"{side}.{'down' if side == 'encoder' else 'up'}.{i}"

    res_name = "res" if style == "llamagen" else "block"

    def stage(side: str, i: int, blocks: int, n: int, resample: str | None) -> int:
        """One stage's residual blocks (each followed by attention at attention
        levels) and its resampling conv, as consecutive vqtool blocks from `n`."""
        nonlocal pairs
        for j in range(blocks):
            pairs += res_renames(f"{level(side, i)}.{res_name}.{j}", f"net.{side}.blocks.{n}")
            n += 1
            if i in attn:
                pairs += attn_renames(f"{level(side, i)}.attn.{j}", f"net.{side}.blocks.{n}")
                n += 1
        if resample:
            pairs += conv_io(f"{level(side, i)}.{resample}.conv", f"net.{side}.blocks.{n}.conv")
            n += 1
        return n

    enc = m.get("stage_res_blocks") or [m["num_res_blocks"]] * levels
    dec = m.get("decoder_stage_res_blocks") or [m["decoder_res_blocks"]] * levels
    n = 0  # encoder: stages, then mid
    for i in range(levels):
        n = stage("encoder", i, enc[i], n, "downsample" if i < levels - 1 else None)
    more, _ = mid("encoder", n)
    pairs += more
    more, n = mid("decoder", 0)  # decoder: mid, then stages from the lowest resolution
    pairs += more
    for i in reversed(range(levels)):
        n = stage("decoder", i, dec[i], n, "upsample" if i > 0 else None)
    return dict(pairs + _quantizer_pairs(cfg))


def _quantizer_pairs(cfg: dict) -> list[tuple[str, str]]:
    if cfg["quantizer"]["kind"] == "gumbel":
        proj = conv_io("quantize.proj", "net.quantizer.proj")
        return [*proj, ("quantize.embed.weight", "net.quantizer.embed")]
    return [("quantize.embedding.weight", "net.quantizer.embed")]


#: Emu3.5's own preprocessing (src/utils/input_utils.py build_image: smart_resize to
#: cfg.image_area = 518400 = 720^2 pixels, sides rounded to multiples of 16, BICUBIC)
EMU35_POLICY = "area:518400:16"


def emu35_detect(sd: dict) -> bool:
    """taming's names with a codebook above 65,536 entries: IBQ (Emu3.5's 131,072 codes);
    no taming release has more than 16,384."""
    emb = sd.get("quantize.embedding.weight")
    return taming_names(sd) and not janus_hf_detect(sd) and emb is not None and len(emb) > 65536


def emu35_config(sd: dict, image_size: int) -> dict:
    """taming's encoder and decoder (attention where the file has it) with IBQ's code
    choice: the largest softmax of the dot products with the codebook."""
    cfg = vqgan_config(sd, image_size, "taming", "emu3.5")
    cfg["quantizer"]["distance"] = "ibq"
    cfg["policy"] = EMU35_POLICY
    return cfg


def chameleon_detect(k: set[str]) -> bool:
    """taming's names, no attention in any encoder stage (Chameleon's `attn_resolutions`
    is empty; every taming release has attention at its lowest stage)."""
    return taming_names(k) and not janus_hf_detect(k) and not any(".attn." in n for n in k)
