"""Binary spherical quantization (BSQ, Zhao et al. 2024, arXiv:2406.07548).

The projected vector is L2-normalized to u and quantized to sign(u) / sqrt(d),
a corner of the hypercube lying on the same unit sphere, so the quantization
error is bounded. Codes are the sign bits (LSB first). Training adds the same
entropy penalty as LFQ, computed for codes c in {-1/sqrt(d), +1/sqrt(d)}^d
(per-bit logits 4 u_i / (sqrt(d) T)), plus commitment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vqtool.quantizers.binary import BinaryQuantizer, check_power_of_two


@dataclass
class BSQConfig:
    kind: Literal["bsq"] = "bsq"
    codebook_size: int = 1 << 14  # 2^bits; the input is projected to `bits` channels if needed
    beta: float = 0.25  # commitment weight
    entropy_weight: float = 0.1  # weight of (per-sample entropy - gamma * codebook entropy)
    gamma: float = 1.0  # codebook-entropy weight inside the penalty
    temperature: float = 0.01  # soft-assignment temperature of the entropy terms
    entropy_group_bits: int = 0  # 0 = exact codebook entropy; g = sum over groups of g bits

    def __post_init__(self):
        check_power_of_two(self.codebook_size)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


class BSQ(BinaryQuantizer):
    kind = "bsq"

    def __init__(self, dim: int, config: BSQConfig | None = None):
        super().__init__(dim, config or BSQConfig())

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1)

    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.bits)
