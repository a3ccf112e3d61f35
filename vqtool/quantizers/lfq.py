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

from vqtool.quantizers.binary import BinaryConfig, BinaryQuantizer


@dataclass
class LFQConfig(BinaryConfig):
    kind: Literal["lfq"] = "lfq"


class LFQ(BinaryQuantizer):
    kind = "lfq"

    def __init__(self, dim: int, config: LFQConfig | None = None):
        super().__init__(dim, config or LFQConfig())
