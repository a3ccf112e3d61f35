"""Streaming token rows from Parquet token shards for prior training.

The unit of work is a Parquet row group: row groups are dealt to (rank x
worker) slots, their order is reshuffled each epoch (seeded), rows pass
through a shuffle buffer, and every item carries (worker, epoch, ordinal) so
`--resume` restarts at row-group granularity, like the image stream does at
shard granularity. With fewer row groups than slots, every slot reads every
group and keeps every n-th row.

When the rows fit in `data.cache_mb` they are read once instead (`cache_rows`) and
batch `i` takes the rows at positions [i * B, (i + 1) * B) of a sequence of seeded
permutations (`cached_token_batches`), so a resumed run draws exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vqtool.data.loader import StreamPosition
from vqtool.runtime import rank, world_size
from vqtool.tokens.reader import TokenDataset
from vqtool.training.loop import StepBatch
from vqtool.utils import key_unit


def held_out(keys: list[str], fraction: float) -> np.ndarray:
    """Which rows a `fraction` hold-out keeps out of training: those whose key's hash falls
    under it (the same rows whatever the files, order, ranks or workers)."""
    if fraction <= 0:
        return np.zeros(len(keys), dtype=bool)
    return np.fromiter(map(key_unit, keys), dtype=np.float64, count=len(keys)) < fraction


class TokenStream(IterableDataset):
    def __init__(
        self,
        paths: list[str],
        seed: int = 0,
        start: StreamPosition | None = None,
        shuffle_buffer: int = 256,
        with_labels: bool = False,
        with_captions: bool = False,
        holdout: float = 0.0,
    ):
        self.paths = list(paths)
        self.holdout = holdout  # rows held out for evaluation are skipped
        self.with_captions = with_captions
        ds = TokenDataset.open(self.paths)
        self.groups = [(i, g) for i, f in enumerate(ds.files) for g in range(f.row_groups)]
        self.seed = seed
        self.start = start or StreamPosition()
        self.shuffle_buffer = shuffle_buffer
        self.with_labels = with_labels

    def __iter__(self) -> Iterator[dict]:
        ds = TokenDataset.open(self.paths)
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = rank() * workers + worker, world_size() * workers
        rng = random.Random(self.seed * 7919 + slot)
        epoch = self.start.epoch
        columns = ("tokens",) + ("label",) * self.with_labels + ("caption",) * self.with_captions
        columns += ("key",) * (self.holdout > 0)
        while True:
            order = list(range(len(self.groups)))
            random.Random(self.seed + epoch).shuffle(order)
            first = self.start.shard if epoch == self.start.epoch else 0
            by_group = len(order) >= slots
            buffer: list[dict] = []
            rows = 0
            for ordinal, gi in enumerate(order):
                if ordinal < first or (by_group and ordinal % slots != slot):
                    continue
                table = ds.read_row_group(*self.groups[gi], columns=columns)
                tokens = ds.tokens_of(table)
                labels = (
                    table.column("label").to_numpy(zero_copy_only=False)
                    if self.with_labels
                    else None
                )
                captions = table.column("caption").to_pylist() if self.with_captions else None
                skip = held_out(table.column("key").to_pylist(), self.holdout) if (
                    self.holdout > 0) else None  # fmt: skip
                for n in range(len(tokens)):
                    if (not by_group and n % slots != slot) or (skip is not None and skip[n]):
                        continue
                    label = labels[n] if labels is not None else None
                    item = {
                        "tokens": tokens[n],
                        "label": -1 if label is None or np.isnan(label) else int(label),
                        "pos": (worker, epoch, ordinal),
                    }
                    if captions is not None:
                        item["caption"] = captions[n]
                    buffer.append(item)
                    if len(buffer) >= self.shuffle_buffer:
                        rows += 1
                        yield buffer.pop(rng.randrange(len(buffer)))
            rng.shuffle(buffer)
            rows += len(buffer)
            yield from buffer
            if rows == 0 and epoch > self.start.epoch:
                return  # a whole epoch without a row: end rather than spin (the task says why)
            epoch += 1


def collate_tokens(items: list[dict]) -> StepBatch:
    tokens = torch.from_numpy(np.stack([it["tokens"] for it in items]).astype(np.int64))
    labels = torch.tensor([it["label"] for it in items], dtype=torch.long)
    captions = [it["caption"] for it in items] if "caption" in items[0] else None
    return StepBatch((tokens, labels, captions), len(items), [], [it["pos"] for it in items])


def token_loader(stream: TokenStream, batch_size: int, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_tokens,
        pin_memory=pin,
        prefetch_factor=2 if workers > 0 else None,
    )


def scan_labels(ds: TokenDataset) -> int:
    """Number of classes the rows' labels imply (max label + 1; 0 without labels)."""
    top = -1
    for f in ds.files:
        pf = f.open()
        if "label" not in pf.schema_arrow.names:
            continue
        for batch in pf.iter_batches(columns=["label"], batch_size=65536):
            col = batch.column(0)
            if col.null_count < len(col):
                top = max(top, int(pc.max(col).as_py()))
    return top + 1


def cache_rows(
    paths: list[str],
    with_labels: bool,
    max_bytes: int,
    with_captions: bool = False,
    holdout: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, list | None] | None:
    """(tokens (N, T) int64, labels (N,) with -1 for none, captions or None) of every
    row not held out, this rank's share (rows r, r + world, ...); None when they would
    exceed `max_bytes`."""
    ds = TokenDataset.open(paths)
    per_row = ds.tokens_per_image * 8 + 8
    if ds.rows * per_row > max_bytes:
        return None
    columns = ("tokens", "key") + ("label",) * with_labels + ("caption",) * with_captions
    tokens, labels, captions, held = [], [], [], []
    for i, f in enumerate(ds.files):
        for g in range(f.row_groups):
            table = ds.read_row_group(i, g, columns=columns)
            tokens.append(ds.tokens_of(table).astype(np.int64))
            if with_labels:
                col = table.column("label").to_numpy(zero_copy_only=False).astype(np.float64)
                labels.append(np.where(np.isnan(col), -1, col).astype(np.int64))
            else:
                labels.append(np.full(len(table), -1, dtype=np.int64))
            if with_captions:
                captions += table.column("caption").to_pylist()
            held.append(held_out(table.column("key").to_pylist(), holdout))
    keep = ~np.concatenate(held)
    all_tokens, all_labels = np.concatenate(tokens)[keep], np.concatenate(labels)[keep]
    captions = [c for c, k in zip(captions, keep) if k] if with_captions else captions
    share = slice(rank(), None, world_size())
    return all_tokens[share], all_labels[share], captions[share] if with_captions else None


def cached_token_batches(
    tokens: np.ndarray,
    labels: np.ndarray,
    captions: list | None,
    batch_size: int,
    seed: int,
    start: int = 0,
) -> Iterator[StepBatch]:
    """Endless batches from cached rows, batch `i` from `start` on: positions
    [i * B, (i + 1) * B) of one permutation per epoch, seeded by (seed, epoch). Each
    batch's `positions` is [(0, i + 1, 0)]: the index of the next batch to draw."""
    n = len(tokens)

    @functools.lru_cache(maxsize=2)  # consecutive batches ask for the same epoch or the next
    def permutation(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(n)

    index = start
    while True:
        positions = np.arange(index * batch_size, (index + 1) * batch_size)
        epochs = positions // n
        rows = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            take = epochs == epoch
            rows[take] = permutation(int(epoch))[positions[take] % n]
        index += 1
        texts = [captions[r] for r in rows] if captions is not None else None
        data = (torch.from_numpy(tokens[rows]), torch.from_numpy(labels[rows]), texts)
        yield StepBatch(data, batch_size, [], [(0, index, 0)])
