"""Streaming image batches from shards: the one data path training, the photo cache and
encoding use (`ImageStream` through `make_loader`).

Shards are dealt to (rank, worker) slots; with fewer shards than slots every
slot reads every shard and keeps every n-th sample. Encoding (`ends=True`) tags each
item with its (shard, member) and marks the end of each shard, so a task's rows are
written in input order whatever the number of workers; `native` keeps each image's
own size for tokenizers whose grid follows it. Training shuffles the
shard order each epoch (seeded) and samples through a small buffer, and
cycles forever; evaluation reads once in stored order. Undecodable samples
come out as error items, counted by `collate` and never crash a worker.
Each item carries its (epoch, shard ordinal) so a run can resume at shard
granularity.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vqtool.data.decoding import MAX_PIXELS, InputRule, decode_with_size
from vqtool.data.images import (
    DecodeError,
    decode_random_crop,
    encode_pixels,
    native_pixels,
    random_crop,
    short_side_resize,
)
from vqtool.data.inputs import input_stamp
from vqtool.data.sources import Shard, iter_samples
from vqtool.runtime import rank, world_size


@dataclass
class StreamPosition:
    """Where a training stream stands: the epoch, and the first shard ordinal
    (in that epoch's order) not known to be finished."""

    epoch: int = 0
    shard: int = 0


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, 3, S, S)
    keys: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    positions: list[tuple[int, int, int]] = field(default_factory=list)  # (worker, epoch, shard)
    meta: list[dict] = field(default_factory=list)  # per image: source, index, caption, label, size
    error_meta: list[dict] = field(default_factory=list)  # per error: source, index
    # a stream with `ends` (encoding): each image's and error's (shard, member) in input
    # order, and a marker per shard part read to its end: (shard, parts, input stamp)
    orders: list[tuple[int, int]] = field(default_factory=list)
    error_orders: list[tuple[int, int]] = field(default_factory=list)
    ends: list[tuple[int, int, dict | None]] = field(default_factory=list)


class ImageStream(IterableDataset):
    def __init__(
        self,
        shards: list[Shard],
        image_size: int,
        train: bool,
        seed: int = 0,
        start: StreamPosition | None = None,
        shuffle_buffer: int = 64,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        max_pixels: int = MAX_PIXELS,
        resize: str = "bicubic",
        short_side: int = 0,
        photos: bool = False,
        native: tuple | None = None,
        factor: int = 1,
        ends: bool = False,
        rule: InputRule | None = None,
        draft: bool | None = None,
    ):
        self.shards = list(shards)
        self.image_size = image_size
        self.train = train
        self.seed = seed
        self.start = start or StreamPosition()
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.crop_scale = crop_scale
        self.max_pixels = max_pixels
        self.resize = resize  # eval: a RESIZERS mode (others than bicubic decode at full scale)
        # training crops: > 0: photos resized to this short side, random image_size crops;
        # 0: random-resized crops covering crop_scale of the photo's area
        self.short_side = short_side
        # photos: yield each photo resized to short_side as an (H, W, 3) uint8 array
        # (to fill an in-memory cache) instead of crops
        self.photos = photos
        # eval: keep each image's shape (a `parse_policy` tuple other than square) for a
        # tokenizer whose grid is the image's size / `factor`
        self.native = native if native and native[0] != "square" else None
        self.factor = factor
        # encoding: tag items with their (shard, member) and mark the end of each shard
        # (with the input's stamp, taken before reading it) so the consumer knows when a
        # task's rows are complete and can write them in input order
        self.ends = ends
        # eval: how stored pictures become RGB (orientation, high bit depth); None: the
        # family's own rule for `resize` (`vqtool.data.decoding.family_rule`)
        self.rule = rule
        # eval: JPEGs reduced in libjpeg's DCT before the resize (None: the family's way)
        self.draft = draft

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = rank() * workers + worker, world_size() * workers
        rng = random.Random(self.seed * 7919 + slot)
        epoch = self.start.epoch
        while True:
            order = list(range(len(self.shards)))
            if self.train:
                random.Random(self.seed + epoch).shuffle(order)
            first = self.start.shard if epoch == self.start.epoch else 0
            items = self._epoch(order, first, slot, slots, epoch, worker, rng)
            images = 0
            for item in self._shuffled(items, rng) if self.shuffle_buffer else items:
                images += "image" in item
                yield item
            if not self.train or (images == 0 and epoch > self.start.epoch):
                # a whole epoch without one usable image: the stream ends rather than
                # spin forever; the trainer names the sources and the reasons
                return
            epoch += 1

    def _epoch(self, order, first, slot, slots, epoch, worker, rng) -> Iterator[dict]:
        # whole shards per slot when there are enough of them; else every slot reads every
        # shard and keeps its share, except remote shards while encoding: each is read by
        # one slot (one download, whatever the number of workers)
        by_shard = len(order) >= slots or (
            self.ends and any(self.shards[i].remote for i in order)
        )
        for ordinal, shard_id in enumerate(order):
            if ordinal < first or (by_shard and ordinal % slots != slot):
                continue
            stamp = input_stamp(self.shards[shard_id]) if self.ends else None
            for n, sample in enumerate(iter_samples(self.shards[shard_id])):
                if not by_shard and n % slots != slot:
                    continue
                item = self._item(sample, rng, (worker, epoch, ordinal))
                if self.ends:
                    item["order"] = (shard_id, n)
                yield item
            if self.ends:
                yield {"end": (shard_id, 1 if by_shard else slots, stamp)}

    def _item(self, sample, rng: random.Random, pos: tuple) -> dict:
        where = {"source": sample.source, "index": sample.index}
        if sample.error:
            meta = {**where, "kind": sample.kind or "unreadable"}
            return {"key": sample.key, "error": sample.error, "pos": pos, "meta": meta}
        started = time.perf_counter()
        try:
            pixels, size, *touched = self._pixels(sample.data, rng)
        except DecodeError as exc:
            meta = {**where, "kind": exc.kind}
            return {"key": sample.key, "error": str(exc), "pos": pos, "meta": meta}
        meta = {**where, "caption": sample.caption, "label": sample.label, "size": size,
                "decode_s": time.perf_counter() - started}  # the run's decode ceiling  # fmt: skip
        if touched and touched[0]:  # what the input rule met (counted by encode)
            meta["touched"] = touched[0]
        return {"key": sample.key, "image": pixels, "pos": pos, "meta": meta}

    def _pixels(self, data: bytes, rng: random.Random):
        if self.photos or (self.train and self.short_side):
            img, size = decode_with_size(data, self.short_side, self.max_pixels)
            arr = np.array(short_side_resize(img, self.short_side), dtype=np.uint8)
            return (arr if self.photos else random_crop(arr, self.image_size, rng)), size
        if self.train:
            return decode_random_crop(data, self.image_size, rng, self.crop_scale, self.max_pixels)
        if self.native:
            return native_pixels(
                data, self.native, self.factor, self.resize, self.max_pixels, self.rule
            )
        return encode_pixels(
            data, self.image_size, self.resize, self.max_pixels, self.rule, self.draft
        )

    def _shuffled(self, items: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        buffer: list[dict] = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer


def collate(items: list[dict]) -> Batch:
    ends = [it["end"] for it in items if "end" in it]
    items = [it for it in items if "end" not in it]
    good = [it for it in items if "image" in it]
    size = good[0]["image"].shape if good else (3, 0, 0)
    if len({it["image"].shape for it in good}) > 1:  # native sizes: bucketed by the encoder
        images = [it["image"] for it in good]
    else:
        images = (
            torch.stack([it["image"] for it in good])
            if good
            else torch.empty(0, *size, dtype=torch.uint8)
        )
    return Batch(
        images=images,
        keys=[it["key"] for it in good],
        errors=[(it["key"], it["error"]) for it in items if "error" in it],
        positions=[it["pos"] for it in items],
        meta=[it["meta"] for it in good],
        error_meta=[it["meta"] for it in items if "error" in it],
        orders=[it["order"] for it in good if "order" in it],
        error_orders=[it["order"] for it in items if "error" in it and "order" in it],
        ends=ends,
    )


def _helper_thread_failed(kind, value, tb) -> None:
    """In a decode worker, a helper thread losing its connection (multiprocessing's
    resource sharer, handing a batch's shared memory to the main process) means the main
    process is gone or going: it stopped (SIGTERM) or failed, and says so itself. Not
    printed; anything else is."""
    helper = threading.current_thread() is not threading.main_thread()
    if helper and issubclass(kind, (ConnectionError, EOFError)):
        return
    sys.__excepthook__(kind, value, tb)


def _worker_init(worker_id: int) -> None:
    sys.excepthook = _helper_thread_failed


def make_loader(
    stream: ImageStream, batch_size: int, workers: int, pin_memory: bool = False
) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


class PositionTracker:
    """Turns the positions of consumed items into a safe resume point: the
    smallest shard any worker was still reading (shards before it are done)."""

    def __init__(self, start: StreamPosition):
        self.start = start
        self.latest: dict[int, tuple[int, int]] = {}

    def update(self, positions: list[tuple[int, int, int]]) -> None:
        for worker, epoch, shard in positions:
            if (epoch, shard) > self.latest.get(worker, (-1, -1)):
                self.latest[worker] = (epoch, shard)

    def position(self) -> StreamPosition:
        if not self.latest:
            return self.start
        epoch, shard = min(self.latest.values())
        return StreamPosition(epoch, shard)
