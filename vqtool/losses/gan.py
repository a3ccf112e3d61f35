"""PatchGAN discriminator (Isola et al. 2017, as used by VQGAN) and the GAN
terms: hinge or non-saturating losses, and VQGAN's adaptive weight
lambda = ||grad L_rec|| / (||grad L_GAN|| + delta) at the decoder's last layer.

GroupNorm stands in for BatchNorm so that the discriminator behaves the same
under DistributedDataParallel and at batch size 1."""

from __future__ import annotations

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
