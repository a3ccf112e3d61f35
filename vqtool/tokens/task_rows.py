"""An encode task (`Task`: its name and input shards), its rows while its shards are
read (`TaskRows`: tagged by shard and member, so they are written in input order), and
images of their own sizes waiting in buckets of one size across loader batches
(`NativeBuffer`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from vqtool.data.samples import Shard


@dataclass
class Task:
    name: str
    shards: list[Shard]

@dataclass
class TaskRows:
    """One task's rows while its shards are read: tagged (shard in task, member) so they
    are written in input order; complete when every part of every shard has ended."""

    task: Task
    claim: contextlib.ExitStack
    free: object  # a `tasks.Held`; false: another process finished or holds the task
    # (its rows are dropped)
    tags: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    meta: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # [((shard, member), error record)]
    parts_left: dict = field(default_factory=dict)  # shard in task -> parts still reading
    stamps: list = field(default_factory=list)

    def __post_init__(self):
        self.stamps = [None] * len(self.task.shards)

    def add(self, tag: tuple, row, meta: dict) -> None:
        if self.free:
            self.tags.append(tag)
            self.tokens.append(row)
            self.meta.append(meta)

    def ended(self, shard: int, parts: int, stamp: dict | None) -> None:
        left = self.parts_left.get(shard, parts) - 1
        self.parts_left[shard] = left
        self.stamps[shard] = self.stamps[shard] or stamp

    @property
    def complete(self) -> bool:
        return len(self.parts_left) == len(self.task.shards) and not any(self.parts_left.values())

    def in_order(self) -> tuple:
        """The rows sorted by (shard, member): tokens (N, T) (or N rows of their own
        lengths) and the columns."""
        order = sorted(range(len(self.tags)), key=self.tags.__getitem__)
        names = self.meta[0].keys() if self.meta else []
        meta = {k: [self.meta[i][k] for i in order] for k in names}
        rows = [self.tokens[i] for i in order]
        if rows and len({len(r) for r in rows}) == 1:
            return np.stack(rows), meta
        return rows, meta


@dataclass
class NativeBuffer:
    """Images of their own sizes across tasks: buckets by size, finished rows by tag."""

    buckets: dict = field(default_factory=dict)  # shape -> [((task name, tag), image)]
    rows: dict = field(default_factory=dict)  # (task name, tag) -> (tokens, grid)
    meta: dict = field(default_factory=dict)  # (task name, tag) -> the row's columns
    waiting: int = 0

    def add(self, image: torch.Tensor, tag: tuple, meta: dict) -> None:
        self.buckets.setdefault(tuple(image.shape), []).append((tag, image))
        self.meta[tag] = meta
        self.waiting += 1

    def take(self, name: str) -> dict:
        """The finished rows of task `name`, by their (shard, member) tag."""
        mine = [t for t in self.rows if t[0] == name]
        return {t[1]: self.rows.pop(t) for t in mine}


def batch_columns(batch) -> dict[str, list]:
    """A loader batch's per-row columns, as the token file stores them."""
    return {
        "key": batch.keys,
        "source": [m["source"] for m in batch.meta],
        "source_index": [m["index"] for m in batch.meta],
        "caption": [m["caption"] for m in batch.meta],
        "label": [m["label"] for m in batch.meta],
        "width": [m["size"][0] for m in batch.meta],
        "height": [m["size"][1] for m in batch.meta],
    }
