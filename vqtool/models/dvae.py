"""The DALL-E discrete VAE's encoder and decoder (Ramesh et al. 2021).

Groups of bottleneck residual blocks (3x3, 3x3, 3x3, 1x1 convolutions on a
quarter-width path, 1x1 identity path when widths differ, ReLU before each
conv); max-pooling between encoder groups and nearest-neighbour upsampling
between decoder groups. The Gumbel-softmax quantizer sits between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn


@dataclass
class DVAEConfig:
    architecture: Literal["dvae"] = "dvae"
    channels: int = 64  # width of the first group (group i has channels * 2^i)
    groups: int = 3  # f = 2^(groups - 1)
    blocks_per_group: int = 1
    z_channels: int = 64  # encoder output channels (the quantizer projects to logits)

    @property
    def downsample(self) -> int:
        return 2 ** (self.groups - 1)


class BottleneckBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, post_gain: float):
        super().__init__()
        hidden = max(c_out // 4, 1)
        self.id_path = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.res_path = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, c_out, 1),
        )
        self.post_gain = post_gain

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)


class DVAEEncoder(nn.Module):
    def __init__(self, c: DVAEConfig):
        super().__init__()
        gain = 1.0 / (c.groups * c.blocks_per_group) ** 2
        layers: list[nn.Module] = [nn.Conv2d(3, c.channels, 7, padding=3)]
        prev = c.channels
        for g in range(c.groups):
            width = c.channels * 2**g
            for _ in range(c.blocks_per_group):
                layers.append(BottleneckBlock(prev, width, gain))
                prev = width
            if g < c.groups - 1:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.ReLU(), nn.Conv2d(prev, c.z_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class DVAEDecoder(nn.Module):
    def __init__(self, c: DVAEConfig, out_channels: int = 3):
        super().__init__()
        gain = 1.0 / (c.groups * c.blocks_per_group) ** 2
        prev = c.channels * 2 ** (c.groups - 1)
        layers: list[nn.Module] = [nn.Conv2d(c.z_channels, prev, 1)]
        for g in reversed(range(c.groups)):
            width = c.channels * 2**g
            for _ in range(c.blocks_per_group):
                layers.append(BottleneckBlock(prev, width, gain))
                prev = width
            if g > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(prev, out_channels, 1)

    def forward(self, z):
        return self.conv_out(self.net(z))

    @property
    def last_layer(self) -> nn.Parameter:
        return self.conv_out.weight
