"""Emu3's VisionTokenizer (Emu3 team 2024, arXiv:2409.18869), built as its public
checkpoint needs it so the weights load by their own names and give its tokens exactly.

A MoVQ-style video tokenizer used on images:
- the encoder is a VQGAN encoder run on every frame (an image is `temporal_factor`
  copies of itself), then causal 3D convolutions that halve time until one frame is
  left, a stack of temporal residual blocks (BatchNorm3d) and a causal 3D quant conv;
- the codebook (32,768 x 4) is searched with `|z|^2 + |e|^2 - 2 z.e`;
- the decoder runs the codes and their post-quant projection through temporal residual
  blocks and causal upsampling back to `temporal_factor` frames, then a 2D decoder whose
  every GroupNorm is a *spatial* norm modulated by the (time-processed) codes; an image
  is the first frame.
Causal 3D convolutions pad two frames in front whatever their kernel, as the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _act(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


@dataclass
class Emu3Config:
    architecture: Literal["emu3"] = "emu3"
    channels: int = 256
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [3])
    z_channels: int = 4
    embed_dim: int = 4
    temporal_factor: int = 4

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def code_channels(self) -> int:
        return self.embed_dim


class CausalConv3d(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel=(3, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        pads: tuple = ()
        for k, s in list(zip(kernel[1:], stride[1:]))[::-1]:  # width first, as F.pad reads
            p = k - s
            pads += (p // 2 + p % 2, p // 2)
        self.padding = pads + (2, 0)  # two frames in front, whatever the kernel
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride)

    def forward(self, x):
        return self.conv(F.pad(x, self.padding))


class TemporalResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(c)
        self.conv1 = CausalConv3d(c, c, (3, 3, 3))
        self.norm2 = nn.BatchNorm3d(c)
        self.conv2 = CausalConv3d(c, c, (3, 3, 3))

    def forward(self, x):
        h = self.conv1(_act(self.norm1(x)))
        return x + self.conv2(_act(self.norm2(h)))


class SpatialNorm(nn.Module):
    """GroupNorm, then scale and shift by 1x1 convolutions of the codes (nearest-resized)."""

    def __init__(self, c: int, zq_c: int):
        super().__init__()
        self.norm_layer = nn.GroupNorm(32, c, eps=1e-6)
        self.conv_y = nn.Conv2d(zq_c, c, 1)
        self.conv_b = nn.Conv2d(zq_c, c, 1)

    def forward(self, x, zq):
        zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return self.norm_layer(x) * self.conv_y(zq) + self.conv_b(zq)


def _norm(c: int, zq_c: int | None) -> nn.Module:
    return nn.GroupNorm(32, c, eps=1e-6) if zq_c is None else SpatialNorm(c, zq_c)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, zq_c: int | None = None):
        super().__init__()
        self.spatial = zq_c is not None
        self.norm1, self.norm2 = _norm(c_in, zq_c), _norm(c_out, zq_c)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, zq=None):
        args = (zq,) if self.spatial else ()
        h = self.conv1(_act(self.norm1(x, *args)))
        h = self.conv2(_act(self.norm2(h, *args)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head attention over positions; the scores scaled as Emu3 does (`/ c**0.5`)
    or, with `taming_scale`, as taming and MoVQGAN do (`* int(c)**-0.5`)."""

    def __init__(self, c: int, zq_c: int | None = None, taming_scale: bool = False):
        super().__init__()
        self.spatial = zq_c is not None
        self.taming_scale = taming_scale
        self.norm = _norm(c, zq_c)
        self.q, self.k, self.v = (nn.Conv2d(c, c, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, zq=None):
        nx = self.norm(x, *((zq,) if self.spatial else ()))
        q, k, v = self.q(nx), self.k(nx), self.v(nx)
        b, c, h, w = q.shape
        score = torch.bmm(q.reshape(b, c, h * w).permute(0, 2, 1), k.reshape(b, c, h * w))
        score = score * int(c) ** (-0.5) if self.taming_scale else score / (c**0.5)
        score = F.softmax(score, dim=2)
        v = torch.bmm(v.reshape(b, c, h * w), score.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(v)


class _Level(nn.Module):
    pass


class Emu3Encoder(nn.Module):
    def __init__(self, c: Emu3Config):
        super().__init__()
        self.c = c
        self.conv_in = nn.Conv2d(3, c.channels, 3, padding=1)
        self.down = nn.ModuleList()
        prev = c.channels
        for i, m in enumerate(c.channel_mult):
            level = _Level()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks):
                level.block.append(ResBlock(prev, c.channels * m))
                prev = c.channels * m
                if i in c.attention_levels:
                    level.attn.append(AttnBlock(prev))
            if i < len(c.channel_mult) - 1:
                level.downsample = _Level()
                level.downsample.conv = nn.Conv2d(prev, prev, 3, stride=2)
            self.down.append(level)
        self.mid = _Level()
        self.mid.block_1, self.mid.attn_1 = ResBlock(prev, prev), AttnBlock(prev)
        self.mid.block_2 = ResBlock(prev, prev)
        self.norm_out = nn.GroupNorm(32, prev, eps=1e-6)
        self.conv_out = nn.Conv2d(prev, c.z_channels, 3, padding=1)
        frames = c.temporal_factor.bit_length() - 1
        z = c.z_channels
        self.time_conv = nn.ModuleList(_TimeConv(z, (4, 3, 3), (2, 1, 1)) for _ in range(frames))
        self.time_res_stack = nn.Sequential(*(TemporalResBlock(z) for _ in range(c.num_res_blocks)))
        self.quant_conv = CausalConv3d(z, c.embed_dim)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for i, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[i](h)
            if hasattr(level, "downsample"):
                h = level.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        h = self.conv_out(_act(self.norm_out(h)))
        # every frame of the "video" is this image: (B, z, T, h, w)
        h = h.unsqueeze(2).expand(-1, -1, self.c.temporal_factor, -1, -1)
        for conv in self.time_conv:
            h = _act(conv(h))
        h = self.time_res_stack(h)
        return self.quant_conv(h)[:, :, 0]  # one frame is left


class _TimeConv(nn.Module):
    """A temporal down (stride 2) or up (nearest x2 in time first) causal convolution,
    holding its convolution as `conv` the way the checkpoint names it."""

    def __init__(self, c: int, kernel, stride, up: bool = False):
        super().__init__()
        self.up = up
        self.conv = CausalConv3d(c, c, kernel, stride)

    def forward(self, x):
        if self.up:
            b, c, t, h, w = x.shape
            x = x.permute(0, 1, 3, 4, 2).contiguous().view(b, -1, t)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = x.view(b, c, h, w, -1).permute(0, 1, 4, 2, 3).contiguous()
        return self.conv(x)


def build_spatial_decoder(m: nn.Module, c, out_channels: int, taming_scale: bool = False):
    """The 2D decoder of MoVQ-style tokenizers (Emu3, MoVQGAN) onto `m`, under the
    originals' names: conv_in, mid (res, attention, res), up[level] (num_res_blocks + 1
    residual blocks, attention at attention levels, a nearest-upsampling conv), norm_out,
    conv_out; every norm a spatial norm of the code vectors (embed_dim channels)."""
    e, prev = c.embed_dim, c.channels * c.channel_mult[-1]
    m.conv_in = nn.Conv2d(c.z_channels, prev, 3, padding=1)
    m.mid = _Level()
    m.mid.block_1, m.mid.attn_1 = ResBlock(prev, prev, e), AttnBlock(prev, e, taming_scale)
    m.mid.block_2 = ResBlock(prev, prev, e)
    levels: list[nn.Module] = [None] * len(c.channel_mult)  # indexed by level
    for i in reversed(range(len(c.channel_mult))):
        level = _Level()
        level.block, level.attn = nn.ModuleList(), nn.ModuleList()
        for _ in range(c.num_res_blocks + 1):
            level.block.append(ResBlock(prev, c.channels * c.channel_mult[i], e))
            prev = c.channels * c.channel_mult[i]
            if i in c.attention_levels:
                level.attn.append(AttnBlock(prev, e, taming_scale))
        if i > 0:
            level.upsample = _Level()
            level.upsample.conv = nn.Conv2d(prev, prev, 3, padding=1)
        levels[i] = level
    m.up = nn.ModuleList(levels)
    m.norm_out = SpatialNorm(prev, e)
    m.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)


def run_spatial_decoder(m: nn.Module, h: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
    """`build_spatial_decoder`'s modules on features `h` (z channels), modulated by `zq`."""
    h = m.conv_in(h)
    h = m.mid.block_2(m.mid.attn_1(m.mid.block_1(h, zq), zq), zq)
    for i in reversed(range(len(m.up))):
        level = m.up[i]
        for j, block in enumerate(level.block):
            h = block(h, zq)
            if len(level.attn):
                h = level.attn[j](h, zq)
        if hasattr(level, "upsample"):
            h = level.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
    return m.conv_out(_act(m.norm_out(h, zq)))


class Emu3Decoder(nn.Module):
    def __init__(self, c: Emu3Config, out_channels: int = 3):
        super().__init__()
        self.c = c
        z, e = c.z_channels, c.embed_dim
        self.post_quant_conv = CausalConv3d(e, z)
        self.time_res_stack = nn.Sequential(*(TemporalResBlock(z) for _ in range(c.num_res_blocks)))
        frames = c.temporal_factor.bit_length() - 1
        self.time_conv = nn.ModuleList(
            _TimeConv(z, (3, 3, 3), (1, 1, 1), up=True) for _ in range(frames)
        )
        build_spatial_decoder(self, c, out_channels)

    def forward(self, quant):
        """(B, embed, h, w) code vectors -> the first frame's pixels (B, 3, H, W)."""
        quant = quant.unsqueeze(2).contiguous()  # (B, e, T=1, h, w)
        quant2 = self.post_quant_conv(quant)
        both = torch.cat((quant2.permute(0, 2, 1, 3, 4), quant.permute(0, 2, 1, 3, 4)), dim=0)
        both = self.time_res_stack(both.permute(0, 2, 1, 3, 4))
        for conv in self.time_conv:
            both = _act(conv(both))
        h, zq = torch.chunk(both.permute(0, 2, 1, 3, 4), 2, dim=0)  # (B, T, C, h, w)
        h = h.reshape(-1, *h.shape[2:])
        zq = zq.reshape(-1, *zq.shape[2:])
        h = run_spatial_decoder(self, h, zq)
        frames = self.c.temporal_factor
        return h.reshape(-1, frames, *h.shape[1:])[:, 0]

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
