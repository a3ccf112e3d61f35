"""Metrics: codebook usage and image quality.

The names below load on first use, so that the torch-free `vqtool.metrics.stats` imports
without torch (`inspect` of a token folder)."""

from __future__ import annotations

import importlib

_WHERE = {
    "psnr": "image",
    "ssim": "image",
    "CodebookUsage": "usage",
    "UsageStats": "stats",
    "usage_stats": "stats",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"vqtool.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vqtool.metrics' has no attribute {name!r}")
