"""Lookup-free quantization (MAGVIT-v2, Yu et al. 2023, arXiv:2310.05737).

Each of d = log2(K) channels is quantized to its sign in {-1, +1}; the code is
the integer whose bit i is channel i's sign (LSB first). Training adds the
entropy penalty  H[p(c|z)] (per sample, pushes confident codes) minus
gamma * H[E_z p(c|z)] (batch codebook entropy, pushes even usage), plus a
commitment term. Both entropies are exact; see `vqtool.quantizers.entropy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vqtool.quantizers.binary import BinaryQuantizer, check_power_of_two


@dataclass
class LFQConfig:
    kind: Literal["lfq"] = "lfq"
    codebook_size: int = 1 << 14  # 2^bits; the input is projected to `bits` channels if needed
    beta: float = 0.25  # commitment weight on ||z - sg(q)||^2
    entropy_weight: float = 0.1  # weight of (per-sample entropy - gamma * codebook entropy)
    gamma: float = 1.0  # codebook-entropy (diversity) weight inside the penalty
    temperature: float = 0.01  # soft-assignment temperature of the entropy terms
    entropy_group_bits: int = 0  # 0 = exact codebook entropy; g = sum over groups of g bits

    def __post_init__(self):
        check_power_of_two(self.codebook_size)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


class LFQ(BinaryQuantizer):
    kind = "lfq"

    def __init__(self, dim: int, config: LFQConfig | None = None):
        super().__init__(dim, config or LFQConfig())
