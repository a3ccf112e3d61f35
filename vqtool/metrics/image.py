"""Image quality: PSNR and SSIM (Wang et al. 2004, 11x11 Gaussian window,
sigma 1.5, per channel, averaged) for images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for (B, C, H, W) tensors in [0, 1]."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM for (B, C, H, W) tensors in [0, 1]."""
    a, b = a.float(), b.float()
    c = a.shape[1]
    window = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(window, dtype=torch.float32, device=a.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    rows = g.view(1, 1, 1, window).expand(c, 1, 1, window)
    cols = g.view(1, 1, window, 1).expand(c, 1, window, 1)

    def blur(x):  # the 2-D Gaussian as two 1-D passes (valid region)
        return F.conv2d(F.conv2d(x, rows, groups=c), cols, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.flatten(1).mean(1)
