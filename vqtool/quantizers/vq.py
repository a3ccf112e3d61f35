"""Vector quantization (VQ-VAE, van den Oord et al. 2017, arXiv:1711.00937).

Nearest-codeword lookup with a straight-through estimator and commitment
weight beta. The codebook learns either through the codebook loss
||sg(z) - e||^2 or through exponential moving averages of assigned vectors
(Laplace-smoothed counts, as in the VQ-VAE appendix). Training-time helpers:
k-means initialisation from the first batch, restart of codes unused for
`restart_after` steps from batch vectors (drawn in proportion to their
quantization error), a factorized low-dimensional lookup
(project `dim -> code_dim -> dim`) and L2-normalized (cosine) codes as in
ViT-VQGAN (Yu et al. 2021, arXiv:2110.04627).

Under torch.distributed the EMA counts and sums are all-reduced, and k-means
centroids and restarted codes are broadcast from rank 0, so every rank keeps
the same codebook.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.quantizers.base import FlatResult, Quantizer, straight_through
from vqtool.quantizers.kmeans import kmeans, nearest, nearest_exact, restart_dead_codes
from vqtool.runtime import all_reduce_sum_, broadcast_


@dataclass
class VQConfig:
    kind: Literal["vq"] = "vq"
    codebook_size: int = 1024  # K, number of codewords
    code_dim: int | None = None  # lookup dimension; None = input dim, smaller = factorized
    beta: float = 0.25  # commitment weight on ||z - sg(e)||^2
    ema_decay: float | None = 0.99  # EMA codebook updates; None = learned codebook + codebook loss
    ema_eps: float = 1e-5  # Laplace smoothing of the EMA counts
    cosine: bool = False  # L2-normalize inputs and codes (ViT-VQGAN)
    kmeans_init: bool = True  # k-means on the first training batch
    kmeans_iters: int = 10  # Lloyd iterations for that initialisation
    restart_after: int = 0  # re-seed codes unused for this many training steps; 0 = never
    # distance arithmetic: "fast" (||e||^2 - 2 z.e, or the dot product for cosine codes);
    # "expanded" ||z||^2 + ||e||^2 - 2 einsum(z, e) as taming and LlamaGen compute it;
    # "addmm" addmm(||z||^2 + ||e||^2, z, e^T, alpha=-2) as the MaskGIT port does;
    # "ibq" the largest softmax(z.e) over the codes, as index backpropagation quantization
    # (IBQ: Emu3.5's tokenizer) picks its code: the largest dot product, not the nearest.
    # The last three reproduce those checkpoints' tokens bit for bit, near-ties included.
    distance: Literal["fast", "expanded", "addmm", "ibq"] = "fast"

    def __post_init__(self):
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in (0, 1) or be unset, got {self.ema_decay}")
        if self.code_dim is not None and self.code_dim < 1:
            raise ConfigError(f"code_dim must be positive, got {self.code_dim}")
        if self.restart_after < 0:
            raise ConfigError(f"restart_after must be >= 0, got {self.restart_after}")


class VectorQuantizer(Quantizer):
    kind = "vq"

    def __init__(self, dim: int, config: VQConfig | None = None):
        config = config or VQConfig()
        code_dim = config.code_dim or dim
        super().__init__(dim, code_dim, config.codebook_size)
        self.config = config
        factorized = code_dim != dim
        self.project_in = nn.Linear(dim, code_dim) if factorized else nn.Identity()
        self.project_out = nn.Linear(code_dim, dim) if factorized else nn.Identity()

        k = config.codebook_size
        init = torch.randn(k, code_dim)
        init = F.normalize(init, dim=1) if config.cosine else init.uniform_(-1.0 / k, 1.0 / k)
        if self.use_ema:
            self.register_buffer("embed", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embed = nn.Parameter(init)
        self.register_buffer("initialized", torch.tensor(not config.kmeans_init))
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))

    @property
    def use_ema(self) -> bool:
        return self.config.ema_decay is not None

    def config_dict(self) -> dict:
        return asdict(self.config)

    def codebook(self) -> torch.Tensor:
        """The (K, code_dim) codewords as used for lookup."""
        return F.normalize(self.embed, dim=1) if self.config.cosine else self.embed

    # -- forward ---------------------------------------------------------------
    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        z = self.project_in(z)  # (M, code_dim)
        if self.config.cosine:
            z = F.normalize(z, dim=1)
        if self.training and not bool(self.initialized):
            self._kmeans_init(z.detach())
        codes = self._nearest(z.detach())  # (M,)
        q = F.embedding(codes, self.codebook())  # (M, code_dim); grads reach a learned codebook

        commit = F.mse_loss(z, q.detach())
        loss = self.config.beta * commit
        if not self.use_ema:
            loss = loss + F.mse_loss(q, z.detach())
        counts = torch.bincount(codes, minlength=self.vocab_size)
        if self.training:
            self.update_codebook(z.detach(), codes, counts)

        quantized = self.project_out(straight_through(z, q))
        metrics = {"commit": commit.detach()}
        return FlatResult(quantized, codes, loss, counts, metrics)

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.distance == "fast":
            return nearest(z, self.codebook().detach(), self.config.cosine)
        return nearest_exact(z, self.codebook().detach(), self.config.distance)

    @torch.no_grad()
    def code_tables(self, learned: bool = False) -> dict[str, torch.Tensor]:
        return {"codebook": self.codebook()} if learned else super().code_tables()

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.embedding(codes, self.codebook()))

    # -- codebook maintenance (training only) --------------------------------------
    @torch.no_grad()
    def update_codebook(
        self, z: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor | None = None
    ) -> None:
        """EMA step and dead-code restart for vectors `z` (M, code_dim) assigned to `codes`
        (`counts`: their histogram, if already at hand).

        Exposed so that residual quantization can pool the vectors of every
        depth that share one codebook into a single update.
        """
        k = self.vocab_size
        stats = torch.zeros(k, 1 + self.code_dim, device=z.device)  # [count | sum]
        stats[:, 0] = torch.bincount(codes, minlength=k) if counts is None else counts
        if self.use_ema:
            stats[:, 1:].index_add_(0, codes, z)
        all_reduce_sum_(stats)  # one collective for counts and sums
        counts, sums = stats[:, 0], stats[:, 1:]
        if self.use_ema:
            decay = self.config.ema_decay
            self.ema_count.lerp_(counts, 1 - decay)
            self.ema_sum.lerp_(sums, 1 - decay)
            n = self.ema_count.sum()
            eps = self.config.ema_eps
            smoothed = (self.ema_count + eps) / (n + k * eps) * n
            torch.div(self.ema_sum, smoothed.unsqueeze(1), out=self.embed)
        if self.config.restart_after:
            self._restart_dead(z, codes, counts)

    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor) -> None:
        self.set_codebook(*kmeans(z, self.vocab_size, self.config.kmeans_iters, self.config.cosine))

    @torch.no_grad()
    def set_codebook(self, centroids: torch.Tensor, counts: torch.Tensor) -> None:
        """Replace the codewords (rank 0's copy wins) and seed the EMA state from `counts`."""
        broadcast_(centroids)
        broadcast_(counts)
        self.embed.data.copy_(centroids)
        if self.use_ema:
            self.ema_count.copy_(counts.clamp_min(1.0))
            self.ema_sum.copy_(centroids * self.ema_count.unsqueeze(1))
        self.initialized.fill_(True)

    @torch.no_grad()
    def restart_unused(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """Dead-code restarts for a caller that chose the codes itself (VAR's pyramid):
        `z` (M, code_dim) the vectors quantized this step, `codes` (M,) their codes."""
        if self.config.restart_after > 0:
            self._restart_dead(z, codes, torch.bincount(codes, minlength=self.vocab_size))

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        restart = restart_dead_codes(
            self.unused_steps,
            counts,
            self.config.restart_after,
            z,
            lambda: (z - self.codebook()[codes]).pow(2).sum(1),
        )
        if restart is None:
            return
        dead, fresh = restart
        self.embed.data[dead] = fresh
        if self.use_ema:
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
