"""Finite scalar quantization (FSQ, Mentzer et al. 2023, arXiv:2309.15505).

Channel i is bounded with a shifted tanh to L_i levels and rounded with a
straight-through estimator; the implicit codebook is the product of the
per-channel level sets (prod L_i codes), and code <-> index is the mixed-radix
bijection index = sum_i digit_i * prod_{j<i} L_j. No codebook, no auxiliary loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn

from vqtool.errors import ConfigError
from vqtool.quantizers.base import FlatResult, Quantizer, code_counts, round_ste


@dataclass
class FSQConfig:
    kind: Literal["fsq"] = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # levels per channel
    eps: float = 1e-3  # keeps tanh strictly inside the outermost levels

    def __post_init__(self):
        if not self.levels or any(level < 2 for level in self.levels):
            raise ConfigError(
                f"levels must be a non-empty list of integers >= 2, got {self.levels}"
            )


class FSQ(Quantizer):
    kind = "fsq"

    def __init__(self, dim: int, config: FSQConfig | None = None):
        config = config or FSQConfig()
        d = len(config.levels)
        super().__init__(dim, d, math.prod(config.levels))
        self.config = config
        projected = dim != d
        self.project_in = nn.Linear(dim, d) if projected else nn.Identity()
        self.project_out = nn.Linear(d, dim) if projected else nn.Identity()
        levels = torch.tensor(config.levels, dtype=torch.long)
        basis = torch.cumprod(torch.tensor([1] + config.levels[:-1]), 0)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("half_width", (levels // 2).float(), persistent=False)
        # bound() constants: tanh scale, and the shift that centres even level counts
        half = (levels.float() - 1) * (1 + config.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        self.register_buffer("bound_half", half, persistent=False)
        self.register_buffer("bound_offset", offset, persistent=False)
        self.register_buffer("bound_shift", torch.atanh(offset / half), persistent=False)

    def config_dict(self) -> dict:
        return asdict(self.config)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into (-L/2, L/2), shifted by 1/2 for even L so rounding
        gives exactly L integer values."""
        return torch.tanh(z + self.bound_shift) * self.bound_half - self.bound_offset

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        z = self.project_in(z)  # (M, d)
        rounded = round_ste(self.bound(z))  # integers in [-L//2, (L-1)//2]
        codes = self.digits_to_index(rounded.detach().long() + self.half_width.long())
        quantized = self.project_out(rounded / self.half_width)  # in [-1, 1]
        counts = code_counts(codes, self.vocab_size)
        loss = z.new_zeros(())
        return FlatResult(quantized, codes, loss, counts)

    def digits_to_index(self, digits: torch.Tensor) -> torch.Tensor:
        """`(M, d)` digits in [0, L_i) -> `(M,)` indices."""
        return (digits * self.basis).sum(-1)

    def index_to_digits(self, index: torch.Tensor) -> torch.Tensor:
        """`(M,)` indices -> `(M, d)` digits."""
        return (index.unsqueeze(-1) // self.basis) % self.levels

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        digits = self.index_to_digits(codes).float()
        return self.project_out((digits - self.half_width) / self.half_width)
