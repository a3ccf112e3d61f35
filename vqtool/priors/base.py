"""What every prior shares: its configuration (`PriorConfig`), the base module (class
start tokens, position embeddings, the output head, the training loss and the held-out
measure), the caption prefix of the text priors, and the random decoding order the
step-wise priors' held-out likelihood uses. One module per family holds the networks
and their sampling: `ar` (AR, DALL-E), `maskgit` (MaskGIT, Muse), `rq` (RQ-Transformer,
contextual RQ); `models.build_prior` picks the class of a `kind`.

Text priors get captions as (B, L) text ids padded with `text_vocab` (the pad id); an
all-pad row is "no caption", which caption dropout trains and classifier-free guidance
uses.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vqtool.errors import ConfigError
from vqtool.priors.sampling import SamplingConfig


@dataclass
class PriorConfig:
    kind: Literal["ar", "maskgit", "rq", "dalle", "muse", "contextual_rq", "var"] = "ar"
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
    scales: list[int] | None = None  # pyramid rows (var): each scale's side, coarse first

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


def random_groups(b: int, n: int, steps: int, device, generator=None) -> torch.Tensor:
    """(b, n) step index of each of n items: a random order per row cut into `steps`
    equal groups (the parallel decoding order the held-out likelihoods use)."""
    order = torch.rand(b, n, device=device, generator=generator).argsort(dim=1)
    group = torch.empty_like(order)
    group.scatter_(1, order, torch.arange(n, device=device).expand(b, n) * steps // n)
    return group


class PriorBase(nn.Module, abc.ABC):
    """A prior over token rows: logits over the vocabulary, its own loss, its own held-out
    measure (`nll_bits`, described by `measure`) and its own `sample()`."""

    #: what `nll_bits` measures (held-out bits/token are reported with it)
    measure = "exact negative log-likelihood"
    #: whether `SamplingConfig.steps` shapes its sampling (recorded with sampled tokens)
    uses_steps = False

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

    def check_sampling(self, s: SamplingConfig) -> None:
        """Refuse sampling settings this prior cannot use."""
        s.validate()

    @abc.abstractmethod
    def sample(self, n, labels, s: SamplingConfig, generator, device, history=None, text=None):
        """`n` token rows (B, T) given `labels` (and `text` for a text prior)."""


class TextPrefix:
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
