"""A next-scale prior over pyramid rows (VAR, Tian et al. 2024): every token of a scale is
predicted at once from the start (class) token and all coarser scales, with block-causal
attention (a position sees every position of its own and coarser scales).

VAR's transformer reads its VQ-VAE's continuous features (the running sum of the coarser
scales' upsampled code vectors, resized to the next scale); this prior learns its own
code embeddings and reads the same kind of input: at scale k's positions, the sum of the
coarser scales' embeddings, each resized (bilinear) to scale k's grid, plus a position
and a scale embedding. Scale 0's positions hold the start token. Within a scale the
tokens are independent given the coarser ones, so the per-row negative log-likelihood is
exact, and sampling takes one network pass per scale (10 for VAR's 680 tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.models.transformer import Transformer
from vqtool.priors.base import PriorBase, PriorConfig
from vqtool.priors.sampling import SamplingConfig, guide, labels_for, sample_from


class VARPrior(PriorBase):
    """p(x) = prod_k p(scale_k | start, scale_<k), each scale's tokens in parallel."""

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg, cfg.tokens_per_image)
        scales = list(cfg.scales or [])
        if not scales or sum(p * p for p in scales) != cfg.tokens_per_image or cfg.depth != 1:
            raise ConfigError(
                f"prior.kind 'var' needs pyramid tokens (a scale schedule adding up to the "
                f"row); these rows have {cfg.tokens_per_image} tokens and scales {scales}: "
                "use 'ar' or 'maskgit'"
            )
        self.scales = scales
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.level = nn.Embedding(len(scales), cfg.width)
        self.net = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )
        lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(scales)])
        self.register_buffer("lvl", lvl, persistent=False)
        self.register_buffer("visible", lvl[:, None] >= lvl[None, :], persistent=False)

    def _inputs(self, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens (only scales before the last are read) and (B, C) start -> (B, T, C)."""
        b, c = start.shape
        grids, cut = [], 0
        for p in self.scales[:-1]:
            e = self.tok(tokens[:, cut : cut + p * p]).transpose(1, 2).reshape(b, c, p, p)
            grids.append(e)
            cut += p * p
        parts = [start[:, None].expand(b, self.scales[0] ** 2, c)]
        for k, p in enumerate(self.scales[1:], start=1):
            acc = sum(F.interpolate(g, size=(p, p), mode="bilinear", align_corners=False)
                      for g in grids[:k])  # fmt: skip
            parts.append(acc.flatten(2).transpose(1, 2))
        return torch.cat(parts, dim=1) + self.pos + self.level(self.lvl)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None, hidden=None):
        """(B, T) tokens -> (B, T, V) logits, each position predicting its own token from
        the coarser scales."""
        start = self.cond(self.cond_index(labels, tokens.shape[0], tokens.device))
        h = self.net(self._inputs(tokens, start), causal=self.visible, hidden=hidden)
        return self.head(h)

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """Scale by scale: one pass per scale, all its tokens drawn at once (guided)."""
        lab = labels_for(self, labels, n, s, device)
        out = torch.zeros(len(lab), self.cfg.tokens_per_image, dtype=torch.long, device=device)
        cut = 0
        for p in self.scales:
            logits = self(out, lab)[:, cut : cut + p * p]
            ids, _ = sample_from(guide(logits, n, s), s, generator)
            out[:, cut : cut + p * p] = torch.cat([ids, ids]) if len(lab) > n else ids
            cut += p * p
        return out[:n]
