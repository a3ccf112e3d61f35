"""ViT encoder and decoder of ViT-VQGAN (Yu et al. 2021, arXiv:2110.04627).

Non-overlapping patches -> transformer blocks -> a linear map to `z_channels`
per patch, laid out as a (B, z, H/p, W/p) grid so every quantizer plugs in.
The low-dimensional L2-normalized lookup of the paper is the quantizer's job:
use `[quantizer] kind = "vq", code_dim = 32, cosine = true`. The decoder
mirrors it and turns each token back into a p x p patch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vqtool.models.transformer import Block


@dataclass
class ViTConfig:
    architecture: Literal["vit"] = "vit"
    patch_size: int = 8  # pixels per token side (the downsampling factor)
    width: int = 256  # transformer width
    layers: int = 4  # blocks in the encoder and in the decoder
    heads: int = 4
    z_channels: int = 256  # per-token output = quantizer input channels

    @property
    def downsample(self) -> int:
        return self.patch_size


class ViTEncoder(nn.Module):
    def __init__(self, c: ViTConfig, image_size: int):
        super().__init__()
        self.grid = image_size // c.patch_size
        self.patch = nn.Conv2d(3, c.width, c.patch_size, stride=c.patch_size)
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, c.width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.width, c.heads) for _ in range(c.layers))
        self.ln = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.z_channels)

    def forward(self, x):  # (B, 3, H, W) -> (B, z, H/p, W/p)
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, width)
        for block in self.blocks:
            h = block(h)
        z = self.out(self.ln(h))  # (B, N, z)
        return z.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid)


class ViTDecoder(nn.Module):
    def __init__(self, c: ViTConfig, image_size: int, out_channels: int = 3):
        super().__init__()
        self.grid, self.p, self.out_channels = (
            image_size // c.patch_size,
            c.patch_size,
            out_channels,
        )
        self.inp = nn.Linear(c.z_channels, c.width)
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, c.width) * 0.02)
        self.blocks = nn.ModuleList(Block(c.width, c.heads) for _ in range(c.layers))
        self.ln = nn.LayerNorm(c.width)
        self.to_pixels = nn.Linear(c.width, out_channels * c.patch_size**2)

    def forward(self, z):  # (B, z, h, w) -> (B, out, h*p, w*p)
        b = z.shape[0]
        h = self.inp(z.flatten(2).transpose(1, 2)) + self.pos
        for block in self.blocks:
            h = block(h)
        patches = self.to_pixels(self.ln(h))  # (B, N, out*p*p)
        g, p = self.grid, self.p
        patches = patches.reshape(b, g, g, self.out_channels, p, p)
        return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, self.out_channels, g * p, g * p)

    @property
    def last_layer(self) -> nn.Parameter:
        return self.to_pixels.weight
