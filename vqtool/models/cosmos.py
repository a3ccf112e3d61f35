"""NVIDIA's Cosmos discrete tokenizers (Cosmos-Tokenizer, 2024): DI8x8 / DI16x16 for
images, DV4x8x8 / DV8x8x8 / DV8x16x16 for videos (one image = a one-frame video, as
SimpleAR tokenizes), FSQ codes (levels 8,8,8,5,5,5: 64,000 codes).

- the input is first cut into wavelet patches: `patch_size` = 4 is two levels of a Haar
  transform (each level: 2x2 -> 4 channels, over time too for video), so the network
  starts at 1/4 of the resolution;
- image (DI): a VQGAN-style encoder/decoder (GroupNorm 32, x*sigmoid(x), attention in the
  middle) whose number of halvings is the compression over the patch size;
- video (DV): every 3D conv factorized into a spatial (1,3,3) and a temporal (3,1,1)
  causal conv (the past frame repeated before the first), norms over (C, H, W) per frame,
  spatial + causal temporal attention, and hybrid down/up blocks (conv + average pool);
- the network runs in `compute_dtype` (bfloat16: the original's default pipeline casts its
  weights and input to bf16); FSQ then rounds in float32 as the original does.

Module names are the original's, so the published weights map one to one. The 3D layers
are in `vqtool.models.cosmos3d`; the encoder and decoder vqtool runs (2D or 3D, in
`compute_dtype`) in `vqtool.models.cosmos_net`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

HAAR = 0.7071067811865476


@dataclass
class CosmosConfig:
    architecture: Literal["cosmos"] = "cosmos"
    dims: Literal[2, 3] = 2  # 2: image tokenizer (DI), 3: causal video tokenizer (DV)
    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [2, 4, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [32])
    resolution: int = 1024  # the training resolution the attention levels are counted from
    patch_size: int = 4
    patch_method: Literal["haar", "rearrange"] = "haar"
    spatial_compression: int = 16
    temporal_compression: int = 8  # video only
    z_channels: int = 256  # DI 256, DV 16
    embed_dim: int = 6  # FSQ channels
    legacy_mode: bool = False  # video decoder's old placement of temporal upsampling
    compute_dtype: Literal["bfloat16", "float32"] = "bfloat16"

    @property
    def downsample(self) -> int:
        return self.spatial_compression

    @property
    def code_channels(self) -> int:
        return self.embed_dim

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.compute_dtype)

    def spatial_steps(self) -> int:
        return int(math.log2(self.spatial_compression)) - int(math.log2(self.patch_size))

    def temporal_steps(self) -> int:
        return int(math.log2(self.temporal_compression)) - int(math.log2(self.patch_size))


def swish(x):
    return x * torch.sigmoid(x)


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class Wavelets(nn.Module):
    """Patching by Haar wavelets (or a plain space-to-channel rearrange): forward cuts
    (B, C, H, W) into (B, C*p*p, H/p, W/p); `inverse` puts it back."""

    def __init__(self, patch_size: int, method: str):
        super().__init__()
        self.patch_size, self.method = patch_size, method
        taps = [HAAR, HAAR] if method == "haar" else [1.0, 1.0]
        self.register_buffer("wavelets", torch.tensor(taps), persistent=False)
        self.register_buffer("_arange", torch.arange(2), persistent=False)
        self.levels = int(math.log2(patch_size))

    def filters(self, dtype, groups: int):
        h = self.wavelets
        low = h.flip(0).reshape(1, 1, -1).repeat(groups, 1, 1).to(dtype=dtype)
        high = (h * ((-1) ** self._arange)).reshape(1, 1, -1).repeat(groups, 1, 1).to(dtype=dtype)
        return low, high

    def forward(self, x):
        if self.method != "haar":
            b, c, h, w = x.shape
            p = self.patch_size
            x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4)
            return x.reshape(b, c * p * p, h // p, w // p).contiguous()
        for _ in range(self.levels):
            x = self._level(x)
        return x

    def _level(self, x):
        g = x.shape[1]
        low, high = self.filters(x.dtype, g)
        x = F.pad(x, pad=(0, 1, 0, 1), mode="reflect")
        xl = F.conv2d(x, low.unsqueeze(2), groups=g, stride=(1, 2))
        xh = F.conv2d(x, high.unsqueeze(2), groups=g, stride=(1, 2))
        parts = [
            F.conv2d(half, f.unsqueeze(3), groups=g, stride=(2, 1))
            for half in (xl, xh)
            for f in (low, high)
        ]
        return torch.cat(parts, dim=1) / 2

    def inverse(self, x):
        if self.method != "haar":
            b, c, h, w = x.shape
            p = self.patch_size
            x = x.reshape(b, c // (p * p), p, p, h, w).permute(0, 1, 4, 2, 5, 3)
            return x.reshape(b, c // (p * p), h * p, w * p)
        for _ in range(self.levels):
            x = self._inverse_level(x)
        return x

    def _inverse_level(self, x):
        g = x.shape[1] // 4
        low, high = self.filters(x.dtype, g)
        ll, lh, hl, hh = torch.chunk(x, 4, dim=1)
        t2 = F.conv_transpose2d
        yl = t2(ll, low.unsqueeze(3), groups=g, stride=(2, 1))
        yl += t2(lh, high.unsqueeze(3), groups=g, stride=(2, 1))
        yh = t2(hl, low.unsqueeze(3), groups=g, stride=(2, 1))
        yh += t2(hh, high.unsqueeze(3), groups=g, stride=(2, 1))
        y = t2(yl, low.unsqueeze(2), groups=g, stride=(1, 2))
        y += t2(yh, high.unsqueeze(2), groups=g, stride=(1, 2))
        return y * 2


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h_ = self.norm(x)
        b, c, h, w = x.shape
        q = self.q(h_).reshape(b, c, h * w).permute(0, 2, 1)
        k = self.k(h_).reshape(b, c, h * w)
        weights = F.softmax(torch.bmm(q, k) * (int(c) ** (-0.5)), dim=2)
        out = torch.bmm(self.v(h_).reshape(b, c, h * w), weights.permute(0, 2, 1))
        return x + self.proj_out(out.reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def _stage(blocks: list[nn.Module], attn: list[nn.Module]) -> nn.Module:
    stage = nn.Module()
    stage.block, stage.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
    return stage


def _middle(width: int, block, attn) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = block(width, width), attn(width), block(width, width)
    return mid


def run_blocks(stage: nn.Module, h, count: int):
    for i in range(count):
        h = stage.block[i](h)
        if len(stage.attn) > 0:
            h = stage.attn[i](h)
    return h


class Encoder2d(nn.Module):
    def __init__(self, c: CosmosConfig, in_channels: int = 3):
        super().__init__()
        self.patcher = Wavelets(c.patch_size, c.patch_method)
        self.blocks_per_stage, self.steps = c.num_res_blocks, c.spatial_steps()
        self.conv_in = nn.Conv2d(in_channels * c.patch_size**2, c.channels, 3, padding=1)
        res, width, self.down = c.resolution // c.patch_size, c.channels, nn.ModuleList()
        for i, mult in enumerate(c.channel_mult):
            blocks, attn = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(width, c.channels * mult))
                width = c.channels * mult
                if res in c.attn_resolutions:
                    attn.append(AttnBlock(width))
            stage = _stage(blocks, attn)
            if i < self.steps:
                stage.downsample, res = Downsample(width), res // 2
            self.down.append(stage)
        self.mid = _middle(width, ResnetBlock, AttnBlock)
        self.norm_out = norm(width)
        self.conv_out = nn.Conv2d(width, c.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(self.patcher(x))
        for i, stage in enumerate(self.down):
            h = run_blocks(stage, h, self.blocks_per_stage)
            if i < self.steps:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder2d(nn.Module):
    def __init__(self, c: CosmosConfig, out_channels: int = 3):
        super().__init__()
        self.unpatcher = Wavelets(c.patch_size, c.patch_method)
        levels = len(c.channel_mult)
        self.blocks_per_stage, self.first_up = c.num_res_blocks + 1, levels - c.spatial_steps()
        width = c.channels * c.channel_mult[-1]
        res = (c.resolution // c.patch_size) // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(c.z_channels, width, 3, padding=1)
        self.mid = _middle(width, ResnetBlock, AttnBlock)
        stages = []
        for i in reversed(range(levels)):
            blocks, attn = [], []
            for _ in range(self.blocks_per_stage):
                blocks.append(ResnetBlock(width, c.channels * c.channel_mult[i]))
                width = c.channels * c.channel_mult[i]
                if res in c.attn_resolutions:
                    attn.append(AttnBlock(width))
            stage = _stage(blocks, attn)
            if i >= self.first_up:
                stage.upsample, res = Upsample(width), res * 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = norm(width)
        self.conv_out = nn.Conv2d(width, out_channels * c.patch_size**2, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            h = run_blocks(self.up[i], h, self.blocks_per_stage)
            if i >= self.first_up:
                h = self.up[i].upsample(h)
        return self.unpatcher.inverse(self.conv_out(swish(self.norm_out(h))))
