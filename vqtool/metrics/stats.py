"""Codebook usage statistics from a histogram of code counts: the share of codes used,
dead codes, perplexity, entropy in bits against log2 of the vocabulary. NumPy only, so
`inspect` on a token folder runs without torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class UsageStats:
    vocab_size: int  # codes the codebook has
    tokens: int  # codes counted
    used: int  # distinct codes seen at least once
    used_share: float  # used / vocab_size
    dead: int  # codes never seen (vocab_size - used)
    entropy_bits: float  # entropy of the code distribution, bits per token
    max_entropy_bits: float  # log2(vocab_size), the entropy of uniform usage
    perplexity: float  # 2 ** entropy_bits: the effective number of codes

    def to_dict(self) -> dict:
        return asdict(self)


def usage_stats(counts, vocab_size: int | None = None) -> UsageStats:
    """Statistics of a `(K,)` histogram of code counts (a NumPy array or a CPU tensor);
    with `vocab_size`, `counts` holds the counts of some codes only (a sparse histogram of
    a huge vocabulary), the others never seen."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    vocab = vocab_size if vocab_size is not None else counts.size
    total = float(counts.sum())
    used = int((counts > 0).sum())
    if total > 0:
        p = counts[counts > 0] / total
        entropy = float(-(p * np.log2(p)).sum())
    else:
        entropy = 0.0
    return UsageStats(
        vocab_size=vocab,
        tokens=int(total),
        used=used,
        used_share=used / vocab if vocab else 0.0,
        dead=vocab - used,
        entropy_bits=entropy,
        max_entropy_bits=math.log2(vocab) if vocab else 0.0,
        perplexity=2.0**entropy,
    )
