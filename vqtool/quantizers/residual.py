"""Residual quantization (RQ-VAE, Lee et al. 2022, arXiv:2203.01941).

A vector is coded by D codes: r_0 = z, k_d = nearest(r_{d-1}), r_d = r_{d-1} - e_{k_d},
and the quantized vector is the partial sum of the chosen codewords. Codebooks
are shared across depths (the paper's default) or one per depth; each is a
`VectorQuantizer` (EMA or codebook loss, k-means initialisation, restarts).
The commitment loss sums ||z - sg(partial sum at depth d)||^2 over depths.
At the first training batch the codebooks are initialised by k-means on the
residuals of each depth in turn (a shared codebook gets K/D codes per depth),
so the error falls with depth from the start.
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
from vqtool.quantizers.kmeans import kmeans, nearest
from vqtool.quantizers.vq import VectorQuantizer, VQConfig


@dataclass
class RQConfig:
    kind: Literal["rq"] = "rq"
    codebook_size: int = 1024  # K per codebook
    depth: int = 4  # codes per position
    shared_codebook: bool = True  # one codebook for all depths, or one per depth
    beta: float = 0.25  # commitment weight
    ema_decay: float | None = 0.99  # EMA codebook updates; None = codebook loss
    kmeans_init: bool = True  # k-means on the first training batch's residuals
    kmeans_iters: int = 10
    restart_after: int = 0  # re-seed codes unused this many steps; 0 = never

    def __post_init__(self):
        if self.depth < 1:
            raise ConfigError(f"depth must be at least 1, got {self.depth}")

    def level_config(self) -> VQConfig:
        return VQConfig(
            codebook_size=self.codebook_size,
            beta=self.beta,
            ema_decay=self.ema_decay,
            kmeans_init=self.kmeans_init,
            kmeans_iters=self.kmeans_iters,
            restart_after=self.restart_after,
        )


class ResidualQuantizer(Quantizer):
    kind = "rq"

    def __init__(self, dim: int, config: RQConfig | None = None):
        config = config or RQConfig()
        super().__init__(dim, dim, config.codebook_size, depth=config.depth)
        self.config = config
        n_books = 1 if config.shared_codebook else config.depth
        self.levels = nn.ModuleList(
            VectorQuantizer(dim, config.level_config()) for _ in range(n_books)
        )

    def config_dict(self) -> dict:
        return asdict(self.config)

    def level(self, d: int) -> VectorQuantizer:
        return self.levels[0 if self.config.shared_codebook else d]

    def quantize_flat(self, z: torch.Tensor) -> FlatResult:
        residual = z
        total = torch.zeros_like(z)
        codes, commit, book_loss = [], z.new_zeros(()), z.new_zeros(())
        pooled: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        metrics = {}
        for d in range(self.depth):
            vq = self.level(d)
            if self.training and not bool(vq.initialized):
                self._kmeans_init(residual.detach(), d)
            k = nearest(residual.detach(), vq.codebook().detach())  # (M,)
            q = F.embedding(k, vq.codebook())  # (M, dim)
            if not vq.use_ema:
                book_loss = book_loss + F.mse_loss(q, residual.detach())
            total = total + q
            err = F.mse_loss(z, total.detach())
            commit = commit + err
            metrics[f"error_depth{d}"] = err.detach()
            pooled.setdefault(id(vq), []).append((residual.detach(), k))
            residual = residual - q.detach()
            codes.append(k)
        if self.training:
            for vq in {id(v): v for v in self.levels}.values():
                parts = pooled.get(id(vq), [])
                if parts:
                    vq.update_codebook(
                        torch.cat([r for r, _ in parts]), torch.cat([k for _, k in parts])
                    )
        codes_t = torch.stack(codes, dim=1)  # (M, D)
        counts = code_counts(codes_t, self.vocab_size)
        loss = self.config.beta * commit + book_loss
        return FlatResult(straight_through(z, total), codes_t, loss, counts, metrics)

    @torch.no_grad()
    def _kmeans_init(self, residual: torch.Tensor, first_depth: int) -> None:
        """k-means on the residuals each codebook will see, depth by depth.

        A shared codebook gets K/D codes fitted at each depth (coarse vectors for
        depth 0, ever finer residuals after), so it covers every scale it serves.
        """
        c = self.config
        if c.shared_codebook:
            sizes = [len(part) for part in torch.arange(c.codebook_size).chunk(c.depth)]
        else:
            sizes = [c.codebook_size] * c.depth
        parts, counts = [], []
        for d in range(first_depth, c.depth):
            if not c.shared_codebook and bool(self.level(d).initialized):
                break
            centroids, n = kmeans(residual, sizes[d], c.kmeans_iters)
            residual = residual - centroids[nearest(residual, centroids)]
            if c.shared_codebook:
                parts.append(centroids)
                counts.append(n)
            else:
                self.level(d).set_codebook(centroids, n)
        if c.shared_codebook:
            self.levels[0].set_codebook(torch.cat(parts), torch.cat(counts))

    @torch.no_grad()
    def code_tables(self, learned: bool = False) -> dict[str, torch.Tensor]:
        """One table shared by every depth, or one per depth (`depthD`)."""
        shared = self.config.shared_codebook
        if learned:
            if shared:
                return {"codebook (shared by all depths)": self.levels[0].codebook()}
            return {f"codebook depth {d}": vq.codebook() for d, vq in enumerate(self.levels)}
        codes = torch.arange(self.vocab_size, device=self.levels[0].codebook().device)
        if shared:
            return {"": self.level(0).lookup_flat(codes)}
        return {f"depth{d}": self.level(d).lookup_flat(codes) for d in range(self.depth)}

    def lookup_flat(self, codes: torch.Tensor) -> torch.Tensor:  # (M, D) -> (M, dim)
        out = 0
        for d in range(self.depth):
            out = out + F.embedding(codes[:, d], self.level(d).codebook())
        return out
