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

from vqtool.quantizers.binary import BinaryConfig, BinaryQuantizer


@dataclass
class BSQConfig(BinaryConfig):
    kind: Literal["bsq"] = "bsq"


class BSQ(BinaryQuantizer):
    kind = "bsq"

    def __init__(self, dim: int, config: BSQConfig | None = None):
        super().__init__(dim, config or BSQConfig())

    def _prepare(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1)

    def _scale(self) -> float:
        return 1.0 / math.sqrt(self.bits)
