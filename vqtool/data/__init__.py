"""Data sources and image decoding shared by training and encoding."""

from vqtool.data.images import center_crop, decode_image, random_resized_crop
from vqtool.data.loader import Batch, ImageStream, PositionTracker, StreamPosition, make_loader
from vqtool.data.sources import RawSample, Shard, expand_sources, iter_samples
from vqtool.errors import DecodeError, SourceError

__all__ = [
    "Batch",
    "DecodeError",
    "ImageStream",
    "PositionTracker",
    "RawSample",
    "Shard",
    "SourceError",
    "StreamPosition",
    "center_crop",
    "decode_image",
    "expand_sources",
    "iter_samples",
    "make_loader",
    "random_resized_crop",
]
