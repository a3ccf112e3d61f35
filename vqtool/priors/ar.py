"""The autoregressive priors and their sampling.

- `ARPrior`: GPT-style causal transformer over the flattened row (levels coarse first,
  raster, depth innermost); a start token carries the class (or "no class", which
  classifier-free guidance uses); sampled one token at a time with a KV cache
  (`use_cache=False` recomputes the prefix every step, for checks and benchmarks).
- `TextARPrior` (DALL-E): one causal transformer over the caption's text tokens then
  the image tokens, with separate text and image embeddings and heads; the loss weights
  the text and image cross-entropies (each the mean over its own tokens in the batch)
  1/8 and 7/8. Sampling runs the caption prefix once into the KV cache, then the image
  tokens one by one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.models.transformer import Transformer
from vqtool.priors.base import PriorBase, PriorConfig, TextPrefix
from vqtool.priors.sampling import (
    SamplingConfig,
    double,
    guide,
    labels_for,
    sample_from,
    start_tokens,
    text_for,
)


class ARPrior(PriorBase):
    """p(x) = prod_t p(x_t | start, x_<t)."""

    def __init__(self, cfg: PriorConfig):
        super().__init__(cfg, cfg.tokens_per_image)
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.net = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )

    def embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        return self.tok(tokens) + self.pos[:, start : start + tokens.shape[1]]

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None, hidden=None):
        """(B, T) tokens -> (B, T, V) logits, position t predicting token t (`hidden`: a
        list that receives every layer's states)."""
        b = tokens.shape[0]
        start = self.cond(self.cond_index(labels, b, tokens.device))[:, None] + self.pos[:, :1]
        x = torch.cat([start, self.embed(tokens[:, :-1], 1)], dim=1)
        return self.head(self.net(x, causal=True, hidden=hidden))

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """One token at a time (KV cache unless `s.use_cache` is off)."""
        t = self.cfg.tokens_per_image
        m, start = start_tokens(self, labels, n, s, device)
        out = torch.zeros(n, t, dtype=torch.long, device=device)
        if s.use_cache:
            cache = self.net.new_cache(m, t, start)
            h = self.net(start, causal=True, cache=cache)
        for i in range(t):
            if not s.use_cache:
                x = torch.cat([start, self.embed(double(out[:, :i], s), 1)], dim=1)
                h = self.net(x, causal=True)
            ids, _ = sample_from(guide(self.head(h[:, -1]), n, s), s, generator)
            out[:, i] = ids
            if s.use_cache and i + 1 < t:
                h = self.net(self.embed(double(ids[:, None], s), i + 1), causal=True, cache=cache)
        return out


class TextARPrior(TextPrefix, PriorBase):
    """DALL-E: p(text, image) = prod p(text_i | text_<i) prod p(image_t | text, image_<t)."""

    def __init__(self, cfg: PriorConfig):
        PriorBase.__init__(self, cfg, cfg.text_length + cfg.tokens_per_image)
        self.init_text(cfg)
        self.tok = nn.Embedding(cfg.vocab_size, cfg.width)
        self.text_head = nn.Linear(cfg.width, cfg.text_vocab)
        self.net = Transformer(
            cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.attention, cfg.dropout
        )

    def prefix(self, text: torch.Tensor, labels=None) -> torch.Tensor:
        """[start, text_1 .. text_L] embedded: the first L + 1 inputs."""
        b = text.shape[0]
        start = self.cond(self.cond_index(labels, b, text.device))[:, None]
        x = torch.cat([start, self.text_tok(text)], dim=1)
        return x + self.pos[:, : x.shape[1]]

    def embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Image tokens as inputs at sequence positions start.. (start >= L + 1)."""
        return self.tok(tokens) + self.pos[:, start : start + tokens.shape[1]]

    def forward(self, tokens, labels=None, text=None, hidden=None):
        """-> (text logits (B, L, text_vocab), image logits (B, T, V))."""
        text = self.text_or_null(text, tokens.shape[0], tokens.device)
        x = torch.cat([self.prefix(text, labels), self.embed(tokens[:, :-1], self.text_len + 1)],
                      dim=1)  # fmt: skip
        h = self.net(x, causal=True, hidden=hidden)
        return self.text_head(h[:, : self.text_len]), self.head(h[:, self.text_len :])

    def loss_from(self, out, tokens, mask=None, text=None) -> tuple[torch.Tensor, dict]:
        """w_text * mean CE over the batch's (non-pad) text tokens + w_image * mean CE over
        its image tokens: each modality normalized by its own count (DALL-E)."""
        text_logits, image_logits = out
        image_ce = F.cross_entropy(image_logits.float().reshape(-1, self.vocab_size),
                                   tokens.reshape(-1))  # fmt: skip
        loss = self.cfg.image_weight * image_ce
        logs = {"bits_per_token": float(image_ce.detach()) / math.log(2)}
        real = text != self.text_pad if text is not None else None
        if real is not None and bool(real.any()):
            text_ce = F.cross_entropy(text_logits.float()[real], text[real])
            loss = loss + self.cfg.text_weight * text_ce
            logs["text_bits_per_token"] = float(text_ce.detach()) / math.log(2)
        return loss, logs

    def loss(self, tokens, labels=None, generator=None, text=None):
        text = self.text_or_null(text, tokens.shape[0], tokens.device)
        return self.loss_from(self(tokens, labels, text), tokens, None, text)

    @torch.no_grad()
    def nll_bits(self, tokens, labels=None, generator=None, text=None) -> torch.Tensor:
        """Per-row NLL of the image tokens given the caption (all pad: unconditioned)."""
        logits = self(tokens, labels, text)[1].float()
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return ce.sum(1) / math.log(2)

    @torch.no_grad()
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """DALL-E: the caption prefix into the cache at once, then image tokens one by one."""
        t, length = self.cfg.tokens_per_image, self.text_len
        lab = labels_for(self, labels, n, s, device)
        prefix = self.prefix(text_for(self, text, n, s, device), lab)
        out = torch.zeros(n, t, dtype=torch.long, device=device)
        cache = self.net.new_cache(len(prefix), length + t, prefix) if s.use_cache else None
        h = self.net(prefix, causal=True, cache=cache)
        for i in range(t):
            if cache is None and i:
                x = torch.cat([prefix, self.embed(double(out[:, :i], s), length + 1)], dim=1)
                h = self.net(x, causal=True)
            ids, _ = sample_from(guide(self.head(h[:, -1]), n, s), s, generator)
            out[:, i] = ids
            if cache is not None and i + 1 < t:
                x = self.embed(double(ids[:, None], s), length + 1 + i)
                h = self.net(x, causal=True, cache=cache)
        return out
