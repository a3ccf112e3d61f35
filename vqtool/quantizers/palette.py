"""Colour palette quantization (iGPT, Chen et al. 2020).

Each RGB pixel becomes the index of its nearest palette colour (512 colours by
default). The palette is fitted on data with k-means: during training the
first batch seeds it (Lloyd iterations) and every later batch refines it
with mini-batch k-means (each colour moves toward its pixels' mean at rate
1 / pixels it has seen), so it fits a stream of any length. `fit` runs plain
k-means on a tensor of pixels. Pixels are in whatever range the model uses
(vqtool's default is [-1, 1]).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from vqtool.errors import ConfigError
from vqtool.quantizers.base import (
    FlatResult,
    Quantizer,
    code_counts,
    straight_through,
)
from vqtool.quantizers.kmeans import kmeans, nearest
from vqtool.runtime import all_reduce_sum_, broadcast_


@dataclass
class PaletteConfig:
    kind: Literal["palette"] = "palette"
    num_colors: int = 512  # palette size K
    kmeans_iters: int = 20  # Lloyd iterations for the first fit

    def __post_init__(self):
        if self.num_colors < 2:
            raise ConfigError(f"num_colors must be at least 2, got {self.num_colors}")


class PaletteQuantizer(Quantizer):
    kind = "palette"

    def __init__(self, dim: int = 3, config: PaletteConfig | None = None):
        config = config or PaletteConfig()
        if dim != 3:
            raise ConfigError(f"the palette quantizer works on RGB pixels (dim 3), got dim {dim}")
        super().__init__(3, 3, config.num_colors)
        self.config = config
        self.register_buffer("palette", torch.rand(config.num_colors, 3) * 2 - 1)
        self.register_buffer("seen", torch.zeros(config.num_colors))  # pixels per colour
        self.register_buffer("initialized", torch.tensor(False))

    def config_dict(self) -> dict:
        return asdict(self.config)

    @torch.no_grad()
    def fit(self, pixels: torch.Tensor) -> None:
        """k-means on `(M, 3)` pixels or `(B, 3, H, W)` images; replaces the palette."""
        if pixels.ndim == 4:
            pixels = pixels.permute(0, 2, 3, 1).reshape(-1, 3)
        centroids, counts = kmeans(pixels.float(), self.vocab_size, self.config.kmeans_iters)
        self.palette.copy_(broadcast_(centroids))
        self.seen.copy_(broadcast_(counts))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _refine(self, pixels: torch.Tensor, codes: torch.Tensor) -> None:
        k = self.vocab_size
        stats = torch.zeros(k, 4, device=pixels.device)  # [count | r g b sums]
        stats[:, 0] = torch.bincount(codes, minlength=k).float()
        stats[:, 1:].index_add_(0, codes, pixels)
        all_reduce_sum_(stats)
        counts, sums = stats[:, 0], stats[:, 1:]
        self.seen.add_(counts)
        hit = counts > 0
        rate = (counts[hit] / self.seen[hit]).unsqueeze(1)
        mean = sums[hit] / counts[hit].unsqueeze(1)
        self.palette[hit] += rate * (mean - self.palette[hit])

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        if self.training and not bool(self.initialized):
            self.fit(z.detach())
        codes = nearest(z.detach(), self.palette)
        if self.training:
            self._refine(z.detach(), codes)
        q = self.palette[codes]
        error = (z.detach() - q).pow(2).mean()
        counts = code_counts(codes, self.vocab_size)
        metrics = {"error": error}
        return FlatResult(straight_through(z, q), codes, z.new_zeros(()), counts, metrics)

    @torch.no_grad()
    def code_tables(self, learned: bool = False) -> dict[str, torch.Tensor]:
        return {"palette": self.palette} if learned else super().code_tables()

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        return self.palette[codes]
