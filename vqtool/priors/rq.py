"""The priors over residual tokens (depth D codes per position) and their sampling.

- `RQPrior`: RQ-Transformer: a causal spatial transformer over positions whose input is
  the sum of the previous position's D code embeddings, and a small causal depth
  transformer that predicts the D codes of each position from the spatial context;
  sampled one position at a time (KV cache), its D codes autoregressively.
- `ContextualRQPrior` (Contextual RQ-Transformer, Lee et al. 2022): a *bidirectional*
  spatial transformer over positions, trained by masking whole positions (cosine
  schedule), and the causal depth transformer predicting the D codes of each masked
  position from its context; sampled by draft-and-revise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.transformer import Transformer
from vqtool.priors.base import PriorBase, PriorConfig, random_groups
from vqtool.priors.sampling import (
    SamplingConfig,
    double,
    guide,
    keep_confident,
    labels_for,
    mask_schedule,
    sample_from,
    start_tokens,
)


class RQPrior(PriorBase):
    """Spatial transformer over positions + depth transformer over D codes."""

    def __init__(self, cfg: PriorConfig):
        self.positions = cfg.tokens_per_image // cfg.depth
        super().__init__(cfg, self.positions)
        self.depth = cfg.depth
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.spatial = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )
        self.depth_pos = nn.Parameter(torch.zeros(1, cfg.depth, cfg.width))
        nn.init.normal_(self.depth_pos, std=0.02)
        self.depth_net = Transformer(
            cfg.width, cfg.depth_layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )

    def spatial_input(self, codes: torch.Tensor, start: int) -> torch.Tensor:
        """(B, N, D) codes -> summed code embeddings + position embeddings."""
        return self.tok(codes).sum(2) + self.pos[:, start : start + codes.shape[1]]

    def depth_logits(self, context: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """context (M, W), codes (M, d < D) known so far -> (M, d + 1, V) logits."""
        x = torch.cat([context[:, None], self.tok(codes)], dim=1)
        x = x + self.depth_pos[:, : x.shape[1]]
        return self.head(self.depth_net(x, causal=True))

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None, hidden=None):
        """(B, T) tokens -> (B, T, V) logits (depth innermost, like the tokens)."""
        b = tokens.shape[0]
        codes = tokens.reshape(b, self.positions, self.depth)
        start = self.cond(self.cond_index(labels, b, tokens.device))[:, None] + self.pos[:, :1]
        x = torch.cat([start, self.spatial_input(codes[:, :-1], 1)], dim=1)
        h = self.spatial(x, causal=True, hidden=hidden)  # (B, N, W): context per position
        logits = self.depth_logits(
            h.reshape(-1, h.shape[-1]), codes.reshape(-1, self.depth)[:, :-1]
        )
        return logits.reshape(b, self.positions * self.depth, -1)

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """One position at a time (KV cache over positions), its D codes in depth order."""
        positions, depth = self.positions, self.depth
        m, start = start_tokens(self, labels, n, s, device)
        codes = torch.zeros(n, positions, depth, dtype=torch.long, device=device)
        if s.use_cache:
            cache = self.spatial.new_cache(m, positions, start)
            h = self.spatial(start, causal=True, cache=cache)
        for i in range(positions):
            if not s.use_cache:
                x = torch.cat([start, self.spatial_input(double(codes[:, :i], s), 1)], dim=1)
                h = self.spatial(x, causal=True)
            context = h[:, -1]
            for d in range(depth):
                logits = self.depth_logits(context, double(codes[:, i, :d], s))[:, -1]
                codes[:, i, d], _ = sample_from(guide(logits, n, s), s, generator)
            if s.use_cache and i + 1 < positions:
                x = self.spatial_input(double(codes[:, i : i + 1], s), i + 1)
                h = self.spatial(x, causal=True, cache=cache)
        return codes.reshape(n, positions * depth)


class ContextualRQPrior(RQPrior):
    """Draft-and-revise over residual tokens. In the model's input a masked position's D
    ids are shifted up by the vocabulary size (`id + V`): the spatial transformer sees
    [MASK] there, the depth transformer (teacher-forced in training) the true codes."""

    measure = (
        "negative log-likelihood of decoding positions in a random order in 16 parallel "
        "steps, each position's codes autoregressively over depth"
    )
    uses_steps = True

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg)
        self.pos = nn.Parameter(torch.zeros(1, self.positions + 1, cfg.width))  # + start
        nn.init.normal_(self.pos, std=0.02)
        self.mask_emb = nn.Parameter(torch.zeros(cfg.width))
        nn.init.normal_(self.mask_emb, std=0.02)

    def context(self, codes, masked, labels=None, hidden=None) -> torch.Tensor:
        """codes (B, N, D), masked (B, N) -> (B, N, W): every position sees every other
        (bidirectional), masked ones as [MASK]."""
        b = codes.shape[0]
        x = self.tok(codes).sum(2)
        x = torch.where(masked[..., None], self.mask_emb.to(x.dtype), x)
        start = self.cond(self.cond_index(labels, b, codes.device))[:, None]
        x = torch.cat([start, x], dim=1) + self.pos
        return self.spatial(x, hidden=hidden)[:, 1:]

    def split(self, tokens: torch.Tensor):
        codes = tokens.reshape(tokens.shape[0], self.positions, self.depth)
        shifted = codes >= self.vocab_size
        return codes % self.vocab_size, shifted.any(2)

    def forward(self, tokens, labels=None, hidden=None) -> torch.Tensor:
        """(B, T) ids, masked positions shifted by V -> (B, T, V) logits for every code
        (depth teacher-forced with the true codes)."""
        b = tokens.shape[0]
        codes, masked = self.split(tokens)
        h = self.context(codes, masked, labels, hidden)
        logits = self.depth_logits(
            h.reshape(-1, h.shape[-1]), codes.reshape(-1, self.depth)[:, :-1]
        )
        return logits.reshape(b, self.positions * self.depth, -1)

    def random_positions(self, b: int, device, generator=None) -> torch.Tensor:
        """Training mask over positions: ratio cos(pi/2 r), r ~ U(0, 1), at least one."""
        n = self.positions
        r = torch.rand(b, device=device, generator=generator)
        count = (torch.cos(math.pi / 2 * r) * n).ceil().clamp(1, n)
        ranks = torch.rand(b, n, device=device, generator=generator).argsort(1).argsort(1)
        return ranks < count[:, None]

    def prepare(self, tokens, labels=None, generator=None):
        masked = self.random_positions(tokens.shape[0], tokens.device, generator)
        mask = masked.repeat_interleave(self.depth, dim=1)  # (B, T): the targets
        return tokens + self.vocab_size * mask, self.drop_labels(labels), mask

    @torch.no_grad()
    def nll_bits(self, tokens, labels=None, generator=None, steps: int = 16) -> torch.Tensor:
        """Per-row NLL in bits of decoding positions in a random order, `steps` groups at
        once (each position's D codes autoregressively by the depth transformer) given the
        earlier groups: the exact likelihood of that process, as for MaskGIT."""
        b, n = tokens.shape[0], self.positions
        steps = min(steps, n)
        group = random_groups(b, n, steps, tokens.device, generator)
        total = torch.zeros(b, device=tokens.device)
        for s in range(steps):
            hidden_now = (group >= s).repeat_interleave(self.depth, dim=1)
            logits = self(tokens + self.vocab_size * hidden_now, labels).float()
            ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
            total += (ce * (group == s).repeat_interleave(self.depth, dim=1)).sum(1)
        return total / math.log(2)

    def _depth_sample(self, context, s: SamplingConfig, generator) -> tuple:
        """D codes per context row (doubled under guidance), autoregressively over depth:
        (codes (M, D), summed log-probabilities (M,))."""
        m = context.shape[0] // (2 if s.cfg_scale != 1.0 else 1)
        codes = torch.zeros(m, self.depth, dtype=torch.long, device=context.device)
        logp = torch.zeros(m, device=context.device)
        for d in range(self.depth):
            logits = self.depth_logits(context, double(codes[:, :d], s))[:, -1]
            codes[:, d], lp = sample_from(guide(logits, m, s), s, generator)
            logp += lp
        return codes, logp

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """Draft: positions decoded MaskGIT-style in `s.steps` parallel steps (each unknown
        position's D codes drawn by the depth transformer, the most confident kept); revise:
        `s.revise_rounds` times, positions split at random into `s.revise_groups` groups, each
        group re-masked and drawn again given all the others."""
        positions, depth = self.positions, self.depth
        lab = labels_for(self, labels, n, s, device)
        codes = torch.zeros(n, positions, depth, dtype=torch.long, device=device)
        known = torch.zeros(n, positions, dtype=torch.bool, device=device)
        for step, keep_masked in enumerate(mask_schedule(positions, min(s.steps, positions))):
            ctx = self.context(double(codes, s), double(~known, s), lab)
            ctx = ctx.reshape(-1, ctx.shape[-1]) if s.cfg_scale == 1.0 else torch.cat(
                [ctx[:n].reshape(-1, ctx.shape[-1]), ctx[n:].reshape(-1, ctx.shape[-1])]
            )  # fmt: skip
            drawn, logp = self._depth_sample(ctx, s, generator)
            drawn, logp = drawn.reshape(n, positions, depth), logp.reshape(n, positions)
            newly = ~known & ~keep_confident(logp, known, keep_masked, step, s, generator)
            codes = torch.where(newly[..., None], drawn, codes)
            known = known | newly
            if history is not None:
                history.append((~known).sum(dim=1).tolist())
        for _ in range(s.revise_rounds):
            order = torch.rand(n, positions, device=device, generator=generator).argsort(dim=1)
            for g in range(s.revise_groups):
                chosen = torch.zeros(n, positions, dtype=torch.bool, device=device)
                chosen.scatter_(1, order[:, g :: s.revise_groups], True)
                ctx = self.context(double(codes, s), double(chosen, s), lab)
                flat = ctx.reshape(-1, ctx.shape[-1]) if s.cfg_scale == 1.0 else torch.cat(
                    [ctx[:n].reshape(-1, ctx.shape[-1]), ctx[n:].reshape(-1, ctx.shape[-1])]
                )  # fmt: skip
                drawn, _ = self._depth_sample(flat, s, generator)
                codes = torch.where(chosen[..., None], drawn.reshape(n, positions, depth), codes)
        return codes.reshape(n, positions * depth)
