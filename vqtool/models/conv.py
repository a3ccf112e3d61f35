"""VQGAN-style convolutional encoder and decoder (Esser et al. 2021).

Channel multipliers set the downsampling: `channel_mult = [1, 2, 2]` gives
f4 (two halvings), `[1, 1, 2, 2, 4]` f16. Optional attention runs at the
lowest resolution, in the middle block."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import nn

from vqtool.models.layers import AttnBlock, Downsample, ResBlock, Upsample, group_norm


@dataclass
class ConvConfig:
    architecture: Literal["conv"] = "conv"
    channels: int = 64  # width of the first stage
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # per stage; f = 2^(n-1)
    num_res_blocks: int = 1  # residual blocks per stage
    attention: bool = False  # self-attention at the lowest resolution
    z_channels: int = 64  # encoder output = quantizer input channels
    dropout: float = 0.0

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


class ConvEncoder(nn.Module):
    def __init__(self, c: ConvConfig, in_channels: int = 3):
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        self.conv_in = nn.Conv2d(in_channels, c.channels, 3, padding=1)
        blocks, prev = [], c.channels
        for i, width in enumerate(widths):
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(prev, width, c.dropout))
                prev = width
            if i < len(widths) - 1:
                blocks.append(Downsample(prev))
        blocks += [ResBlock(prev, prev, c.dropout)]
        blocks += [AttnBlock(prev)] if c.attention else []
        blocks += [ResBlock(prev, prev, c.dropout)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, c.z_channels, 3, padding=1)

    def forward(self, x):  # (B, 3, H, W) -> (B, z, H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(x)))))


class ConvDecoder(nn.Module):
    def __init__(self, c: ConvConfig, out_channels: int = 3, in_channels: int | None = None):
        super().__init__()
        widths = [c.channels * m for m in c.channel_mult]
        prev = widths[-1]
        self.conv_in = nn.Conv2d(in_channels or c.z_channels, prev, 3, padding=1)
        blocks = [ResBlock(prev, prev, c.dropout)]
        blocks += [AttnBlock(prev)] if c.attention else []
        blocks += [ResBlock(prev, prev, c.dropout)]
        for i in reversed(range(len(widths))):
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(prev, widths[i], c.dropout))
                prev = widths[i]
            if i > 0:
                blocks.append(Upsample(prev))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, z):  # (B, z, h, w) -> (B, out, h*f, w*f)
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z)))))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
