"""MAGVIT-v2-style conv encoder/decoder (Yu et al. 2023), as Open-MAGVIT2
builds it, so its public LFQ checkpoints load and tokenize exactly.

What differs from the VQGAN-style `conv` model:
- residual blocks with bias-free 3x3 convs and a bias-free 1x1 skip, no attention;
- downsampling by a 3x3 stride-2 conv with symmetric padding;
- the decoder re-normalizes each stage with an *adaptive* GroupNorm whose
  scale and shift are linear functions of the per-channel std (unbiased
  variance) and mean of the quantized codes;
- upsampling by a 3x3 conv to 4C channels, then depth-to-space in
  depth-column-row order (not `F.pixel_shuffle`'s column-row-depth order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vqtool.models.layers import swish


@dataclass
class MAGVIT2Config:
    architecture: Literal["magvit2"] = "magvit2"
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 4
    z_channels: int = 18  # = LFQ bits

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.z_channels


class PlainResBlock(nn.Module):
    """GroupNorm-swish-conv twice, bias-free convs; the 1x1 skip maps the input."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(32, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x), "x_sigmoid"))
        h = self.conv2(swish(self.norm2(h), "x_sigmoid"))
        return h + (self.skip(x) if self.skip is not None else x)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then x * gamma(std(codes)) + beta(mean(codes)),
    with per-channel statistics of the quantized codes over H*W (unbiased var)."""

    def __init__(self, code_channels: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=eps, affine=False)
        self.gamma = nn.Linear(code_channels, channels)
        self.beta = nn.Linear(code_channels, channels)
        self.eps = eps

    def forward(self, x, codes):
        b, c = x.shape[:2]
        flat = codes.reshape(codes.shape[0], codes.shape[1], -1)
        scale = self.gamma((flat.var(dim=-1) + self.eps).sqrt()).view(b, c, 1, 1)
        shift = self.beta(flat.mean(dim=-1)).view(b, c, 1, 1)
        return scale * self.norm(x) + shift


def depth_to_space_dcr(x: torch.Tensor, block: int = 2) -> torch.Tensor:
    """(B, C*block^2, H, W) -> (B, C, H*block, W*block); channel index = (by*block + bx)*C + c."""
    b, c, h, w = x.shape
    out = c // (block * block)
    x = x.view(b, block, block, out, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, out, h * block, w * block)


class DepthToSpaceUpsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 3, padding=1)

    def forward(self, x):
        return depth_to_space_dcr(self.conv(x))


class _Stage(nn.Module):
    pass


class MAGVIT2Encoder(nn.Module):
    def __init__(self, c: MAGVIT2Config):
        super().__init__()
        self.conv_in = nn.Conv2d(3, c.channels, 3, padding=1, bias=False)
        self.stages = nn.ModuleList()
        prev = c.channels
        for i, m in enumerate(c.channel_mult):
            stage = _Stage()
            width = c.channels * m
            stage.res = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.res.append(PlainResBlock(prev, width))
                prev = width
            if i < len(c.channel_mult) - 1:
                stage.down = nn.Conv2d(prev, prev, 3, stride=2, padding=1)
            self.stages.append(stage)
        self.mid = nn.ModuleList(PlainResBlock(prev, prev) for _ in range(c.num_res_blocks))
        self.norm_out = nn.GroupNorm(32, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, c.z_channels, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.stages:
            for block in stage.res:
                h = block(h)
            if hasattr(stage, "down"):
                h = stage.down(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h), "x_sigmoid"))


class MAGVIT2Decoder(nn.Module):
    def __init__(self, c: MAGVIT2Config, out_channels: int = 3):
        super().__init__()
        prev = c.channels * c.channel_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, prev, 3, padding=1)
        self.mid = nn.ModuleList(PlainResBlock(prev, prev) for _ in range(c.num_res_blocks))
        stages: list[nn.Module] = [None] * len(c.channel_mult)  # indexed by level, 0 = full res
        for i in reversed(range(len(c.channel_mult))):
            stage = _Stage()
            stage.norm = AdaptiveGroupNorm(c.z_channels, prev)
            width = c.channels * c.channel_mult[i]
            stage.res = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.res.append(PlainResBlock(prev, width))
                prev = width
            if i > 0:
                stage.up = DepthToSpaceUpsample(prev)
            stages[i] = stage
        self.stages = nn.ModuleList(stages)
        self.norm_out = nn.GroupNorm(32, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, codes):
        h = self.conv_in(codes)
        for block in self.mid:
            h = block(h)
        for i in reversed(range(len(self.stages))):
            stage = self.stages[i]
            h = stage.norm(h, codes)
            for block in stage.res:
                h = block(h)
            if hasattr(stage, "up"):
                h = stage.up(h)
        return self.conv_out(swish(self.norm_out(h), "x_sigmoid"))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
