"""Codebook usage: how many codes a tokenizer really uses, and how evenly.

`usage_stats(counts)` turns a histogram of code counts into the numbers users
read (share of codes used, dead codes, perplexity, entropy in bits against
log2 of the vocabulary). `CodebookUsage` accumulates that histogram from code
tensors, over a whole dataset or over the last `window` updates, in O(K)
memory plus the distinct codes of the batches inside the window; training
logs it and `inspect` reports it. Above `DENSE_LIMIT` codes (Infinity's 2^24 and 2^32
bitwise vocabularies) the counts are `vqtool.metrics.codes.Histogram`'s sparse ones (the
codes seen; `saturated`: `used` is then a lower bound).
"""

from __future__ import annotations

from collections import deque

import torch

from vqtool.metrics.codes import DENSE_LIMIT, Histogram
from vqtool.metrics.stats import UsageStats, usage_stats


class CodebookUsage:
    """Running histogram of codes; `window=None` counts everything ever seen."""

    def __init__(self, vocab_size: int, window: int | None = None):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of updates or None, got {window}")
        self.vocab_size = vocab_size
        self.window = window
        self.sparse = vocab_size > DENSE_LIMIT
        if self.sparse and window is not None:
            raise ValueError(f"a window over {vocab_size:,} codes is not kept (sparse counts)")
        self.counts = torch.zeros(0 if self.sparse else vocab_size, dtype=torch.long)
        self.histogram = Histogram(vocab_size) if self.sparse else None  # the sparse counts
        self._recent: deque[tuple[torch.Tensor, torch.Tensor]] = deque()

    def update(self, codes: torch.Tensor) -> None:
        """Count a tensor of codes (any shape, values in [0, vocab_size))."""
        flat = codes.detach().reshape(-1).to("cpu", torch.long)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.vocab_size):
            bad = int(flat.max()) if int(flat.max()) >= self.vocab_size else int(flat.min())
            raise ValueError(f"code {bad} is outside a vocabulary of {self.vocab_size}")
        if self.histogram is not None:
            self.histogram.add(flat.numpy())
            return
        if self.window is None:
            self.counts += torch.bincount(flat, minlength=self.vocab_size)
            return
        values, n = torch.unique(flat, return_counts=True)
        self.counts.index_add_(0, values, n)
        self._recent.append((values, n))
        while len(self._recent) > self.window:
            old_values, old_n = self._recent.popleft()
            self.counts.index_add_(0, old_values, -old_n)

    @property
    def saturated(self) -> bool:
        """Sparse counts that stopped taking new codes (`used` is a lower bound)."""
        return self.histogram is not None and self.histogram.saturated

    def stats(self) -> UsageStats:
        return self.histogram.stats() if self.histogram is not None else usage_stats(self.counts)

    def reset(self) -> None:
        self.counts.zero_()
        if self.histogram is not None:
            self.histogram = Histogram(self.vocab_size)
        self._recent.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-friendly); the window's batches are flattened."""
        state = {"counts": self.counts.clone()}
        if self._recent:
            state["recent_values"] = torch.cat([v for v, _ in self._recent])
            state["recent_counts"] = torch.cat([n for _, n in self._recent])
            state["recent_sizes"] = torch.tensor([len(v) for v, _ in self._recent])
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        counts = state["counts"].to(torch.long)
        if counts.numel() != self.vocab_size:
            raise ValueError(
                f"usage state has {counts.numel()} codes but this tracker has {self.vocab_size}"
            )
        self.counts = counts.clone()
        self._recent.clear()
        if "recent_sizes" in state:
            sizes = state["recent_sizes"].tolist()
            for v, n in zip(
                state["recent_values"].split(sizes), state["recent_counts"].split(sizes)
            ):
                self._recent.append((v.long(), n.long()))
