"""Discriminators and GAN terms: the PatchGAN discriminator (Isola et al.
2017, as used by VQGAN), the StyleGAN2 discriminator ViT-VQGAN uses (Karras et
al. 2020, arXiv:1912.04958; Yu et al. 2021), hinge or non-saturating losses, and
VQGAN's adaptive weight lambda = ||grad L_rec|| / (||grad L_GAN|| + delta) at the
decoder's last layer.

GroupNorm stands in for BatchNorm in the PatchGAN so that it behaves the same
under DistributedDataParallel and at batch size 1."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.layers import group_norm


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(1, layers + 1):
            nxt = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            seq += [
                nn.Conv2d(width, nxt, 4, stride, 1, bias=False),
                group_norm(nxt),
                nn.LeakyReLU(0.2),
            ]
            width = nxt
        seq.append(nn.Conv2d(width, 1, 4, 1, 1))  # one logit per patch
        self.net = nn.Sequential(*seq)

    def forward(self, x):
        return self.net(x)


class Blur(nn.Module):
    """The [1, 3, 3, 1] binomial low-pass filter StyleGAN applies before striding."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = (k[:, None] * k[None, :]) / 64
        self.register_buffer("kernel", k.expand(channels, 1, 4, 4).contiguous(), persistent=False)
        self.channels = channels

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 2, 1, 2), mode="replicate"), self.kernel, groups=self.channels)


class StyleResBlock(nn.Module):
    """conv3x3 -> blur -> stride-2 conv3x3 on the main path, blur -> stride-2 conv1x1 on the
    skip, summed and scaled by 1/sqrt(2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.blur, self.skip_blur = Blur(c_in), Blur(c_in)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.conv2(self.blur(h)), 0.2)
        return (h + self.skip(self.skip_blur(x))) / math.sqrt(2)


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2's residual discriminator: fromRGB, residual blocks halving the
    resolution down to 4x4 (width doubling up to 8x `channels`), minibatch standard
    deviation, conv, and two linear layers to one logit per image. Equalized learning
    rate is left out (AdamW with the tokenizer's learning rate trains it)."""

    def __init__(
        self, channels: int = 32, image_size: int = 64, in_channels: int = 3, group: int = 4
    ):
        super().__init__()
        self.group = group
        self.from_rgb = nn.Conv2d(in_channels, channels, 1)
        blocks, width, size = [], channels, image_size
        while size > 4:
            nxt = min(width * 2, channels * 8)
            blocks.append(StyleResBlock(width, nxt))
            width, size = nxt, (size + 1) // 2
        self.blocks = nn.Sequential(*blocks)
        self.conv = nn.Conv2d(width + 1, width, 3, padding=1)
        self.fc = nn.Linear(width * 16, width)
        self.out = nn.Linear(width, 1)

    def minibatch_std(self, x):
        b, c, h, w = x.shape
        g = math.gcd(b, self.group)
        y = x.float().reshape(g, -1, c, h, w)
        std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b / g,)
        std = std.to(x.dtype).reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std], 1)

    def forward(self, x):
        h = self.blocks(F.leaky_relu(self.from_rgb(x), 0.2))
        h = F.adaptive_avg_pool2d(h, 4)
        h = F.leaky_relu(self.conv(self.minibatch_std(h)), 0.2)
        return self.out(F.leaky_relu(self.fc(h.flatten(1)), 0.2))  # (B, 1)


def build_discriminator(kind: str, channels: int, layers: int, image_size: int) -> nn.Module:
    if kind == "stylegan":
        return StyleGANDiscriminator(channels, image_size)
    return PatchDiscriminator(channels, layers)


def discriminator_loss(
    kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> torch.Tensor:
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    delta: float = 1e-4,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """VQGAN's balance between reconstruction and adversarial gradients."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_gan,) = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0.0, max_weight).detach()
