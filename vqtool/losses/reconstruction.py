"""Pixel reconstruction losses: L1, L2, and DALL-E's logit-Laplace likelihood.

Targets are in the network's pixel range; the logit-Laplace loss maps them to
[0, 1], squashes into (eps, 1 - eps) and scores them under a Laplace density on
the logit scale whose location and log-scale are the decoder's 6 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vqtool.errors import ConfigError
from vqtool.models.tokenizer import LAPLACE_EPS


def reconstruction_loss(
    kind: str, output: torch.Tensor, target: torch.Tensor, pixel_range: str = "-1,1"
) -> torch.Tensor:
    if kind == "l1":
        return F.l1_loss(output, target)
    if kind == "l2":
        return F.mse_loss(output, target)
    if kind == "logit_laplace":
        return logit_laplace_nll(output, target, pixel_range)
    raise ConfigError(f"loss.reconstruction: {kind!r} is not one of l1, l2, logit_laplace")


def logit_laplace_nll(output: torch.Tensor, target: torch.Tensor, pixel_range: str) -> torch.Tensor:
    """Mean negative log-likelihood per subpixel (nats)."""
    x = (target + 1) / 2 if pixel_range == "-1,1" else target
    x = (1 - 2 * LAPLACE_EPS) * x.float() + LAPLACE_EPS  # into (eps, 1 - eps)
    mu, log_b = output[:, :3].float(), output[:, 3:6].float().clamp(-7.0, 7.0)
    y = torch.logit(x)
    # log density of x: -log(2 b) - |logit(x) - mu| / b - log(x (1 - x))
    nll = log_b + torch.log(2 * x * (1 - x)) + (y - mu).abs() * torch.exp(-log_b)
    return nll.mean()
