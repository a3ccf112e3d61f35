"""What the `inspect` reports share: warning thresholds, usage warnings, top codes.
NumPy only."""

from __future__ import annotations

import numpy as np

from vqtool.metrics.stats import UsageStats

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


def top_codes(counts, top: int) -> list[dict]:
    """The `top` most used codes (a histogram as a NumPy array or a CPU tensor), most
    used first; on equal counts the lower code first."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    total = max(int(counts.sum()), 1)
    codes = np.argsort(-counts, kind="stable")[: min(top, counts.size)]
    return [
        {"code": int(c), "count": int(counts[c]), "share": int(counts[c]) / total}
        for c in codes.tolist()
        if counts[c] > 0
    ]


def bottom_codes(counts, n: int) -> list[dict]:
    """The `n` least used codes among those used at least once (dead codes are counted
    apart), rarest first; on equal counts the lower code first."""
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    total = max(int(counts.sum()), 1)
    used = np.flatnonzero(counts > 0)
    order = np.argsort(counts[used], kind="stable")[:n]
    return [
        {"code": int(c), "count": int(counts[c]), "share": int(counts[c]) / total}
        for c in used[order].tolist()
    ]
