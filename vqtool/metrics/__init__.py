"""Metrics: codebook usage and image quality."""

from vqtool.metrics.image import psnr, ssim
from vqtool.metrics.usage import CodebookUsage, UsageStats, usage_stats

__all__ = ["CodebookUsage", "UsageStats", "psnr", "ssim", "usage_stats"]
