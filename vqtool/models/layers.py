"""Convolutional building blocks of VQGAN-style encoders and decoders
(Esser et al. 2021, arXiv:2012.09841): GroupNorm + swish residual blocks,
strided-conv down, nearest + conv up, single-head spatial self-attention.

Two switches exist so public checkpoints (taming, LlamaGen) give exactly
their original numbers: `swish="x_sigmoid"` computes x * sigmoid(x) as they
write it (F.silu rounds differently in about a quarter of values), and
attention `impl="manual"` is their bmm/softmax/bmm form instead of
`scaled_dot_product_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swish(x, kind: str = "silu"):
    return F.silu(x) if kind == "silu" else x * torch.sigmoid(x)


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with `groups` groups, or the largest of 16, 8, 4, 2, 1 below it that
    divides `channels`."""
    if channels % groups:
        groups = max(g for g in (16, 8, 4, 2, 1) if g <= groups and channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(
        self, c_in: int, c_out: int, dropout: float = 0.0, act: str = "silu", groups: int = 32
    ):
        super().__init__()
        self.act = act
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x), self.act))
        h = self.conv2(self.dropout(swish(self.norm2(h), self.act)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a 3x3 stride-2 conv (padding right/bottom, as taming, or
    one pixel on every side), optionally changing the width to `c_out`."""

    def __init__(self, channels: int, c_out: int | None = None, symmetric: bool = False):
        super().__init__()
        self.symmetric = symmetric  # pad 1 on every side inside the conv (no padded copy)
        self.conv = nn.Conv2d(channels, c_out or channels, 3, stride=2, padding=int(symmetric))

    def forward(self, x):
        return self.conv(x if self.symmetric else F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 conv (optionally to `c_out`)."""

    def __init__(self, channels: int, c_out: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, c_out or channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual. `impl="fused"` is
    VAR's form: q, k and v from one `qkv` conv, the manual bmm/softmax/bmm with its
    contiguous copies."""

    def __init__(self, channels: int, impl: str = "sdpa", groups: int = 32):
        super().__init__()
        self.impl = impl
        self.norm = group_norm(channels, groups)
        if impl == "fused":
            self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        else:
            self.q = nn.Conv2d(channels, channels, 1)
            self.k = nn.Conv2d(channels, channels, 1)
            self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        n = self.norm(x)
        if self.impl == "fused":
            return x + self.proj(_fused_attention(self.qkv(n), c))
        q, k, v = (conv(n).reshape(b, c, h * w) for conv in (self.q, self.k, self.v))
        if self.impl == "manual":  # w = softmax(q^T k / sqrt(c)); out = v w^T
            weights = torch.bmm(q.permute(0, 2, 1), k) * (int(c) ** (-0.5))
            weights = F.softmax(weights, dim=2)
            out = torch.bmm(v, weights.permute(0, 2, 1))
        else:
            t = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = F.scaled_dot_product_attention(*t).transpose(1, 2)  # (B, C, H*W)
        return x + self.proj(out.reshape(b, c, h, w))


def _fused_attention(qkv: torch.Tensor, c: int) -> torch.Tensor:
    """VAR's AttnBlock body on its qkv conv's output (B, 3C, H, W) -> (B, C, H, W)."""
    b, _, h, w = qkv.shape
    q, k, v = qkv.reshape(b, 3, c, h, w).unbind(1)
    q = q.view(b, c, h * w).contiguous().permute(0, 2, 1).contiguous()  # B, HW, C
    k = k.view(b, c, h * w).contiguous()  # B, C, HW
    weights = F.softmax(torch.bmm(q, k).mul_(int(c) ** (-0.5)), dim=2)
    v = v.view(b, c, h * w).contiguous()
    weights = weights.permute(0, 2, 1).contiguous()
    return torch.bmm(v, weights).view(b, c, h, w).contiguous()
