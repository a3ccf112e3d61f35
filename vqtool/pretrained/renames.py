"""transformers' layouts of the public tokenizers, renamed back to the original
checkpoints' own names, so every family maps one layout: Janus (`JanusVQVAE`: taming's
names with LlamaGen's stage order) and Emu3 (`Emu3VQVAE`: other block names, Linear
attention projections that the loader reshapes to the original's 1x1 convolutions)."""

from __future__ import annotations

import re

import torch


def taming_names(k: set[str]) -> bool:
    return "encoder.mid.block_1.conv1.weight" in k and "encoder.down.0.block.0.conv1.bias" in k


def janus_hf_detect(k: set[str]) -> bool:
    """transformers' JanusVQVAE: taming's names, but the decoder's stages in LlamaGen's
    order (`up.0` is the lowest resolution and upsamples)."""
    return taming_names(k) and "decoder.up.0.upsample.conv.weight" in k


_JANUS_HF_RENAMES = (
    (r"^(encoder)\.down\.(\d+)\.block\.", r"\1.conv_blocks.\2.res."),
    (r"^(decoder)\.up\.(\d+)\.block\.", r"\1.conv_blocks.\2.res."),
    (r"^(encoder)\.down\.(\d+)\.(attn|downsample)\.", r"\1.conv_blocks.\2.\3."),
    (r"^(decoder)\.up\.(\d+)\.(attn|upsample)\.", r"\1.conv_blocks.\2.\3."),
    (r"^(\w+coder)\.mid\.block_1\.", r"\1.mid.0."),
    (r"^(\w+coder)\.mid\.attn_1\.", r"\1.mid.1."),
    (r"^(\w+coder)\.mid\.block_2\.", r"\1.mid.2."),
)


def _renamed(sd: dict[str, torch.Tensor], renames) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in sd.items():
        for pattern, repl in renames:
            name = re.sub(pattern, repl, name)
        out[name] = t
    return out


def janus_original_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' JanusVQVAE names -> the Janus checkpoint's own (LlamaGen's); a state
    dict already in the original names is returned as is."""
    return _renamed(sd, _JANUS_HF_RENAMES) if janus_hf_detect(set(sd)) else sd


_EMU3_HF_RENAMES = (
    (r"^encoder\.down_block\.down\.", "encoder.down."),
    (r"^decoder\.up_block\.up\.", "decoder.up."),
    (r"\.middle_block\.", ".mid."),
    (r"\.mid\.attn_norm\.", ".mid.attn_1.norm."),
    (r"\.attn_norms\.(\d+)\.", r".attn.\1.norm."),
    (r"\.q_proj\.", ".q."),
    (r"\.k_proj\.", ".k."),
    (r"\.v_proj\.", ".v."),
    (r"\.out_proj\.", ".proj_out."),
)


def emu3_original_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Emu3VQVAE names -> the Emu3 VisionTokenizer's own (its attention
    projections are Linear layers there, 1x1 convolutions in the original: the loader
    reshapes them)."""
    transformers_layout = any(k.startswith("encoder.down_block.") for k in sd)
    return _renamed(sd, _EMU3_HF_RENAMES) if transformers_layout else sd
