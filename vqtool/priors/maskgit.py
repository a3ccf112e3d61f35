"""The masked-token priors and their sampling.

- `MaskGITPrior`: bidirectional transformer trained to predict masked tokens (cosine
  mask schedule, a [MASK] token). Sampled in `steps` parallel steps: each step predicts
  every masked position, draws a token for each, scores it by its log-probability plus
  Gumbel noise whose temperature anneals linearly to zero, keeps the most confident and
  re-masks the rest so that exactly `mask_schedule(T, steps)[s]` positions stay masked
  after step s (at least one new token a step).
- `TextMaskGITPrior` (Muse-style): MaskGIT with the caption's text tokens as a
  bidirectional prefix; sampled the same way, given the caption.

Their held-out measure is the exact likelihood of random-order decoding in parallel
steps (`nll_bits`), which compares with the AR priors' bits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.transformer import Transformer
from vqtool.priors.base import PriorBase, PriorConfig, TextPrefix, random_groups
from vqtool.priors.sampling import (
    SamplingConfig,
    double,
    guide,
    keep_confident,
    labels_for,
    mask_schedule,
    sample_from,
    text_for,
)


class MaskGITPrior(PriorBase):
    """Bidirectional masked-token model; token id `vocab_size` is [MASK]."""

    measure = "negative log-likelihood of random-order decoding in 16 parallel steps"
    uses_steps = True

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg, cfg.tokens_per_image + 1)
        self.mask_id = cfg.vocab_size
        self.tok = nn.Embedding(cfg.vocab_size + 1, cfg.width)
        self.net = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None, hidden=None):
        """(B, T) tokens with [MASK]s -> (B, T, V) logits for every position."""
        b = tokens.shape[0]
        start = self.cond(self.cond_index(labels, b, tokens.device))[:, None]
        x = torch.cat([start, self.tok(tokens)], dim=1) + self.pos
        return self.head(self.net(x, hidden=hidden)[:, 1:])

    def random_mask(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        """Training mask: ratio cos(pi/2 r), r ~ U(0, 1), at least one token per row."""
        b, t = tokens.shape
        r = torch.rand(b, device=tokens.device, generator=generator)
        n = (torch.cos(math.pi / 2 * r) * t).ceil().clamp(1, t)
        scores = torch.rand(b, t, device=tokens.device, generator=generator)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        return ranks < n[:, None]

    def prepare(self, tokens, labels=None, generator=None):
        mask = self.random_mask(tokens, generator)
        return tokens.masked_fill(mask, self.mask_id), self.drop_labels(labels), mask

    @torch.no_grad()
    def nll_bits(
        self, tokens, labels=None, generator=None, steps: int = 16, text=None
    ) -> torch.Tensor:
        """Per-row negative log-likelihood in bits of a parallel decoding process:
        a random order cut into `steps` equal groups, each group predicted at once
        (independently within the group) given all earlier groups. This is the exact
        likelihood of that generative process, so it compares with AR bits."""
        b, t = tokens.shape
        steps = min(steps, t)
        group = random_groups(b, t, steps, tokens.device, generator)
        total = torch.zeros(b, device=tokens.device)
        for s in range(steps):
            cond = (text,) if self.cfg.has_text else ()  # Muse: given the caption
            logits = self(tokens.masked_fill(group >= s, self.mask_id), labels, *cond).float()
            ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
            total += (ce * (group == s)).sum(1)
        return total / math.log(2)

    def check_sampling(self, s: SamplingConfig) -> None:
        s.validate(steps_over=self.cfg.tokens_per_image)

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """`s.steps` parallel steps from all [MASK]; `history` gets the masked count per
        step (Muse: given the caption `text`)."""
        t = self.cfg.tokens_per_image
        schedule = mask_schedule(t, s.steps)
        lab = labels_for(self, labels, n, s, device)
        cond = (text_for(self, text, n, s, device),) if self.cfg.has_text else ()
        tokens = torch.full((n, t), self.mask_id, dtype=torch.long, device=device)
        for step, keep_masked in enumerate(schedule):
            logits = guide(self(double(tokens, s), lab, *cond), n, s)
            ids, logp = sample_from(logits, s, generator)
            unknown = tokens == self.mask_id
            ids = torch.where(unknown, ids, tokens)
            masked = keep_confident(logp, ~unknown, keep_masked, step, s, generator)
            tokens = torch.where(masked, self.mask_id, ids)
            if history is not None:
                history.append((tokens == self.mask_id).sum(dim=1).tolist())
        return tokens


class TextMaskGITPrior(TextPrefix, MaskGITPrior):
    """Muse-style: MaskGIT whose bidirectional context starts with the caption."""

    def __init__(self, cfg: PriorConfig):
        PriorBase.__init__(self, cfg, 1 + cfg.text_length + cfg.tokens_per_image)
        self.init_text(cfg)
        self.mask_id = cfg.vocab_size
        self.tok = nn.Embedding(cfg.vocab_size + 1, cfg.width)
        self.net = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )

    def forward(self, tokens, labels=None, text=None, hidden=None):
        b = tokens.shape[0]
        text = self.text_or_null(text, b, tokens.device)
        start = self.cond(self.cond_index(labels, b, tokens.device))[:, None]
        x = torch.cat([start, self.text_tok(text), self.tok(tokens)], dim=1) + self.pos
        return self.head(self.net(x, hidden=hidden)[:, 1 + self.text_len :])
