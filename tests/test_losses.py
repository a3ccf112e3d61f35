"""Losses and image metrics."""

import math

import torch

from vqtool.losses.gan import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from vqtool.losses.reconstruction import reconstruction_loss
from vqtool.metrics import psnr, ssim


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(8, 4)
    rec = (x @ layer).pow(2).mean()
    gan = (x @ layer).sum() * 3
    w = adaptive_weight(rec, gan, layer)
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, layer)[0]
    assert math.isclose(float(w), float(g_rec.norm() / (g_gan.norm() + 1e-4)), rel_tol=1e-5)


def test_hinge_and_non_saturating_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(discriminator_loss("hinge", real, fake)) == 0.5 * (0.25 + 0.5)
    assert float(generator_loss("hinge", fake)) == 1.0
    ns = discriminator_loss("non_saturating", real, fake)
    assert ns > 0 and float(generator_loss("non_saturating", torch.tensor([100.0]))) < 1e-6


def test_patch_discriminator_scores_patches():
    d = PatchDiscriminator(channels=8, layers=2)
    assert d(torch.randn(2, 3, 32, 32)).shape[:2] == (2, 1)


def test_logit_laplace_prefers_the_right_location():
    target = torch.rand(2, 3, 8, 8) * 2 - 1
    x = (target + 1) / 2 * 0.8 + 0.1
    good = torch.cat([torch.logit(x), torch.full_like(x, -3.0)], 1)
    bad = torch.cat([torch.zeros_like(x), torch.full_like(x, -3.0)], 1)
    lg = reconstruction_loss("logit_laplace", good, target)
    lb = reconstruction_loss("logit_laplace", bad, target)
    assert torch.isfinite(lg) and lg < lb


def test_psnr_and_ssim():
    a = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(a, a), torch.ones(2))
    b = (a + 0.1).clamp(0, 1)
    mse = (a - b).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(a, b), 10 * torch.log10(1 / mse))
    assert (ssim(a, torch.rand(2, 3, 16, 16)) < 0.5).all()
