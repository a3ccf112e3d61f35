"""MoVQGAN (Zheng et al. 2022; SBER-MoVQGAN 67M / 102M / 270M, the tokenizer of
Lumina-mGPT 2.0 and Kandinsky), built as its public checkpoints need it.

- the encoder is taming's VQGAN encoder with its 1x1 quant conv (vqtool's `conv`
  encoder with taming's switches);
- the codebook (16,384 x 4) is searched with taming's `|z|^2 + |e|^2 - 2 z.e`;
- the decoder is taming's, except that every GroupNorm is a *spatial* norm whose scale
  and shift are 1x1 convolutions of the code vectors (nearest-resized to the feature
  map): the codes reach every stage, not only the first conv.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import nn

from vqtool.models.conv import ConvConfig, ConvEncoder
from vqtool.models.emu3 import AttnBlock, ResBlock, SpatialNorm, _act, _Level


@dataclass
class MoVQConfig:
    architecture: Literal["movq"] = "movq"
    channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [3])  # 32 px of 256: f8's last
    z_channels: int = 4
    embed_dim: int = 4

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.embed_dim

    def encoder_config(self) -> ConvConfig:
        return ConvConfig(
            channels=self.channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention=True,
            z_channels=self.z_channels,
            attention_levels=self.attention_levels,
            embed_dim=self.embed_dim,
            swish="x_sigmoid",
            attention_impl="manual",
        )


class MoVQEncoder(ConvEncoder):
    def __init__(self, c: MoVQConfig):
        super().__init__(c.encoder_config())


class MoVQDecoder(nn.Module):
    """Names as the original's `decoder.*` (post_quant_conv added), so weights map 1:1."""

    def __init__(self, c: MoVQConfig, out_channels: int = 3):
        super().__init__()
        e, z = c.embed_dim, c.z_channels
        self.post_quant_conv = nn.Conv2d(e, z, 1)
        prev = c.channels * c.channel_mult[-1]
        self.conv_in = nn.Conv2d(z, prev, 3, padding=1)
        self.mid = _Level()
        self.mid.block_1 = ResBlock(prev, prev, e)
        self.mid.attn_1 = AttnBlock(prev, e, taming_scale=True)
        self.mid.block_2 = ResBlock(prev, prev, e)
        levels: list[nn.Module] = [None] * len(c.channel_mult)  # indexed by level
        for i in reversed(range(len(c.channel_mult))):
            level = _Level()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                level.block.append(ResBlock(prev, c.channels * c.channel_mult[i], e))
                prev = c.channels * c.channel_mult[i]
                if i in c.attention_levels:
                    level.attn.append(AttnBlock(prev, e, taming_scale=True))
            if i > 0:
                level.upsample = _Level()
                level.upsample.conv = nn.Conv2d(prev, prev, 3, padding=1)
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm(prev, e)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, quant):  # (B, embed, h, w) code vectors -> (B, 3, h*f, w*f)
        zq = quant
        h = self.conv_in(self.post_quant_conv(quant))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, zq), zq), zq)
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h, zq)
                if len(level.attn):
                    h = level.attn[j](h, zq)
            if hasattr(level, "upsample"):
                h = level.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(_act(self.norm_out(h, zq)))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
