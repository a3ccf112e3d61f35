"""Losses and image metrics."""

import math
from pathlib import Path

import pytest
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


@pytest.mark.slow
def test_stylegan_discriminator_trains_beside_the_tokenizer(image_shards, tmp_path):
    import json

    from vqtool.losses.gan import StyleGANDiscriminator
    from vqtool.training import load_recipe, train_tokenizer

    d = StyleGANDiscriminator(8, 32)
    assert d(torch.randn(6, 3, 32, 32)).shape == (6, 1)  # one logit per image
    recipe = load_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "vqgan.toml",
        [
            "data.image_size=32",
            "data.batch_size=4",
            "data.workers=0",
            "train.steps=6",
            "train.log_every=1",
            "loss.gan_start=0",
            "loss.discriminator=stylegan",
            "loss.disc_channels=8",
        ],
    )
    result = train_tokenizer(recipe, image_shards[:2], tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    d_losses = [x["disc_loss"] for x in logs if "disc_loss" in x]
    assert len(d_losses) == 6 and len(set(d_losses)) > 3, d_losses  # it trains, its loss moves
    assert all(0 < x["gan_weight"] for x in logs)
    assert result.steps == 6
