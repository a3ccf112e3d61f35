"""The one Parquet writer for token shards: rows go to `NAME.parquet.tmp`
from a background thread (so the model never waits on compression), and
`commit` renames it to `NAME.parquet`, then writes `NAME.errors.jsonl` and
finally the `NAME.done.json` marker. A task without its marker is not done:
a rerun deletes the leftovers and writes it again, so every sample ends up
exactly once."""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: chosen by measurement (benchmarks/encode.py): dictionary-encoded tokens are
#: bit-packed at ceil(log2(distinct codes)) bits, and zstd squeezes the rest
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9
ROW_GROUP_ROWS = 2048


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ranks may write the same file
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TaskWriter:
    """Writes one task's Parquet file; `add` may be called from any thread."""

    def __init__(self, out_dir: Path, name: str, schema: pa.Schema):
        self.out_dir, self.name, self.schema = out_dir, name, schema
        self.final = out_dir / f"{name}.parquet"
        self.tmp = out_dir / f"{name}.parquet.tmp"
        for stale in (self.tmp, self.final, out_dir / f"{name}.errors.jsonl"):
            stale.unlink(missing_ok=True)
        self.writer = pq.ParquetWriter(
            self.tmp,
            schema,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            use_dictionary=["tokens.list.element"],
            write_statistics=["key", "source_index"],
        )
        self.rows = 0
        self.pending: list[dict] = []
        self.pending_rows = 0

    def add(self, tokens: np.ndarray, meta: dict[str, list]) -> None:
        """`tokens` (B, T) unsigned ints; `meta` lists of key, source, ... of length B."""
        self.pending.append({"tokens": tokens, **meta})
        self.pending_rows += len(tokens)
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        tokens = np.concatenate([p["tokens"] for p in self.pending])
        value_type = self.schema.field("tokens").type.value_type
        flat = pa.array(tokens.reshape(-1), type=value_type)
        offsets = pa.array(np.arange(0, tokens.size + 1, tokens.shape[1], dtype=np.int32))
        columns = {"tokens": pa.ListArray.from_arrays(offsets, flat)}
        for name in ("key", "source", "source_index", "caption", "label", "width", "height"):
            values = [v for p in self.pending for v in p[name]]
            columns[name] = pa.array(values, type=self.schema.field(name).type)
        self.writer.write_table(
            pa.table(columns, schema=self.schema), row_group_size=ROW_GROUP_ROWS
        )
        self.rows += len(tokens)
        self.pending, self.pending_rows = [], 0

    def commit(self, errors: list[dict], info: dict) -> dict:
        """Finish the file, rename it into place, then mark the task done."""
        self._flush()
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.final)
        if errors:
            lines = "".join(json.dumps(e) + "\n" for e in errors)
            atomic_write_text(self.out_dir / f"{self.name}.errors.jsonl", lines)
        done = {
            **info,
            "rows": self.rows,
            "errors": len(errors),
            "bytes": self.final.stat().st_size,
        }
        atomic_write_text(self.out_dir / f"{self.name}.done.json", json.dumps(done, indent=1))
        return done

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class BackgroundWriter:
    """Runs `TaskWriter.add` calls on one thread; errors surface on the next call."""

    def __init__(self, max_pending: int = 8):
        self.queue: queue.Queue = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="vqtool-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                self.queue.task_done()
                return
            writer, tokens, meta = item
            try:
                if self.error is None:
                    writer.add(tokens, meta)
            except BaseException as exc:  # surfaced to the caller by `_check`
                self.error = exc
            finally:
                self.queue.task_done()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, writer: TaskWriter, tokens: np.ndarray, meta: dict) -> None:
        self._check()
        self.queue.put((writer, tokens, meta))

    def drain(self) -> None:
        """Wait until every submitted batch is written."""
        self.queue.join()
        self._check()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
