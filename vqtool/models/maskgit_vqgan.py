"""The MaskGIT VQGAN tokenizer (Chang et al. 2022) as Google's JAX model and
its PyTorch ports build it, so their public checkpoint tokenizes exactly.

What differs from the VQGAN-style `conv` model:
- TensorFlow "SAME" padding on every conv (asymmetric for even kernels/strides);
- bias-free convs inside residual blocks, no attention anywhere;
- the 1x1 skip of a widening residual block maps the block's *output*, not its
  input (out = h + skip(h)), as in the JAX ResBlock;
- downsampling by 2x2 average pooling, upsampling by nearest x2 then a conv;
- F.silu, GroupNorm(32, eps 1e-6); pixels in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import nn


@dataclass
class MaskGITVQGANConfig:
    architecture: Literal["maskgit_vqgan"] = "maskgit_vqgan"
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    z_channels: int = 256

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.z_channels


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (extra pixel on the bottom/right)."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            pads.append(max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0))
        ph, pw = pads
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


class OutputSkipResBlock(nn.Module):
    """norm-silu-conv twice (bias-free); when widening, out = h + skip(h)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, c_in, eps=1e-6)
        self.conv1 = SameConv2d(c_in, c_out, 3, bias=False)
        self.norm2 = nn.GroupNorm(32, c_out, eps=1e-6)
        self.conv2 = SameConv2d(c_out, c_out, 3, bias=False)
        self.skip = SameConv2d(c_out, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(h) if self.skip is not None else x)


class _Stage(nn.Module):
    pass


class MaskGITEncoder(nn.Module):
    def __init__(self, c: MaskGITVQGANConfig):
        super().__init__()
        self.conv_in = SameConv2d(3, c.channels, 3, bias=False)
        self.stages = nn.ModuleList()
        prev = c.channels
        for m in c.channel_mult:
            stage = _Stage()
            stage.res = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.res.append(OutputSkipResBlock(prev, c.channels * m))
                prev = c.channels * m
            self.stages.append(stage)
        self.mid = nn.ModuleList(OutputSkipResBlock(prev, prev) for _ in range(c.num_res_blocks))
        self.norm_out = nn.GroupNorm(32, prev, eps=1e-6)
        self.conv_out = SameConv2d(prev, c.z_channels, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i, stage in enumerate(self.stages):
            for block in stage.res:
                h = block(h)
            if i < len(self.stages) - 1:
                h = F.avg_pool2d(h, kernel_size=2, stride=2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MaskGITDecoder(nn.Module):
    def __init__(self, c: MaskGITVQGANConfig, out_channels: int = 3):
        super().__init__()
        mult = c.channel_mult
        prev = c.channels * mult[-1]
        self.conv_in = SameConv2d(c.z_channels, prev, 3)
        self.mid = nn.ModuleList(OutputSkipResBlock(prev, prev) for _ in range(c.num_res_blocks))
        stages: list[nn.Module] = [None] * len(mult)  # indexed by level, 0 = full res
        for i in reversed(range(len(mult))):
            stage = _Stage()
            stage.res = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.res.append(OutputSkipResBlock(prev, c.channels * mult[i]))
                prev = c.channels * mult[i]
            if i > 0:
                stage.up_conv = SameConv2d(prev, prev, 3)
            stages[i] = stage
        self.stages = nn.ModuleList(stages)
        self.norm_out = nn.GroupNorm(32, prev, eps=1e-6)
        self.conv_out = SameConv2d(prev, out_channels, 3)

    def forward(self, z):
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for i in reversed(range(len(self.stages))):
            stage = self.stages[i]
            for block in stage.res:
                h = block(h)
            if i > 0:
                h = stage.up_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
