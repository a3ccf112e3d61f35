"""Captions for text-conditioned priors: the recipe's `[text]` table names a Hugging
Face `tokenizer.json` (read from disk, never downloaded) and the caption length.

    [text]
    tokenizer = "tokenizer.json"
    max_length = 32          # text tokens per caption (padded with the pad id)
    truncation = true        # longer captions are cut; false: refused, naming the caption
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vqtool.errors import ConfigError
from vqtool.lm.text import TextTokenizer


@dataclass
class TextConfig:
    tokenizer: str = ""  # a tokenizer.json path; empty: the prior has no text
    max_length: int = 32
    truncation: bool = True

    def __post_init__(self):
        if self.max_length < 1:
            raise ConfigError(f"text.max_length must be >= 1, got {self.max_length}")


class CaptionEncoder:
    """Captions -> (B, max_length) text ids, padded with `pad` (= the text vocabulary
    size); a missing caption is all pad ("no caption")."""

    def __init__(self, cfg: TextConfig, path: str | None = None, named_by: str | None = None):
        """`path` (given by `named_by`, a flag) overrides the recipe's `text.tokenizer`."""
        self.cfg = cfg
        where = (named_by or "--text-tokenizer") if path else "the recipe's text.tokenizer ="
        self.text = TextTokenizer.open(path or cfg.tokenizer, named_by=where)
        self.pad = self.text.vocab_size

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    def record(self) -> dict:
        return {**self.text.record(), "max_length": self.cfg.max_length,
                "truncation": self.cfg.truncation}  # fmt: skip

    def __call__(self, captions: list[str | None]) -> torch.Tensor:
        n, length = len(captions), self.cfg.max_length
        out = torch.full((n, length), self.pad, dtype=torch.long)
        encoded = self.text.encode_batch([c or "" for c in captions])
        for i, ids in enumerate(encoded):
            if len(ids) > length and not self.cfg.truncation:
                raise ConfigError(
                    f"caption {captions[i]!r} is {len(ids)} text tokens, over text.max_length "
                    f"{length}; raise it or set text.truncation = true"
                )
            ids = ids[:length]
            if ids:
                out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
