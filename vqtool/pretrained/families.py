"""The public tokenizer families vqtool loads, each as: how to recognise its
state_dict, the vqtool config that rebuilds its architecture, and the key
mapping from its names to vqtool's.

- llamagen: LlamaGen VQ-16 / VQ-8 (VQGAN-style conv with attention at the
  lowest level, 1x1 quant convs to 8-dim L2-normalized codes, 16384 entries)
  -> vqtool's `conv` model with taming/LlamaGen switches.
- taming: taming-transformers VQGAN f16-1024 / f16-16384 and Gumbel f8-8192
  -> the same `conv` model (Gumbel: deterministic argmax codes).
- open-magvit2: Open-MAGVIT2 LFQ 2^18 (256_L f16, 128_L f8), EMA or raw
  weights -> the `magvit2` model + LFQ.
- maskgit: the MaskGIT VQGAN PyTorch port (1024 codes, f16, [0, 1] pixels)
  -> the `maskgit_vqgan` model.
- chameleon: Chameleon's VQGAN (8192 codes, f16, 512 px; the tokenizer of Chameleon,
  Anole, Lumina-mGPT and Liquid): a taming VQGAN with attention only in the middle
  blocks -> the `conv` model.
- janus: Janus / Janus-Pro's generation VQ (LlamaGen's VQ-16 code: 16384 L2-normalized
  8-dim codes, 384 px), from the Janus checkpoint (`gen_vision_model.*`) or from
  transformers' `JanusVQVAE` layout (renamed to the original's names on reading)
  -> the `conv` model.

Sizes (channels, levels, blocks, codebook) are read from the tensor shapes,
so variants of a family load without a table of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vqtool.pretrained.renames import janus_hf_detect, janus_original_names, taming_names

#: detection order: janus (transformers layout), emu3 and chameleon before taming, whose key
#: names they share
FAMILIES = ("llamagen", "janus", "emu3", "chameleon", "taming", "open-magvit2", "maskgit")
#: where a tokenizer's weights sit inside a file (a bare state_dict, Lightning, LlamaGen's
#: `model`/`ema`, Janus' `gen_vision_model`, transformers' `model.vqmodel`)
WEIGHT_ROOTS = (
    "", "state_dict.", "model.", "module.", "ema.", "gen_vision_model.", "model.vqmodel.",
    "vqmodel.",
)  # fmt: skip
#: the first names of a tokenizer's own weights in every family's layout (a file holding a
#: whole multimodal LM is read for these only)
TOKENIZER_PARTS = (
    "encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.", "model_ema.",
)  # fmt: skip


@dataclass
class Family:
    name: str
    description: str
    detect: Callable[[set[str]], bool]
    config: Callable[[dict[str, torch.Tensor], int], dict]  # (state_dict, image_size) -> config
    # config -> {foreign name: vqtool name} for every name the layout can hold (optional
    # entries such as channel-changing shortcuts included; the loader keeps those present)
    mapping: Callable[[dict], dict[str, str]]
    ignored: tuple[str, ...]  # prefixes/keys the original holds but inference does not use
    preprocessing: str  # in words, for the metadata and README
    default_size: int | Callable[[dict], int]  # native image size, or a function of the weights


# ----------------------------------------------------------------------------- helpers


def _count(keys: set[str], pattern: str) -> int:
    """1 + the largest index the pattern's group captures in any key (0 if none)."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _stages(sd: dict, stages: str = "encoder.down", res: str = "block") -> dict:
    """channels, channel_mult and num_res_blocks read from the encoder's weights."""
    keys = set(sd)
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = _count(keys, rf"{re.escape(stages)}\.(\d+)\.")
    width = [sd[f"{stages}.{i}.{res}.0.conv1.weight"].shape[0] for i in range(levels)]
    return {
        "channels": ch,
        "channel_mult": [w // ch for w in width],
        "num_res_blocks": _count(keys, rf"{re.escape(stages)}\.0\.{res}\.(\d+)\."),
    }


def _res_renames(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    """A residual block's parameters (taming/LlamaGen naming -> vqtool naming)."""
    out = []
    for name in ("norm1", "conv1", "norm2", "conv2"):
        for p in ("weight", "bias"):
            out.append((f"{prefix_from}.{name}.{p}", f"{prefix_to}.{name}.{p}"))
    for p in ("weight", "bias"):
        out.append((f"{prefix_from}.nin_shortcut.{p}", f"{prefix_to}.skip.{p}"))
    return out


def _attn_renames(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    out = []
    for a, b in (("norm", "norm"), ("q", "q"), ("k", "k"), ("v", "v"), ("proj_out", "proj")):
        for p in ("weight", "bias"):
            out.append((f"{prefix_from}.{a}.{p}", f"{prefix_to}.{b}.{p}"))
    return out


def _conv_io(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    return [(f"{prefix_from}.{p}", f"{prefix_to}.{p}") for p in ("weight", "bias")]


# ----------------------------------------------------------------------------- VQGAN-style


def _vqgan_config(sd: dict, image_size: int, style: str, preprocess: str | None = None) -> dict:
    keys = set(sd)
    if style == "llamagen":
        shape = _stages(sd, "encoder.conv_blocks", "res")
        dec_blocks = _count(keys, r"decoder\.conv_blocks\.0\.res\.(\d+)\.")
        attn_key = "encoder.conv_blocks.{}.attn.0.q.weight"
    else:
        shape = _stages(sd)
        dec_blocks = _count(keys, r"decoder\.up\.0\.block\.(\d+)\.")
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
    resize, arithmetic = {
        "llamagen": ("adm", "normalize_half"),
        "taming": ("taming", "float64"),
        "chameleon": ("chameleon", "float64_unit"),
        "janus": ("janus", "rescale_normalize"),
    }[preprocess or style]
    return {
        "model": model,
        "quantizer": quantizer,
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": resize,
        "pixel_arithmetic": arithmetic,
        # taming's Gumbel decodes an einsum's channels-last result; the VQ paths call
        # .contiguous()
        "decode_layout": "channels_last" if quantizer["kind"] == "gumbel" else "contiguous",
        "encoder_only": encoder_only,
    }


def _vqgan_mapping(cfg: dict, style: str) -> dict[str, str]:
    m = cfg["model"]
    levels, attn = len(m["channel_mult"]), set(m["attention_levels"])
    pairs: list[tuple[str, str]] = []
    for side in ("encoder", "decoder"):
        pairs += _conv_io(f"{side}.conv_in", f"net.{side}.conv_in")
        pairs += _conv_io(f"{side}.norm_out", f"net.{side}.norm_out")
        pairs += _conv_io(f"{side}.conv_out", f"net.{side}.conv_out")
    pairs += _conv_io("quant_conv", "net.encoder.quant_conv")
    pairs += _conv_io("post_quant_conv", "net.decoder.post_quant_conv")

    def mid(side: str, n: int) -> tuple[list[tuple[str, str]], int]:
        names = (
            [f"{side}.mid.0", f"{side}.mid.1", f"{side}.mid.2"]
            if style == "llamagen"
            else [f"{side}.mid.block_1", f"{side}.mid.attn_1", f"{side}.mid.block_2"]
        )
        out = _res_renames(names[0], f"net.{side}.blocks.{n}")
        out += _attn_renames(names[1], f"net.{side}.blocks.{n + 1}")
        out += _res_renames(names[2], f"net.{side}.blocks.{n + 2}")
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
            pairs += _res_renames(f"{level(side, i)}.{res_name}.{j}", f"net.{side}.blocks.{n}")
            n += 1
            if i in attn:
                pairs += _attn_renames(f"{level(side, i)}.attn.{j}", f"net.{side}.blocks.{n}")
                n += 1
        if resample:
            pairs += _conv_io(f"{level(side, i)}.{resample}.conv", f"net.{side}.blocks.{n}.conv")
            n += 1
        return n

    n = 0  # encoder: stages, then mid
    for i in range(levels):
        n = stage("encoder", i, m["num_res_blocks"], n, "downsample" if i < levels - 1 else None)
    more, _ = mid("encoder", n)
    pairs += more
    more, n = mid("decoder", 0)  # decoder: mid, then stages from the lowest resolution
    pairs += more
    for i in reversed(range(levels)):
        n = stage("decoder", i, m["decoder_res_blocks"], n, "upsample" if i > 0 else None)
    if cfg["quantizer"]["kind"] == "gumbel":
        pairs += _conv_io("quantize.proj", "net.quantizer.proj")
        pairs.append(("quantize.embed.weight", "net.quantizer.embed"))
    else:
        pairs.append(("quantize.embedding.weight", "net.quantizer.embed"))
    return dict(pairs)


# ----------------------------------------------------------------------------- Open-MAGVIT2


def _omv2_config(sd: dict, image_size: int) -> dict:
    bits = sd["encoder.conv_out.weight"].shape[0]
    return {
        "model": {
            "architecture": "magvit2",
            **_stages(sd),
            "z_channels": bits,
        },
        "quantizer": {"kind": "lfq", "codebook_size": 2**bits, "entropy_weight": 0.0},
        "image_size": image_size,
        "pixel_range": "-1,1",
        "resize": "bilinear",
        "pixel_arithmetic": "float64",
        "decode_layout": "channels_last",  # get_codebook_entry's rearrange is a permute
    }


def _omv2_native_size(sd: dict) -> int:
    """Both released models give 16x16 tokens at their training size (256_L is f16 at
    256 px, 128_L is f8 at 128 px)."""
    return 16 * 2 ** (len(_stages(sd)["channel_mult"]) - 1)


def _plain_res(prefix_from: str, prefix_to: str) -> list[tuple[str, str]]:
    out = []
    for name in ("norm1", "norm2"):
        out += [
            (f"{prefix_from}.{name}.{p}", f"{prefix_to}.{name}.{p}") for p in ("weight", "bias")
        ]
    for name in ("conv1", "conv2"):
        out += [
            (f"{prefix_from}.{name}.{p}", f"{prefix_to}.{name}.{p}") for p in ("weight", "bias")
        ]
    out += [
        (f"{prefix_from}.nin_shortcut.{p}", f"{prefix_to}.skip.{p}") for p in ("weight", "bias")
    ]
    return out


def _staged_mapping(cfg: dict, mid: str) -> list[tuple[str, str]]:
    """Names shared by the Open-MAGVIT2 and MaskGIT layouts: in/out convs and
    norms, `{side}.{mid}.{j}` middle blocks, `encoder.down.{i}.block.{j}` and
    `decoder.up.{i}.block.{j}` residual blocks -> vqtool's stages."""
    m = cfg["model"]
    levels, blocks = len(m["channel_mult"]), m["num_res_blocks"]
    pairs: list[tuple[str, str]] = []
    for side in ("encoder", "decoder"):
        for name in ("conv_in", "norm_out", "conv_out"):
            pairs += _conv_io(f"{side}.{name}", f"net.{side}.{name}")
        for j in range(blocks):
            pairs += _plain_res(f"{side}.{mid}.{j}", f"net.{side}.mid.{j}")
    for i in range(levels):
        for j in range(blocks):
            pairs += _plain_res(f"encoder.down.{i}.block.{j}", f"net.encoder.stages.{i}.res.{j}")
            pairs += _plain_res(f"decoder.up.{i}.block.{j}", f"net.decoder.stages.{i}.res.{j}")
    return pairs


def _omv2_mapping(cfg: dict) -> dict[str, str]:
    pairs = _staged_mapping(cfg, "mid_block")
    for i in range(len(cfg["model"]["channel_mult"])):
        pairs += _conv_io(f"encoder.down.{i}.downsample", f"net.encoder.stages.{i}.down")
        pairs += _conv_io(f"decoder.up.{i}.upsample.conv1", f"net.decoder.stages.{i}.up.conv")
        for g in ("gamma", "beta"):
            pairs += _conv_io(f"decoder.adaptive.{i}.{g}", f"net.decoder.stages.{i}.norm.{g}")
    return dict(pairs)


def omv2_ema_name(name: str) -> str:
    """Open-MAGVIT2's EMA copy names a parameter `model_ema.` + its name without dots."""
    return "model_ema." + name.replace(".", "")


# ----------------------------------------------------------------------------- MaskGIT


def _maskgit_config(sd: dict, image_size: int) -> dict:
    return {
        "model": {
            "architecture": "maskgit_vqgan",
            **_stages(sd),
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
    }


def _maskgit_mapping(cfg: dict) -> dict[str, str]:
    pairs = _staged_mapping(cfg, "mid")
    for i in range(len(cfg["model"]["channel_mult"])):
        pairs += _conv_io(f"decoder.up.{i}.upsample_conv", f"net.decoder.stages.{i}.up_conv")
    pairs.append(("quantize.embedding.weight", "net.quantizer.embed"))
    return dict(pairs)


# ----------------------------------------------------------------------------- Chameleon, Janus


def _chameleon_detect(k: set[str]) -> bool:
    """taming's names, no attention in any encoder stage (Chameleon's `attn_resolutions`
    is empty; every taming release has attention at its lowest stage)."""
    return taming_names(k) and not janus_hf_detect(k) and not any(".attn." in n for n in k)


# ----------------------------------------------------------------------------- Emu3

#: Emu3's own preprocessing as its released data preparation runs it
#: (emu3/train/prepare_data.py: resize to 720x720 pixels of area, then the image
#: processor's smart_resize: sides multiples of 8, area clamped to [512^2, 1024^2])
EMU3_POLICY = "smart:262144:1048576:518400"


def _emu3_config(sd: dict, image_size: int) -> dict:
    keys = set(sd)
    levels = _count(keys, r"encoder\.down\.(\d+)\.")
    ch = sd["encoder.conv_in.weight"].shape[0]
    width = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)]
    embed = sd["quantize.embedding.weight"]
    return {
        "model": {
            "architecture": "emu3",
            "channels": ch,
            "channel_mult": [w // ch for w in width],
            "num_res_blocks": _count(keys, r"encoder\.down\.0\.block\.(\d+)\."),
            "attention_levels": [
                i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in keys
            ],
            "z_channels": sd["encoder.conv_out.weight"].shape[0],
            "embed_dim": embed.shape[1],
            "temporal_factor": 2 ** _count(keys, r"encoder\.time_conv\.(\d+)\."),
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
        "policy": EMU3_POLICY,
    }


def _emu3_mapping(cfg: dict) -> dict[str, str]:
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


# ----------------------------------------------------------------------------- registry

REGISTRY = {
    "llamagen": Family(
        "llamagen",
        "LlamaGen VQ-16 / VQ-8 (16384 L2-normalized 8-dim codes)",
        lambda k: "encoder.conv_blocks.0.res.0.conv1.weight" in k and "quant_conv.weight" in k,
        lambda sd, s: _vqgan_config(sd, s, "llamagen"),
        lambda cfg: _vqgan_mapping(cfg, "llamagen"),
        ("quantize.codebook_used",),
        "ADM centre crop: BOX halving while the short side >= 2x size, BICUBIC resize of the "
        "short side, integer centre crop; (x/255 - 0.5)/0.5 in float32",
        256,
    ),
    "janus": Family(
        "janus",
        "Janus / Janus-Pro generation VQ (LlamaGen VQ-16 code; 16384 L2-normalized 8-dim codes)",
        janus_hf_detect,
        lambda sd, s: _vqgan_config(janus_original_names(sd), s, "llamagen", "janus"),
        lambda cfg: _vqgan_mapping(cfg, "llamagen"),
        ("quantize.codebook_used",),
        "Janus' VLMImageProcessor: BICUBIC resize of the long side to size (sides int()-"
        "truncated, >= 14 px), pasted centred on a (127, 127, 127) square; x*(1/255) in "
        "float64 cast to float32, then (v - 0.5)/0.5",
        384,
    ),
    "chameleon": Family(
        "chameleon",
        "Chameleon VQGAN (8192 codes, f16; Chameleon, Anole, Lumina-mGPT, Liquid)",
        _chameleon_detect,
        lambda sd, s: _vqgan_config(sd, s, "taming", "chameleon"),
        lambda cfg: _vqgan_mapping(cfg, "taming"),
        ("loss.",),
        "Chameleon's image tokenizer: transparency blended over white in float64 and "
        "truncated, LANCZOS resize of the short side (sides round()ed), centre crop with "
        "floored offsets; (x/255)*2 - 1 in float64",
        512,
    ),
    "emu3": Family(
        "emu3",
        "Emu3 VisionTokenizer (32,768 codes, f8, MoVQ decoder; Emu3)",
        lambda k: "encoder.time_conv.0.conv.conv.weight" in k and "quantize.embedding.weight" in k,
        _emu3_config,
        _emu3_mapping,
        (),
        "Emu3's prepare_data.py + image processor: convert('RGB'), BICUBIC resize to 720x720 "
        "pixels of area, smart_resize (sides multiples of 8, area in [512^2, 1024^2]) with "
        "BICUBIC; x*(1/255) in float64 cast to float32, then (v - 0.5)/0.5",
        512,
    ),
    "taming": Family(
        "taming",
        "taming-transformers VQGAN (f16-1024, f16-16384) or Gumbel f8-8192",
        lambda k: (
            "encoder.mid.block_1.conv1.weight" in k and "encoder.down.0.block.0.conv1.bias" in k
        ),
        lambda sd, s: _vqgan_config(sd, s, "taming"),
        lambda cfg: _vqgan_mapping(cfg, "taming"),
        ("loss.",),
        "albumentations SmallestMaxSize (OpenCV INTER_LINEAR, reproduced bit for bit; sizes "
        "rounded half to even) + CenterCrop (offsets floored); x/127.5 - 1 in float64",
        256,
    ),
    "open-magvit2": Family(
        "open-magvit2",
        "Open-MAGVIT2 LFQ (2^18 codes; 256_L f16, 128_L f8)",
        lambda k: (
            "decoder.adaptive.0.gamma.weight" in k or any(n.startswith("model_ema.") for n in k)
        ),
        _omv2_config,
        _omv2_mapping,
        ("loss.",),
        "torchvision Resize(size) (bilinear, antialiased) + CenterCrop; x/127.5 - 1 in float64",
        _omv2_native_size,
    ),
    "maskgit": Family(
        "maskgit",
        "MaskGIT VQGAN PyTorch port (1024 codes, f16, [0,1] pixels)",
        lambda k: "decoder.up.1.upsample_conv.weight" in k and "encoder.mid.0.conv1.weight" in k,
        _maskgit_config,
        _maskgit_mapping,
        (),
        "Resize(size, BILINEAR) + CenterCrop, pixels in [0, 1] (ToTensor)",
        256,
    ),
}
