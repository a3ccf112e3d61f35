"""Gumbel-softmax quantization (the DALL-E dVAE, Ramesh et al. 2021, arXiv:2102.12092).

A linear map turns each input vector into logits over K codes; training mixes
codewords with a Gumbel-softmax sample at temperature tau (soft, or hard
one-hot with straight-through gradients), and adds a KL term to the uniform
prior. The temperature anneals exponentially from `temperature` to
`min_temperature` over `anneal_steps` training steps. Outside training the
code is the argmax of the logits (deterministic).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.quantizers.base import FlatResult, Quantizer, QuantizerOutput, code_counts
from vqtool.quantizers.kmeans import kmeans, restart_dead_codes
from vqtool.runtime import all_reduce_sum_, broadcast_


@dataclass
class GumbelConfig:
    kind: Literal["gumbel"] = "gumbel"
    codebook_size: int = 8192  # K
    temperature: float = 1.0  # starting Gumbel-softmax temperature
    min_temperature: float = 1.0 / 16  # final temperature (DALL-E anneals 1 -> 1/16)
    anneal_steps: int = 0  # steps over which tau decays exponentially; 0 = constant
    hard: bool = False  # one-hot samples with straight-through gradients
    kl_weight: float = 5e-4  # weight of KL(q(c|z) || uniform)
    # "linear": logits = W z + b (DALL-E, taming). "distance": logits = -||z - e_k||^2 / s
    # over the codes e_k the decoder receives, started as k-means centroids of the first
    # training batch (s: their mean squared distance to the nearest code then), with codes
    # that no position chose for `restart_after` steps re-seeded from batch vectors, as VQ
    # does. A fresh encoder's outputs are nearly the same everywhere (one direction holds
    # most of their variance), so linear logits give almost every position the same argmax
    # and short runs collapse onto a handful of codes; distance logits start spread over
    # the data and keep every code in reach.
    logits: Literal["linear", "distance"] = "linear"
    restart_after: int = 0  # "distance": re-seed codes unused this many steps; 0 = never
    kmeans_iters: int = 10  # "distance": Lloyd iterations of the initialisation

    def __post_init__(self):
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if not 0 < self.min_temperature <= self.temperature:
            raise ConfigError("need 0 < min_temperature <= temperature")


class GumbelQuantizer(Quantizer):
    kind = "gumbel"

    def __init__(self, dim: int, config: GumbelConfig | None = None):
        config = config or GumbelConfig()
        super().__init__(dim, dim, config.codebook_size)
        self.config = config
        if config.logits == "linear":
            self.proj = nn.Linear(dim, config.codebook_size)  # logits over codes
        else:
            self.register_buffer("initialized", torch.tensor(False))
            self.register_buffer("scale", torch.tensor(1.0))
            self.register_buffer("unused_steps", torch.zeros(config.codebook_size))
        self._grid: tuple[int, int, int] | None = None  # (B, H, W) while forward runs
        self.embed = nn.Parameter(torch.randn(config.codebook_size, dim) / math.sqrt(dim))
        self.register_buffer("temperature", torch.tensor(config.temperature))

    def config_dict(self) -> dict:
        return asdict(self.config)

    def anneal(self, step: int) -> None:
        c = self.config
        if c.anneal_steps <= 0:
            return
        frac = min(step / c.anneal_steps, 1.0)
        self.temperature.fill_(c.temperature * (c.min_temperature / c.temperature) ** frac)

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.logits == "linear":
            if self._grid is None:
                return self.proj(z)
            # Over a (B, C, H, W) map the logits come from a 1x1 convolution, as taming's
            # Gumbel quantizer computes them: a matrix product over the flattened vectors
            # sums in another order (differences up to ~4e-3) and flips near-tie argmaxes.
            b, h, w = self._grid
            maps = z.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            weight = self.proj.weight
            logits = F.conv2d(maps, weight.view(*weight.shape, 1, 1), self.proj.bias)
            return logits.permute(0, 2, 3, 1).reshape(-1, self.vocab_size)
        if self.training and not bool(self.initialized):
            self._init_codes(z.detach())
        e = self.embed
        neg_sq = 2 * z @ e.t() - z.pow(2).sum(1, keepdim=True) - e.pow(2).sum(1)
        return neg_sq * self.scale

    @torch.no_grad()
    def _init_codes(self, z: torch.Tensor) -> None:
        centroids, _ = kmeans(z, self.vocab_size, self.config.kmeans_iters)
        self.embed.data.copy_(broadcast_(centroids))
        d = torch.cdist(z, self.embed).min(1).values.pow(2).mean()
        self.scale.fill_(float(1.0 / d.clamp_min(1e-12)))
        broadcast_(self.scale)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        counts = all_reduce_sum_(torch.bincount(codes, minlength=self.vocab_size).float())
        restart = restart_dead_codes(
            self.unused_steps,
            counts,
            self.config.restart_after,
            z,
            lambda: (z - self.embed[codes]).pow(2).sum(1),
        )
        if restart is not None:
            dead, fresh = restart
            self.embed.data[dead] = fresh

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self._grid = (z.shape[0], *z.shape[2:]) if z.ndim == 4 else None
        try:
            return super().forward(z)
        finally:
            self._grid = None

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        logits = self._logits(z)  # (M, K)
        codes = logits.argmax(dim=1)
        if self.training:
            weights = F.gumbel_softmax(logits, tau=float(self.temperature), hard=self.config.hard)
            quantized = weights @ self.embed  # (M, dim)
            if self.config.logits == "distance" and self.config.restart_after:
                self._restart_dead(z.detach(), codes)
        else:
            quantized = F.embedding(codes, self.embed)
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + math.log(self.vocab_size))).sum(1).mean()
        loss = self.config.kl_weight * kl
        metrics = {"kl": kl.detach(), "temperature": self.temperature.clone()}
        counts = code_counts(codes, self.vocab_size)
        return FlatResult(quantized, codes, loss, counts, metrics)

    @torch.no_grad()
    def code_tables(self, learned: bool = False) -> dict[str, torch.Tensor]:
        return {"codebook": self.embed} if learned else super().code_tables()

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)
