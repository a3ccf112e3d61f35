"""Shared machinery of the sign quantizers LFQ and BSQ.

Each channel of the (optionally projected) input becomes one bit: bit i is
set where channel i is positive (zero maps to the negative side), and the
code index is sum_i bit_i 2^i (least significant bit first, as in
Open-MAGVIT2), or with `bit_order = "msb"` sum_i bit_i 2^(bits-1-i) (channel 0 the
most significant bit, as Show-o's MAGVIT-v2 numbers its codes). A subclass says how
input becomes the vectors that are signed (`_prepare`) and what value a set or cleared
bit stands for (`_scale`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.quantizers.base import (
    FlatResult,
    Quantizer,
    code_counts,
    straight_through,
)
from vqtool.quantizers.entropy import (
    bits_to_index,
    codebook_entropy,
    index_to_bits,
    per_sample_entropy,
)

LOG2 = 0.6931471805599453


def check_power_of_two(codebook_size: int) -> int:
    bits = codebook_size.bit_length() - 1
    if codebook_size < 2 or codebook_size != 1 << bits:
        raise ConfigError(f"codebook_size must be a power of two (2^bits), got {codebook_size}")
    return bits


@dataclass
class BinaryConfig:
    """Settings shared by LFQ and BSQ (each subclass fixes `kind`)."""

    kind: str = ""
    codebook_size: int = 1 << 14  # 2^bits; the input is projected to `bits` channels if needed
    beta: float = 0.25  # commitment weight on ||z - sg(q)||^2
    entropy_weight: float = 0.1  # weight of (per-sample entropy - gamma * codebook entropy)
    gamma: float = 1.0  # codebook-entropy (diversity) weight inside the penalty
    temperature: float = 0.01  # soft-assignment temperature of the entropy terms
    entropy_group_bits: int = 0  # 0 = exact codebook entropy; g = sum over groups of g bits
    bit_order: Literal["lsb", "msb"] = "lsb"  # channel 0 is the code's lowest bit, or highest

    def __post_init__(self):
        check_power_of_two(self.codebook_size)
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")


class BinaryQuantizer(Quantizer):
    """Sign quantization with commitment and entropy penalty; see LFQ and BSQ."""

    def __init__(self, dim: int, config):
        bits = check_power_of_two(config.codebook_size)
        super().__init__(dim, bits, config.codebook_size)
        self.config = config
        self.bits = bits
        projected = dim != bits
        self.project_in = nn.Linear(dim, bits) if projected else nn.Identity()
        self.project_out = nn.Linear(bits, dim) if projected else nn.Identity()

    def config_dict(self) -> dict:
        return asdict(self.config)

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Vectors whose signs are the bits (after projection)."""
        return z

    def _scale(self) -> float:
        """Magnitude of each quantized channel."""
        return 1.0

    def _bit_logits(self, x: torch.Tensor) -> torch.Tensor:
        # p(c | x) ~ exp(-||x - c||^2 / T) with c_i = +-s splits into per-bit logits 4 s x_i / T
        return 4.0 * self._scale() * x / self.config.temperature

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        x = self._prepare(self.project_in(z))  # (M, bits)
        positive = x > 0
        q = torch.where(positive, self._scale(), -self._scale())
        codes = bits_to_index(positive if self.config.bit_order == "lsb" else positive.flip(1))
        commit = F.mse_loss(x, q)
        loss = self.config.beta * commit
        counts = code_counts(codes, self.vocab_size)
        metrics = {"commit": commit.detach()}
        if self.training and self.config.entropy_weight > 0:
            logits = self._bit_logits(x)
            sample_h = per_sample_entropy(logits)
            codebook_h = codebook_entropy(logits, self.config.entropy_group_bits)
            gamma = self.config.gamma
            loss = loss + self.config.entropy_weight * (sample_h - gamma * codebook_h)
            metrics["sample_entropy_bits"] = sample_h.detach() / LOG2
            metrics["codebook_entropy_bits"] = codebook_h.detach() / LOG2
        quantized = self.project_out(straight_through(x, q))
        return FlatResult(quantized, codes, loss, counts, metrics)

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        bits = index_to_bits(codes, self.bits)
        if self.config.bit_order == "msb":
            bits = bits.flip(-1)
        q = torch.where(bits, self._scale(), -self._scale())
        return self.project_out(q)
