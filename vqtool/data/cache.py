"""Training photos decoded once and kept in memory.

A small tokenizer's step costs less than decoding the photos it trains on, so
when the training corpus fits in `cache_mb` (after resizing each photo to the
short side the crops need), it is decoded once, in DataLoader workers, and
every later batch is cropped from memory in the main process. Batch `i` draws
its photos and crops from a generator seeded by (seed, rank, i), so a resumed
run draws exactly the batches an uninterrupted one would. A corpus that does
not fit is streamed instead (`cache_photos` returns None).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vqtool.data.decoding import MAX_PIXELS
from vqtool.data.images import random_crop, random_resized_crop
from vqtool.data.loader import Batch, ImageStream
from vqtool.data.sources import Shard


@dataclass
class PhotoCache:
    photos: list[np.ndarray]  # (H, W, 3) uint8, short side resized
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) skipped
    nbytes: int = 0


def cache_side(image_size: int, short_side: int, crop_scale: tuple[float, float]) -> int:
    """The short side a cached photo needs: `short_side` for fixed-size crops; for
    random-resized crops, enough that the smallest crop (area share crop_scale[0],
    aspect up to 4:3) still has `image_size` pixels on its short side."""
    if short_side:
        return short_side
    return math.ceil(image_size / math.sqrt(0.75 * crop_scale[0]))


def cache_photos(
    shards: list[Shard],
    side: int,
    max_bytes: int,
    workers: int,
    max_pixels: int = MAX_PIXELS,
    progress: Callable[[int, int, bool], None] | None = None,
) -> PhotoCache | None:
    """Decode every photo of `shards` (this rank's share) resized to short side `side`;
    None as soon as they exceed `max_bytes`. `progress(photos, bytes, done)` is called at
    most twice a second while it reads, and once at the end."""
    progress = progress or (lambda photos, nbytes, done: None)
    last = time.monotonic()
    stream = ImageStream(
        shards, side, train=False, short_side=side, photos=True, max_pixels=max_pixels
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    cache = PhotoCache([])
    it = iter(loader)
    try:
        for item in it:
            if "error" in item:
                cache.errors.append((item["key"], item["error"]))
                continue
            photo = np.asarray(item["image"], dtype=np.uint8)
            cache.photos.append(photo)
            cache.nbytes += photo.nbytes
            if cache.nbytes > max_bytes:
                return None
            if time.monotonic() - last >= 0.5:
                last = time.monotonic()
                progress(len(cache.photos), cache.nbytes, False)
    finally:
        del it  # stops the workers
    progress(len(cache.photos), cache.nbytes, True)
    return cache


def cached_batches(
    cache: PhotoCache,
    image_size: int,
    batch_size: int,
    seed: int,
    start: int = 0,
    short_side: int = 0,
    crop_scale: tuple[float, float] = (0.5, 1.0),
) -> Iterator[Batch]:
    """Endless batches of random crops from the cache, batch `i` from `start` on.
    Each batch's `positions` is [(0, i + 1, 0)]: the index of the next batch to draw."""
    n = len(cache.photos)
    index = start
    while True:
        rng = random.Random(f"{seed}/{index}")
        images = []
        for _ in range(batch_size):
            photo = cache.photos[rng.randrange(n)]
            if short_side:
                images.append(random_crop(photo, image_size, rng))
            else:
                images.append(
                    random_resized_crop(Image.fromarray(photo), image_size, rng, crop_scale)
                )
        index += 1
        yield Batch(
            images=torch.stack(images),
            keys=[""] * batch_size,
            positions=[(0, index, 0)],
        )
