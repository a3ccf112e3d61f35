"""The three priors over token rows, built on the shared transformer.

- `ARPrior`: GPT-style causal transformer over the flattened row (levels
  coarse first, raster, depth innermost); a start token carries the class
  (or "no class", which classifier-free guidance uses); sampling with a KV cache.
- `MaskGITPrior`: bidirectional transformer trained to predict masked tokens
  (cosine mask schedule, a [MASK] token); iterative parallel decoding.
- `RQPrior`: RQ-Transformer for residual tokens: a causal spatial transformer
  over positions whose input is the sum of the previous position's D code
  embeddings, and a small causal depth transformer that predicts the D codes
  of each position from the spatial context.
- `TextARPrior` (DALL-E): one causal transformer over the caption's text tokens
  then the image tokens, with separate text and image embeddings and heads;
  the loss weights the text and image cross-entropies (each the mean over its
  own tokens in the batch) 1/8 and 7/8.
- `TextMaskGITPrior` (Muse-style): MaskGIT with the caption's text tokens as a
  bidirectional prefix.
- `ContextualRQPrior` (Contextual RQ-Transformer, Lee et al. 2022): a
  *bidirectional* spatial transformer over positions, trained by masking whole
  positions (cosine schedule), and the causal depth transformer predicting the D
  codes of each masked position from its context; sampled by draft-and-revise.

Text priors get captions as (B, L) text ids padded with `text_vocab` (the pad
id); an all-pad row is "no caption", which caption dropout trains and
classifier-free guidance uses.

Every prior returns logits over the vocabulary and knows its own loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.models.transformer import Transformer


@dataclass
class PriorConfig:
    kind: Literal["ar", "maskgit", "rq", "dalle", "muse", "contextual_rq"] = "ar"
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    attention: Literal["sdpa", "manual"] = "sdpa"
    dropout: float = 0.0  # residual dropout in every block (training only)
    depth_layers: int = 2  # RQ-transformer: layers of the depth transformer
    num_classes: int = -1  # -1: from the data's labels (0 if none); 0: unconditional
    class_dropout: float = 0.1  # share of rows trained without their label (for --cfg-scale)
    caption_dropout: float = 0.1  # dalle/muse: share of rows trained without their caption
    text_weight: float = 0.125  # dalle: weight of the text cross-entropy (DALL-E: 1/8) ...
    image_weight: float = 0.875  # ... and of the image cross-entropy (7/8)
    # text priors: filled from the recipe's [text] table at training time
    text_vocab: int = 0
    text_length: int = 0
    # filled from the token data at training time
    vocab_size: int = 0
    tokens_per_image: int = 0
    depth: int = 1  # codes per position (RQ)

    @property
    def has_text(self) -> bool:
        return self.kind in ("dalle", "muse")

    def validate(self) -> None:
        if self.has_text and (self.text_vocab < 1 or self.text_length < 1):
            raise ConfigError(
                f"prior.kind {self.kind!r} models captions: give the recipe a [text] table "
                'with tokenizer = "tokenizer.json" and max_length'
            )
        if not 0 <= self.caption_dropout <= 1:
            raise ConfigError(
                f"prior.caption_dropout must lie in [0, 1], got {self.caption_dropout}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"prior.dropout must lie in [0, 1), got {self.dropout}")
        if self.width % self.heads:
            raise ConfigError(f"prior.width {self.width} is not divisible by prior.heads")
        if self.kind in ("rq", "contextual_rq") and self.depth < 2:
            raise ConfigError(
                f"prior.kind {self.kind!r} models residual tokens (depth >= 2); these tokens "
                f"have depth {self.depth}: use 'ar' or 'maskgit'"
            )
        if self.tokens_per_image % self.depth:
            raise ConfigError(
                f"{self.tokens_per_image} tokens do not split into depth {self.depth}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def build_prior(cfg: PriorConfig) -> nn.Module:
    cfg.validate()
    kinds = {"ar": ARPrior, "maskgit": MaskGITPrior, "rq": RQPrior, "dalle": TextARPrior,
             "muse": TextMaskGITPrior, "contextual_rq": ContextualRQPrior}  # fmt: skip
    return kinds[cfg.kind](cfg)


def random_groups(b: int, n: int, steps: int, device, generator=None) -> torch.Tensor:
    """(b, n) step index of each of n items: a random order per row cut into `steps`
    equal groups (the parallel decoding order the held-out likelihoods use)."""
    order = torch.rand(b, n, device=device, generator=generator).argsort(dim=1)
    group = torch.empty_like(order)
    group.scatter_(1, order, torch.arange(n, device=device).expand(b, n) * steps // n)
    return group


class _Base(nn.Module):
    def __init__(self, cfg: PriorConfig, length: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = cfg.vocab_size
        self.classes = max(cfg.num_classes, 0)
        # start / class tokens: one per class plus "no class" (index `classes`)
        self.cond = nn.Embedding(self.classes + 1, cfg.width)
        self.pos = nn.Parameter(torch.zeros(1, length, cfg.width))
        nn.init.normal_(self.pos, std=0.02)
        self.head = nn.Linear(cfg.width, cfg.vocab_size)

    def cond_index(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """Labels -> start-token index; -1, None or an unconditional prior -> "no class"."""
        null = torch.full((batch,), self.classes, dtype=torch.long, device=device)
        if labels is None or self.classes == 0:
            return null
        labels = labels.to(device).long()
        return torch.where((labels >= 0) & (labels < self.classes), labels, null)

    def drop_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None or not self.training or self.cfg.class_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.cfg.class_dropout
        return torch.where(drop, torch.full_like(labels, -1), labels)

    def prepare(self, tokens, labels=None, generator=None):
        """Training inputs for one batch: (model input, labels, target mask or None)."""
        return tokens, self.drop_labels(labels), None

    def loss_from(self, logits, tokens, mask=None, text=None) -> tuple[torch.Tensor, dict]:
        """Cross-entropy over every token (or the masked ones), and bits per token."""
        if mask is not None:
            logits, tokens = logits[mask], tokens[mask]
        ce = F.cross_entropy(logits.float().reshape(-1, self.vocab_size), tokens.reshape(-1))
        return ce, {"bits_per_token": float(ce.detach()) / math.log(2)}

    def loss(self, tokens, labels=None, generator=None) -> tuple[torch.Tensor, dict]:
        inputs, labels, mask = self.prepare(tokens, labels, generator)
        return self.loss_from(self(inputs, labels), tokens, mask)

    @torch.no_grad()
    def nll_bits(self, tokens, labels=None, generator=None) -> torch.Tensor:
        """Per-row negative log-likelihood summed over tokens, in bits (exact)."""
        logits = self(tokens, labels).float()
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")
        return ce.sum(1) / math.log(2)


class ARPrior(_Base):
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


class MaskGITPrior(_Base):
    """Bidirectional masked-token model; token id `vocab_size` is [MASK]."""

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


class RQPrior(_Base):
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


class _TextPrefix:
    """Caption handling shared by the text priors: a text embedding with a pad row, and
    caption dropout (a dropped caption is all pad)."""

    def init_text(self, cfg: PriorConfig) -> None:
        self.text_pad = cfg.text_vocab
        self.text_len = cfg.text_length
        self.text_tok = nn.Embedding(cfg.text_vocab + 1, cfg.width)

    def null_text(self, batch: int, device) -> torch.Tensor:
        return torch.full((batch, self.text_len), self.text_pad, dtype=torch.long, device=device)

    def text_or_null(self, text: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        return self.null_text(batch, device) if text is None else text.to(device)

    def drop_text(self, text: torch.Tensor, generator=None) -> torch.Tensor:
        if not self.training or self.cfg.caption_dropout <= 0:
            return text
        drop = torch.rand(text.shape[0], device=text.device, generator=generator)
        return torch.where((drop < self.cfg.caption_dropout)[:, None], self.text_pad, text)


class TextARPrior(_TextPrefix, _Base):
    """DALL-E: p(text, image) = prod p(text_i | text_<i) prod p(image_t | text, image_<t)."""

    def __init__(self, cfg: PriorConfig):
        _Base.__init__(self, cfg, cfg.text_length + cfg.tokens_per_image)
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


class TextMaskGITPrior(_TextPrefix, MaskGITPrior):
    """Muse-style: MaskGIT whose bidirectional context starts with the caption."""

    def __init__(self, cfg: PriorConfig):
        _Base.__init__(self, cfg, 1 + cfg.text_length + cfg.tokens_per_image)
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


class ContextualRQPrior(RQPrior):
    """Draft-and-revise over residual tokens. In the model's input a masked position's D
    ids are shifted up by the vocabulary size (`id + V`): the spatial transformer sees
    [MASK] there, the depth transformer (teacher-forced in training) the true codes."""

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
