"""Data sources and image decoding shared by training and encoding.

The names below load on first use, so that `vqtool.data.sources` and the other
torch-free modules (inputs, remote) import without torch: a mistyped path is
answered before torch loads."""

from __future__ import annotations

import importlib

_WHERE = {
    "center_crop": "images",
    "decode_image": "decoding",
    "random_resized_crop": "images",
    "Batch": "loader",
    "ImageStream": "loader",
    "PositionTracker": "loader",
    "StreamPosition": "loader",
    "make_loader": "loader",
    "RawSample": "samples",
    "Shard": "samples",
    "expand_sources": "sources",
    "iter_samples": "sources",
}
__all__ = sorted([*_WHERE, "DecodeError", "SourceError"])


def __getattr__(name: str):
    if name in ("DecodeError", "SourceError"):
        return getattr(importlib.import_module("vqtool.errors"), name)
    if name in _WHERE:
        return getattr(importlib.import_module(f"vqtool.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'vqtool.data' has no attribute {name!r}")
