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

from vqtool.quantizers.base import FlatResult, Quantizer, code_counts


@dataclass
class GumbelConfig:
    kind: Literal["gumbel"] = "gumbel"
    codebook_size: int = 8192  # K
    temperature: float = 1.0  # starting Gumbel-softmax temperature
    min_temperature: float = 1.0 / 16  # final temperature (DALL-E anneals 1 -> 1/16)
    anneal_steps: int = 0  # steps over which tau decays exponentially; 0 = constant
    hard: bool = False  # one-hot samples with straight-through gradients
    kl_weight: float = 5e-4  # weight of KL(q(c|z) || uniform)

    def __post_init__(self):
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if not 0 < self.min_temperature <= self.temperature:
            raise ValueError("need 0 < min_temperature <= temperature")


class GumbelQuantizer(Quantizer):
    kind = "gumbel"

    def __init__(self, dim: int, config: GumbelConfig | None = None):
        config = config or GumbelConfig()
        super().__init__(dim, dim, config.codebook_size)
        self.config = config
        self.proj = nn.Linear(dim, config.codebook_size)  # logits over codes
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

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        logits = self.proj(z)  # (M, K)
        codes = logits.argmax(dim=1)
        if self.training:
            weights = F.gumbel_softmax(logits, tau=float(self.temperature), hard=self.config.hard)
            quantized = weights @ self.embed  # (M, dim)
        else:
            quantized = F.embedding(codes, self.embed)
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + math.log(self.vocab_size))).sum(1).mean()
        counts = code_counts(codes, self.vocab_size)
        metrics = {
            "kl": kl.detach(),
            "temperature": self.temperature.clone(),
        }
        return FlatResult(quantized, codes, self.config.kl_weight * kl, counts, metrics)

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embed)
