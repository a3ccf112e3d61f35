"""One export task: an input token file's rows through the layout in batches, into
the format's files under temporary names (`run_task`); `Committer` then makes each
finished task durable on a background thread while the next one is built."""

from __future__ import annotations

import collections
import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from vqtool.atomic import replacing
from vqtool.errors import TokenDataError
from vqtool.lm.files import open_writer
from vqtool.tokens.reader import TokenDataset
from vqtool.tokens.writer import atomic_write_text
from vqtool.utils import key_unit

MANIFEST = "export.json"
#: the token file's columns an export reads
COLUMNS = ("key", "tokens", "source", "source_index", "caption", "label")


@dataclass
class Task:
    name: str
    path: str
    rows: int
    file: object  # TokenFile
    epoch: int = 0


def plan(ds: TokenDataset, epochs: int = 1) -> list[Task]:
    """One task per input file and epoch, named after the file (prefixed by its position
    when two input folders hold files of the same name; epochs after the first by
    `epoch-E-`)."""
    if epochs < 1:
        raise TokenDataError(f"--epochs {epochs}: give 1 or more")
    stems = [f.name[: -len(".parquet")] for f in ds.files]
    unique = len(set(stems)) == len(stems)
    return [
        Task((f"epoch-{e:03d}-" if e else "") + (stem if unique else f"{i:06d}-{stem}"),
              f.path, f.rows, f, e)
        for e in range(epochs)
        for i, (stem, f) in enumerate(zip(stems, ds.files))
    ]  # fmt: skip


def add_counts(result, info: dict) -> None:
    """Add a done marker's counts to an `ExportResult`."""
    for key in ("documents", "tokens", "rows", "pad_tokens", "text_tokens", "missing_captions"):
        setattr(result, key, getattr(result, key) + int(info.get(key, 0)))


class Committer:
    """Makes each finished task durable on one background thread while the next tasks are
    read and built: fsync and rename its files, pin the folder, write its done marker,
    then release its claim. Up to `AHEAD` built tasks wait for the thread (the disk's
    fsyncs, not the building, set the pace); an error surfaces at the next submit or at
    the end, and a built task still commits."""

    AHEAD = 2

    def __init__(self, result, callback):
        from concurrent.futures import ThreadPoolExecutor

        self.result, self.callback = result, callback
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vqtool-commit")
        self.pending: collections.deque = collections.deque()

    def submit(self, name: str, publish, claim: contextlib.ExitStack) -> None:
        while self.pending and (self.pending[0][1].done() or len(self.pending) >= self.AHEAD):
            self._collect_one()
        self.pending.append((name, self.pool.submit(publish), claim))

    def _collect_one(self) -> None:
        name, future, claim = self.pending.popleft()
        try:
            info = future.result()
        finally:
            claim.close()
        self.result.tasks_done += 1
        add_counts(self.result, info)
        self.callback("task", {"name": name, **info})

    def __enter__(self) -> Committer:
        return self

    def __exit__(self, *exc) -> None:
        try:
            error = None
            while self.pending:  # on an error too: a built task still commits, exactly once
                try:
                    self._collect_one()
                except BaseException as e:  # noqa: BLE001 - the others still commit
                    error = error or e
            if error is not None:
                raise error
        finally:
            self.pool.shutdown()


def _columns(task, layout, cfg) -> tuple[list[str], dict[str, bool]]:
    """The token file's columns to read, and which of key/caption/label the layout reads
    as values (captions to tokenize, labels, keys that seed a sample's draws)."""
    names = task.file.open().schema_arrow.names
    columns = [c for c in (*COLUMNS, "grid_h", "grid_w") if c in names]
    spec = layout.spec
    wants = {
        "key": spec.draws or spec.class_offset is not None,
        "caption": spec.caption != "none",
        "label": layout.class_base is not None,
    }
    if not wants["caption"] and cfg.format != "parquet":  # caption texts go nowhere
        columns = [c for c in columns if c != "caption"]
    return columns, wants


def _batches(task, columns: list[str], cfg, threads: bool = True):
    """The task's row batches (with --split, this split's rows only); `threads`: decoded
    on Arrow's threads, or on the caller's alone."""
    for batch in task.file.batches(columns, cfg.batch_rows, threads):
        if cfg.part is not None:
            units = np.fromiter(map(key_unit, batch.column("key").to_pylist()), np.float64)
            batch = batch.filter(pa.array((units >= cfg.part[1]) & (units < cfg.part[2])))
        if batch.num_rows:
            yield batch


def _build(batch, columns, wants, ds, layout, dtype, epoch: int):
    """A batch's documents and the columns passed through to the files (arrow columns
    as they are; Python lists only where the layout reads values)."""
    n = batch.num_rows
    meta = {c: batch.column(c) if c in columns else pa.nulls(n) for c in COLUMNS if c != "tokens"}
    lists = {c: meta[c].to_pylist() if wants[c] else [None] * n for c in wants}
    if "grid_h" not in columns:
        built = layout.build(ds.tokens_of(batch), lists["key"], lists["caption"], lists["label"],
                             dtype, epoch)  # fmt: skip
        return built, meta
    meta["grid_h"], meta["grid_w"] = batch.column("grid_h"), batch.column("grid_w")
    col = batch.column("tokens")
    grids = list(zip(meta["grid_h"].to_pylist(), meta["grid_w"].to_pylist()))
    built = layout.build_per_grid(col.to_pylist(), grids, lists, dtype, epoch,
                                  col.type.value_type.to_pandas_dtype())  # fmt: skip
    return built, meta


class ReadAhead:
    """Reads the tasks' rows (decoded Parquet batches) on `READERS` background threads, at
    most `READERS` tasks ahead of the one being built and written, handed over in task
    order: pyarrow decodes without the GIL, so decoding the next tasks overlaps building,
    writing and the commit thread's fsync (decoding is most of an image-only export's
    work). Each reader decodes its file on its own thread when there are several tasks
    (two files decoded at once cost less CPU than each on Arrow's pool, where its threads
    hand row groups to one another), on Arrow's threads when there is one. Batches stream
    through a queue per task. Memory: `READERS` tasks' batches at most besides the one
    being written."""

    READERS = 2
    _END = object()

    def __init__(self, tasks: list, layout, cfg):
        self.tasks, self.layout, self.cfg = tasks, layout, cfg
        self.queues = [queue.Queue() for _ in tasks]
        # a task's slot is taken before its index, under one lock: slots go to tasks in
        # order, so the lowest task not yet written always has one (no deadlock)
        self.slots = threading.Semaphore(self.READERS + 1)
        self.lock = threading.Lock()
        self.next = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._read_all, daemon=True,
                                         name=f"vqtool-read-{r}")
                        for r in range(min(self.READERS, len(tasks)))]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def _take(self) -> int | None:
        with self.lock:
            self.slots.acquire()
            if self.stop.is_set() or self.next >= len(self.tasks):
                self.slots.release()
                return None
            self.next += 1
            return self.next - 1

    def _read_all(self) -> None:
        while (i := self._take()) is not None:
            task, q = self.tasks[i], self.queues[i]
            try:
                columns, wants = _columns(task, self.layout, self.cfg)
                q.put((columns, wants))
                for batch in _batches(task, columns, self.cfg, len(self.tasks) < 2):
                    if self.stop.is_set():
                        return
                    q.put(batch)
                q.put(self._END)
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread instead
                q.put(exc)
                return

    def rows(self, i: int) -> tuple[list[str], dict, Iterator]:
        """(columns, the values the layout reads, batches) of task `i`; tasks are taken in
        order (a skipped one still through here, so the next is read)."""
        q = self.queues[i]
        head = q.get()
        if isinstance(head, BaseException):
            raise head

        def batches():
            try:
                while (item := q.get()) is not self._END:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                self.slots.release()

        return (*head, batches())

    def skip(self, i: int) -> None:
        """Task `i` is not written here (another process finished it): drop its rows."""
        for _ in self.rows(i)[2]:
            pass

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for _ in range(len(self.tasks) + self.READERS):
            self.slots.release()
        for q in self.queues:  # unblock nothing: the queues are unbounded
            q.put(self._END)


def run_task(task, ds, layout, cfg, out, dtype, packing, config_hash, pin, rows):
    """One input file's documents, written to temporary files; returns the function that
    makes them durable, renames them into place and writes the done marker (`pin`, the
    folder's manifest on the first commit, runs before it), and returns the marker.
    `rows`: the task's (columns, wanted values, batches) read ahead (`ReadAhead`)."""
    writer = open_writer(out, task.name, cfg.format, dtype, packing, layout.spec.loss != "all")
    longest = None if cfg.allow_split_documents else cfg.pack
    text_tokens = missing = 0
    try:
        columns, wants, batches = rows
        for batch in batches:
            built, meta = _build(batch, columns, wants, ds, layout, dtype, task.epoch)
            text_tokens += built.text_tokens
            missing += built.missing_captions
            if longest and len(built.lengths) and int(built.lengths.max()) > longest:
                raise TokenDataError(
                    f"{task.name}: a document of {int(built.lengths.max())} tokens is longer "
                    f"than --pack {longest} and would be split across rows; raise --pack, or "
                    "pass --allow-split-documents"
                )
            writer.add(built, meta)
        facts = writer.finish()
    except BaseException:
        writer.abort()
        raise
    info = {
        "config_hash": config_hash,
        "source": str(task.path),
        "source_rows": task.rows,
        **facts,
        "text_tokens": text_tokens,
        "missing_captions": missing,
    }

    def publish() -> dict:
        try:
            info["files"][writer.finals[-1].name] = writer.publish()
        except BaseException:
            writer.abort()
            raise
        if pin is not None:
            pin()
        # the files are on disk (fsynced) before the marker names them; the marker itself
        # is not synced: lost in a power cut, the task is only exported again
        with replacing(out / f"{task.name}.done.json") as tmp:
            tmp.write_text(json.dumps(info, indent=1))
        return info

    return publish


def refresh_manifest(out: Path) -> None:
    """Record every finished file's counts in the manifest (any rank may; each writes what
    the done markers say at that moment)."""
    path = out / MANIFEST
    manifest = json.loads(path.read_text())
    files = {}
    merged = []
    for marker in sorted(out.glob("*.done.json")):
        info = json.loads(marker.read_text())
        if info.get("merged_into"):  # its documents are in a merged file now
            continue
        name = marker.name[: -len(".done.json")]
        merged += [name] if "tasks" in info else []
        files[name] = {
            k: info.get(k) for k in ("documents", "tokens", "rows", "pad_tokens", "text_tokens")
        }
    manifest["files"] = files
    if merged:
        manifest["merged"] = merged
    manifest["documents"] = sum(f["documents"] or 0 for f in files.values())
    manifest["total_tokens"] = sum(f["tokens"] or 0 for f in files.values())
    atomic_write_text(path, json.dumps(manifest, indent=1))
