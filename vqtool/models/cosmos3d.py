"""The causal, factorized 3D layers of the Cosmos video tokenizers (DV4x8x8, DV8x8x8,
DV8x16x16), with the original's module names. Tensors are (B, C, T, H, W); every conv is
causal in time (the first frame repeated in front), and each 3x3x3 conv is factorized into
a spatial (1,3,3) and a temporal (3,1,1) one. One image is a one-frame video: the wavelet
patcher repeats it to `patch_size` frames and halves time with space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.cosmos import CosmosConfig, Wavelets, _middle, _stage, run_blocks, swish


class CausalConv3d(nn.Module):
    def __init__(self, c_in, c_out, kernel_size=3, stride=1, time_stride=1, padding=1):
        super().__init__()
        k = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * 3
        self.time_pad = (k[0] - 1) + (1 - time_stride)
        self.spatial_pad = (padding,) * 4
        self.conv3d = nn.Conv3d(c_in, c_out, k, stride=(time_stride, stride, stride))

    def forward(self, x):
        x = torch.cat([x[:, :, :1, ...].repeat(1, 1, self.time_pad, 1, 1), x], dim=2)
        return self.conv3d(F.pad(x, self.spatial_pad + (0, 0), mode="constant", value=0.0))


def factorized(c_in: int, c_out: int, padding: int = 1) -> nn.Sequential:
    """A spatial (1,3,3) conv then a temporal (3,1,1) one."""
    return nn.Sequential(
        CausalConv3d(c_in, c_out, kernel_size=(1, 3, 3), padding=padding),
        CausalConv3d(c_out, c_out, kernel_size=(3, 1, 1), padding=0),
    )


def to_frames(x):  # (B, C, T, H, W) -> (B*T, C, H, W)
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), b


def from_frames(x, b: int):
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class CausalNormalize(nn.Module):
    """GroupNorm(1) over (C, H, W) of each frame."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, c, eps=1e-6, affine=True)

    def forward(self, x):
        frames, b = to_frames(x)
        return from_frames(self.norm(frames), b)


class ResnetBlock3d(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = CausalNormalize(c_in)
        self.conv1 = factorized(c_in, c_out)
        self.norm2 = CausalNormalize(c_out)
        self.conv2 = factorized(c_out, c_out)
        self.nin_shortcut = (
            CausalConv3d(c_in, c_out, kernel_size=1, padding=0) if c_in != c_out else nn.Identity()
        )

    def forward(self, x):
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return self.nin_shortcut(x) + h


class _Attention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = CausalNormalize(c)
        self.q, self.k, self.v, self.proj_out = (
            CausalConv3d(c, c, kernel_size=1, padding=0) for _ in range(4)
        )


class SpatialAttention(_Attention):
    def forward(self, x):
        n = self.norm(x)
        q, b = to_frames(self.q(n))
        k, _ = to_frames(self.k(n))
        v, _ = to_frames(self.v(n))
        bt, c, h, w = q.shape
        weights = torch.bmm(q.reshape(bt, c, h * w).permute(0, 2, 1), k.reshape(bt, c, h * w))
        weights = F.softmax(weights * (int(c) ** (-0.5)), dim=2)
        out = torch.bmm(v.reshape(bt, c, h * w), weights.permute(0, 2, 1)).reshape(bt, c, h, w)
        return x + self.proj_out(from_frames(out, b))


class TemporalAttention(_Attention):
    """Causal attention over time at each position."""

    def forward(self, x):
        n = self.norm(x)
        b, c, t, h, w = x.shape

        def positions(y):  # (B, C, T, H, W) -> (B*H*W, T, C)
            return y.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t).permute(0, 2, 1)

        q, k, v = positions(self.q(n)), positions(self.k(n)), positions(self.v(n))
        weights = torch.bmm(q, k.permute(0, 2, 1)) * (int(c) ** (-0.5))
        mask = torch.tril(torch.ones_like(weights))
        weights = F.softmax(weights.masked_fill(mask == 0, float("-inf")), dim=2)
        out = torch.bmm(weights, v).permute(0, 2, 1).reshape(b * h * w, c, t)
        out = out.reshape(b, h, w, c, t).permute(0, 3, 4, 1, 2)
        return x + self.proj_out(out)


def attention(c: int) -> nn.Sequential:
    return nn.Sequential(SpatialAttention(c), TemporalAttention(c))


def avg_pool(x, size: tuple[int, int, int]):
    """F.avg_pool3d; for bfloat16 on a CPU (which has no such kernel) the average is taken
    in float32 and rounded once to bfloat16, as the CUDA kernel accumulates."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return F.avg_pool3d(x.float(), kernel_size=size, stride=size).to(x.dtype)
    return F.avg_pool3d(x, kernel_size=size, stride=size)


class HybridDownsample(nn.Module):
    """Halve space (stride-2 conv + 2x2 average) and/or time (stride-2 causal conv +
    average of frame pairs), then a 1x1x1 conv."""

    def __init__(self, c: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(c, c, kernel_size=(1, 3, 3), stride=2, padding=0)
        self.conv2 = CausalConv3d(c, c, kernel_size=(3, 1, 1), time_stride=2, padding=0)
        self.conv3 = CausalConv3d(c, c, kernel_size=1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x):
        if not (self.spatial or self.temporal):
            return x
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1, 0, 0), mode="constant", value=0)
            x = self.conv1(x) + avg_pool(x, (1, 2, 2))
        if self.temporal:
            x = torch.cat([x[:, :, :1, ...], x], dim=2)
            x = self.conv2(x) + avg_pool(x, (2, 1, 1))
        return self.conv3(x)


class HybridUpsample(nn.Module):
    def __init__(self, c: int, spatial: bool, temporal: bool):
        super().__init__()
        self.conv1 = CausalConv3d(c, c, kernel_size=(3, 1, 1), padding=0)
        self.conv2 = CausalConv3d(c, c, kernel_size=(1, 3, 3), padding=1)
        self.conv3 = CausalConv3d(c, c, kernel_size=1, padding=0)
        self.spatial, self.temporal = spatial, temporal

    def forward(self, x):
        if not (self.spatial or self.temporal):
            return x
        if self.temporal:
            factor = 2 if x.shape[2] > 1 else 1
            x = x.repeat_interleave(factor, dim=2)[..., factor - 1 :, :, :]
            x = self.conv1(x) + x
        if self.spatial:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = self.conv2(x) + x
        return self.conv3(x)


class Wavelets3d(Wavelets):
    """Haar patching over time, height and width; the first frame is repeated to
    `patch_size` frames first (and dropped again by `inverse`)."""

    def __init__(self, patch_size: int, method: str):
        super().__init__(patch_size, method)
        size = patch_size * torch.ones([1], dtype=torch.int32)
        self.register_buffer("patch_size_buffer", size, persistent=False)

    def forward(self, x):
        first, rest = torch.split(x, [1, x.shape[2] - 1], dim=2)
        x = torch.cat([first.repeat_interleave(self.patch_size, dim=2), rest], dim=2)
        if self.method != "haar":
            b, c, t, h, w = x.shape
            p = self.patch_size
            x = x.reshape(b, c, t // p, p, h // p, p, w // p, p).permute(0, 1, 3, 5, 7, 2, 4, 6)
            return x.reshape(b, c * p**3, t // p, h // p, w // p).contiguous()
        for _ in range(self.levels):
            x = self._level3d(x)
        return x

    def _level3d(self, x):
        g = x.shape[1]
        low, high = self.filters(x.dtype, g)
        x = F.pad(x, pad=(0, 1, 0, 1, 0, 1), mode="reflect")
        axes = ((3, 4), (2, 4), (2, 3))  # unsqueeze to filter along time, height, width
        strides = ((2, 1, 1), (1, 2, 1), (1, 1, 2))
        parts = [x]
        for (a, b), stride in zip(axes, strides):
            parts = [
                F.conv3d(p, f.unsqueeze(a).unsqueeze(b), groups=g, stride=stride)
                for p in parts
                for f in (low, high)
            ]
        return torch.cat(parts, dim=1) / (2 * torch.sqrt(torch.tensor(2.0)))

    def inverse(self, x):
        if self.method != "haar":
            b, c, t, h, w = x.shape
            p, c_out = self.patch_size, c // self.patch_size**3
            x = x.reshape(b, c_out, p, p, p, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
            return x.reshape(b, c_out, t * p, h * p, w * p)[:, :, p - 1 :, ...]
        for _ in range(self.levels):
            x = self._inverse_level3d(x)
        return x[:, :, self.patch_size - 1 :, ...]

    def _inverse_level3d(self, x):
        g = x.shape[1] // 8
        low, high = self.filters(x.dtype, g)
        parts = list(torch.chunk(x, 8, dim=1))
        axes = ((2, 3), (2, 4), (3, 4))  # undo width, then height, then time
        strides = ((1, 1, 2), (1, 2, 1), (2, 1, 1))
        for (a, b), stride in zip(axes, strides):
            merged = []
            for lo, hi in zip(parts[0::2], parts[1::2]):
                y = F.conv_transpose3d(lo, low.unsqueeze(a).unsqueeze(b), groups=g, stride=stride)
                y += F.conv_transpose3d(hi, high.unsqueeze(a).unsqueeze(b), groups=g, stride=stride)
                merged.append(y)
            parts = merged
        return parts[0] * (2 * torch.sqrt(torch.tensor(2.0)))


class EncoderFactorized(nn.Module):
    def __init__(self, c: CosmosConfig, in_channels: int = 3):
        super().__init__()
        self.patcher3d = Wavelets3d(c.patch_size, c.patch_method)
        self.blocks_per_stage = c.num_res_blocks
        self.conv_in = factorized(in_channels * c.patch_size**3, c.channels)
        res, width, self.down = c.resolution // c.patch_size, c.channels, nn.ModuleList()
        levels = len(c.channel_mult)
        for i, mult in enumerate(c.channel_mult):
            blocks, attn = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock3d(width, c.channels * mult))
                width = c.channels * mult
                if res in c.attn_resolutions:
                    attn.append(attention(width))
            stage = _stage(blocks, attn)
            if i != levels - 1:
                spatial, temporal = i < c.spatial_steps(), i < c.temporal_steps()
                stage.downsample, res = HybridDownsample(width, spatial, temporal), res // 2
            self.down.append(stage)
        self.mid = _middle(width, ResnetBlock3d, attention)
        self.norm_out = CausalNormalize(width)
        self.conv_out = factorized(width, c.z_channels)

    def forward(self, x):
        h = self.conv_in(self.patcher3d(x))
        for i, stage in enumerate(self.down):
            h = run_blocks(stage, h, self.blocks_per_stage)
            if i != len(self.down) - 1:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class DecoderFactorized(nn.Module):
    def __init__(self, c: CosmosConfig, out_channels: int = 3):
        super().__init__()
        self.unpatcher3d = Wavelets3d(c.patch_size, c.patch_method)
        levels = len(c.channel_mult)
        self.blocks_per_stage = c.num_res_blocks + 1
        width = c.channels * c.channel_mult[-1]
        res = (c.resolution // c.patch_size) // 2 ** (levels - 1)
        self.conv_in = factorized(c.z_channels, width)
        self.mid = _middle(width, ResnetBlock3d, attention)
        space_ups, time_ups = c.spatial_steps(), c.temporal_steps()
        stages = []
        for i in reversed(range(levels)):
            blocks, attn = [], []
            for _ in range(self.blocks_per_stage):
                blocks.append(ResnetBlock3d(width, c.channels * c.channel_mult[i]))
                width = c.channels * c.channel_mult[i]
                if res in c.attn_resolutions:
                    attn.append(attention(width))
            stage = _stage(blocks, attn)
            if i != 0:
                rev = levels - i - 1
                temporal = rev < time_ups if c.legacy_mode else 0 < rev < time_ups + 1
                spatial = temporal or (rev < space_ups and space_ups > time_ups)
                stage.upsample, res = HybridUpsample(width, spatial, temporal), res * 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = CausalNormalize(width)
        self.conv_out = factorized(width, out_channels * c.patch_size**3)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            h = run_blocks(self.up[i], h, self.blocks_per_stage)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.unpatcher3d.inverse(self.conv_out(swish(self.norm_out(h))))
