"""Metrics: codebook usage (and, later, image quality)."""

from vqtool.metrics.usage import CodebookUsage, UsageStats, usage_stats

__all__ = ["CodebookUsage", "UsageStats", "usage_stats"]
