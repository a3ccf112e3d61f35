"""What the `inspect` reports share: warning thresholds, usage warnings, top codes.
NumPy only."""

from __future__ import annotations

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
