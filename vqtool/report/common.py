"""What the `inspect` reports share: warning thresholds, usage warnings, top codes."""

from __future__ import annotations

import torch

from vqtool.errors import InspectError  # noqa: F401 (re-exported)
from vqtool.metrics.usage import UsageStats

#: thresholds for warnings
LOW_USAGE = 0.5
MANY_DEAD = 0.1


def usage_warnings(stats: UsageStats, what: str) -> list[str]:
    out = []
    if stats.used_share < LOW_USAGE:
        out.append(f"only {stats.used_share:.1%} of the codes are used ({what})")
    if stats.vocab_size and stats.dead / stats.vocab_size > MANY_DEAD:
        out.append(f"{stats.dead:,} dead codes ({stats.dead / stats.vocab_size:.1%}, {what})")
    return out


def top_codes(counts: torch.Tensor, top: int) -> list[dict]:
    counts = counts.reshape(-1).long()
    total = max(int(counts.sum()), 1)
    values, codes = counts.topk(min(top, counts.numel()))
    return [
        {"code": int(c), "count": int(n), "share": int(n) / total}
        for c, n in zip(codes.tolist(), values.tolist())
        if n > 0
    ]


def bottom_codes(counts: torch.Tensor, n: int) -> list[dict]:
    """The `n` least used codes among those used at least once (dead codes are counted
    apart), rarest first; on equal counts the lower code first."""
    counts = counts.reshape(-1).long()
    total = max(int(counts.sum()), 1)
    used = torch.nonzero(counts > 0).reshape(-1)
    order = torch.argsort(counts[used], stable=True)[:n]
    return [
        {"code": int(c), "count": int(counts[c]), "share": int(counts[c]) / total}
        for c in used[order].tolist()
    ]
