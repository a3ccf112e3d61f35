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
- emu3.5: Emu3.5's VisionTokenizer (IBQ, 131,072 codes, f16, 720^2 pixels of area): taming's
  encoder and decoder, codes chosen by the largest softmax of dot products -> the `conv`
  model with the `vq` quantizer's "ibq" choice.
- show-o: Show-o's and MMaDA's MAGVIT-v2 (showlab/magvitv2: 8,192 LFQ codes, f16, channel 0
  the code's most significant bit) -> the `conv` model with per-stage blocks + LFQ.
- movqgan: SBER-MoVQGAN 67M / 102M / 270M (16,384 codes of 4, f8; Lumina-mGPT 2.0,
  Kandinsky): taming's encoder, a decoder of spatial norms -> the `movq` model.
- cosmos: NVIDIA's Cosmos discrete tokenizers (DI8x8 / DI16x16 images, DV4x8x8 / DV8x8x8 /
  DV8x16x16 videos applied to one-frame videos; FSQ 8,8,8,5,5,5 = 64,000 codes), from the
  released TorchScript files -> the `cosmos` model (bfloat16, as the original runs).
- var: VAR's multi-scale residual VQ-VAE (4,096 codes shared by a pyramid of scales,
  1x1 to 16x16 at 256 px) -> the `var` model, its token row the scales coarse first.
- infinity: Infinity's bitwise multi-scale VAE (d = 16, 24 or 32 bits per position, BSQ;
  scales from its aspect-ratio templates) -> the `infinity` model, each position's bits
  packed into one token, most significant first.
- janus: Janus / Janus-Pro's generation VQ (LlamaGen's VQ-16 code: 16384 L2-normalized
  8-dim codes, 384 px), from the Janus checkpoint (`gen_vision_model.*`) or from
  transformers' `JanusVQVAE` layout (renamed to the original's names on reading)
  -> the `conv` model.

Sizes (channels, levels, blocks, codebook) are read from the tensor shapes,
so variants of a family load without a table of names. The layouts themselves are in
`pretrained.vqgan` (LlamaGen, taming, Chameleon, Janus) and `pretrained.staged`
(Open-MAGVIT2, MaskGIT, Emu3); this module holds the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vqtool.pretrained.cosmos import cosmos_config, cosmos_detect, cosmos_mapping
from vqtool.pretrained.infinity import infinity_config, infinity_detect, infinity_mapping
from vqtool.pretrained.movq import movq_config, movq_detect, movq_mapping
from vqtool.pretrained.renames import janus_hf_detect, janus_original_names
from vqtool.pretrained.showo import showo_config, showo_detect, showo_mapping
from vqtool.pretrained.staged import (
    emu3_config,
    emu3_mapping,
    maskgit_config,
    maskgit_mapping,
    omv2_config,
    omv2_mapping,
    omv2_native_size,
)
from vqtool.pretrained.var import var_config, var_detect, var_mapping
from vqtool.pretrained.vqgan import (
    chameleon_detect,
    emu35_config,
    emu35_detect,
    vqgan_config,
    vqgan_mapping,
)

#: detection order: janus (transformers layout), emu3, emu3.5, show-o, movqgan, cosmos,
#: infinity, var and chameleon before taming, whose key names they share
FAMILIES = (
    "llamagen",
    "janus",
    "emu3",
    "emu3.5",
    "show-o",
    "movqgan",
    "cosmos",
    "infinity",
    "var",
    "chameleon",
    "taming",
    "open-magvit2",
    "maskgit",
)
#: where a tokenizer's weights sit inside a file (a bare state_dict, Lightning, LlamaGen's
#: `model`/`ema`, Janus' `gen_vision_model`, transformers' `model.vqmodel`, Infinity's `vae`)
WEIGHT_ROOTS = (
    "", "state_dict.", "model.", "module.", "vae.", "ema.", "gen_vision_model.", "model.vqmodel.",
    "vqmodel.",
)  # fmt: skip
#: the first names of a tokenizer's own weights in every family's layout (a file holding a
#: whole multimodal LM is read for these only)
TOKENIZER_PARTS = (
    "encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.", "model_ema.",
    "quantizer.", "inv_quant.",
)  # fmt: skip


@dataclass
class Family:
    name: str
    description: str
    detect: Callable[[dict[str, torch.Tensor]], bool]  # from the names (a few: shapes)
    config: Callable[[dict[str, torch.Tensor], int], dict]  # (state_dict, image_size) -> config
    # config -> {foreign name: vqtool name} for every name the layout can hold (optional
    # entries such as channel-changing shortcuts included; the loader keeps those present)
    mapping: Callable[[dict], dict[str, str]]
    ignored: tuple[str, ...]  # prefixes/keys the original holds but inference does not use
    preprocessing: str  # in words, for the metadata and README
    default_size: int | Callable[[dict], int]  # native image size, or a function of the weights
    named: bool = False  # `config` also takes the file's path (sizes the weights do not hold)


REGISTRY = {
    "llamagen": Family(
        "llamagen",
        "LlamaGen VQ-16 / VQ-8 (16384 L2-normalized 8-dim codes)",
        lambda k: "encoder.conv_blocks.0.res.0.conv1.weight" in k and "quant_conv.weight" in k,
        lambda sd, s: vqgan_config(sd, s, "llamagen"),
        lambda cfg: vqgan_mapping(cfg, "llamagen"),
        ("quantize.codebook_used",),
        "convert('RGB') (transparency dropped), ADM centre crop: BOX halving while the short side "
        ">= 2x size, BICUBIC resize of the "
        "short side, integer centre crop; (x/255 - 0.5)/0.5 in float32",
        256,
    ),
    "janus": Family(
        "janus",
        "Janus / Janus-Pro generation VQ (LlamaGen VQ-16 code; 16384 L2-normalized 8-dim codes)",
        janus_hf_detect,
        lambda sd, s: vqgan_config(janus_original_names(sd), s, "llamagen", "janus"),
        lambda cfg: vqgan_mapping(cfg, "llamagen"),
        ("quantize.codebook_used",),
        "Janus' VLMImageProcessor: BICUBIC resize of the long side to size (sides int()-"
        "truncated, >= 14 px), pasted centred on a (127, 127, 127) square; x*(1/255) in "
        "float64 cast to float32, then (v - 0.5)/0.5",
        384,
    ),
    "chameleon": Family(
        "chameleon",
        "Chameleon VQGAN (8192 codes, f16; Chameleon, Anole, Lumina-mGPT, Liquid)",
        chameleon_detect,
        lambda sd, s: vqgan_config(sd, s, "taming", "chameleon"),
        lambda cfg: vqgan_mapping(cfg, "taming"),
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
        emu3_config,
        emu3_mapping,
        (),
        "Emu3's prepare_data.py + image processor: convert('RGB'), BICUBIC resize to 720x720 "
        "pixels of area, smart_resize (sides multiples of 8, area in [512^2, 1024^2]) with "
        "BICUBIC; x*(1/255) in float64 cast to float32, then (v - 0.5)/0.5",
        512,
    ),
    "emu3.5": Family(
        "emu3.5",
        "Emu3.5 VisionTokenizer (IBQ: 131,072 codes, f16; Emu3.5)",
        emu35_detect,
        emu35_config,
        lambda cfg: vqgan_mapping(cfg, "taming"),
        ("loss.",),
        "Emu3.5's build_image: convert('RGB'), smart_resize to 720x720 pixels of area (height "
        "int(sqrt(area / aspect)), width int(height * aspect), each rounded half up to a "
        "multiple of 16), BICUBIC; x/127.5 - 1 in float64 cast to float32",
        720,
    ),
    "show-o": Family(
        "show-o",
        "Show-o / MMaDA MAGVIT-v2 (showlab/magvitv2: 8,192 LFQ codes, f16)",
        showo_detect,
        showo_config,
        showo_mapping,
        ("quantize.",),
        "Show-o's training/data.py: webdataset's PIL decode (convert('RGB')), torchvision "
        "Resize(size, BICUBIC) of the short side (long side truncated) + CenterCrop "
        "(offsets rounded); ToTensor + Normalize(0.5, 0.5) in float32",
        256,
    ),
    "movqgan": Family(
        "movqgan",
        "SBER-MoVQGAN 67M / 102M / 270M (16,384 codes, f8; Lumina-mGPT 2.0)",
        movq_detect,
        movq_config,
        movq_mapping,
        ("loss.", "ema_"),
        "Lumina-mGPT 2.0's FlexARItemProcessor: Image.open (no conversion), var_center_crop "
        "to the crop of its list (768^2 pixels in 32-px patches) keeping most of the image "
        "(BOX halving, BICUBIC resize in the image's own mode, floored centre crop), then "
        "Chameleon's white blend; (x/255)*2 - 1 in float64",
        768,
    ),
    "cosmos": Family(
        "cosmos",
        "NVIDIA Cosmos discrete tokenizer (DI8x8, DI16x16; DV4x8x8, DV8x8x8, DV8x16x16 on "
        "one-frame videos; FSQ 64,000 codes; SimpleAR, Cosmos AR)",
        cosmos_detect,
        cosmos_config,
        cosmos_mapping,
        ("quantizer.", "inv_quant.", "encoder.patcher", "decoder.unpatcher"),
        "SimpleAR's extract_token.py (T2IDataset 'centercrop'): convert('RGB'), ADM centre crop "
        "(BOX halving, BICUBIC short side, floored offsets); ToTensor + Normalize(0.5, 0.5) in "
        "float32, then the network in bfloat16",
        1024,
        named=True,
    ),
    "taming": Family(
        "taming",
        "taming-transformers VQGAN (f16-1024, f16-16384) or Gumbel f8-8192",
        lambda k: (
            "encoder.mid.block_1.conv1.weight" in k and "encoder.down.0.block.0.conv1.bias" in k
        ),
        lambda sd, s: vqgan_config(sd, s, "taming"),
        lambda cfg: vqgan_mapping(cfg, "taming"),
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
        omv2_config,
        omv2_mapping,
        ("loss.",),
        "torchvision Resize(size) (bilinear, antialiased) + CenterCrop; x/127.5 - 1 in float64",
        omv2_native_size,
    ),
    "var": Family(
        "var",
        "VAR's multi-scale VQ-VAE (vae_ch160v4096z32.pth: 4,096 codes, a pyramid of 10 scales "
        "from 1x1 to 16x16 = 680 tokens at 256 px; 32x32 at 512 px)",
        var_detect,
        var_config,
        var_mapping,
        ("quantize.ema_vocab_hit_SV",),
        "VAR's utils/data.py evaluation transform: pil_loader's convert('RGB'), torchvision "
        "Resize(round(1.125 * size), LANCZOS) of the short side (long side truncated), "
        "CenterCrop(size) (offsets rounded); ToTensor, then x + x - 1 in float32",
        256,
    ),
    "infinity": Family(
        "infinity",
        "Infinity's bitwise multi-scale VAE (infinity_vae_d16/d24/d32.pth: 16, 24 or 32 bits "
        "per position, a pyramid of 7-13 scales from its aspect-ratio templates, f16)",
        infinity_detect,
        infinity_config,
        infinity_mapping,
        ("quantizer.lfq.mask", "quantize.lfq.mask"),  # its 2^(d-1..0) bit weights
        "Infinity's training data path (dataset_t2i_iterable.py): PImage.open(f).convert('RGB'), "
        "the template nearest the image's height/width at the pixel class (--resize "
        "templates:1M), LANCZOS resize to cover it (other side truncated), centre crop "
        "(offsets floored); to_tensor, then x + x - 1 in float32",
        1024,
    ),
    "maskgit": Family(
        "maskgit",
        "MaskGIT VQGAN PyTorch port (1024 codes, f16, [0,1] pixels)",
        lambda k: "decoder.up.1.upsample_conv.weight" in k and "encoder.mid.0.conv1.weight" in k,
        maskgit_config,
        maskgit_mapping,
        (),
        "Resize(size, BILINEAR) + CenterCrop, pixels in [0, 1] (ToTensor)",
        256,
    ),
}
