"""The one Parquet writer for token shards: a finished task's rows go to
`NAME.parquet.<pid>.tmp`, and `commit` renames it to `NAME.parquet` (or, for
an object-store folder, uploads it as one object), then writes `NAME.errors.jsonl` and finally the
`NAME.done.json` marker. A task without its marker is not done: a rerun
deletes the leftovers and writes it again, so every sample ends up exactly
once."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.atomic import temporary
from vqtool.data.remote import Folder
from vqtool.errors import EncodeError
from vqtool.tokens.schema import read_vqtool_metadata

#: chosen by measurement (benchmarks/encode.py): dictionary-encoded tokens are
#: bit-packed at ceil(log2(distinct codes)) bits, and zstd squeezes the rest; a file
#: too small to pay for its dictionary page (fewer tokens than DICTIONARY_MIN_TOKENS per
#: code of the vocabulary) stores them BYTE_STREAM_SPLIT instead, which zstd brings to
#: about log2(V)/8 bytes per token with no page to pay for (1.14x against 1.22x of the
#: bound on 50-image files of a 1,000-code tokenizer; 0.98x vs 1.00x at 300 images)
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9
ROW_GROUP_ROWS = 2048
DICTIONARY_MIN_TOKENS = 32


def atomic_write_text(path: Path, text: str) -> None:
    Folder(Path(path).parent).write_text(Path(path).name, text)


class TaskWriter:
    """Writes one task's Parquet file: rows by `add`, then `commit` (or `abort`)."""

    def __init__(self, out: Folder | Path | str, name: str, schema: pa.Schema):
        self.out = out if isinstance(out, Folder) else Folder(out)
        self.name, self.schema = name, schema
        # an object store gets the finished file in one upload: stage it on local disk
        self.staging = Path(tempfile.mkdtemp(prefix="vqtool-")) if self.out.remote else Path(
            self.out.root
        )  # fmt: skip
        self.tmp = temporary(self.staging / f"{name}.parquet")
        self.tmp.unlink(missing_ok=True)
        for stale in (f"{name}.parquet", f"{name}.errors.jsonl"):
            self.out.remove(stale)
        self.writer: pq.ParquetWriter | None = None  # opened at the first row group
        self.rows = 0
        self.pending: list[dict] = []
        self.pending_rows = 0

    def add(self, tokens, meta: dict[str, list]) -> None:
        """`tokens` (B, T) unsigned ints, or B rows of their own lengths (native sizes, with
        `grid_h`/`grid_w` in `meta`); `meta` lists of key, source, ... of length B."""
        self.pending.append({"tokens": tokens, **meta})
        self.pending_rows += len(tokens)
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _open(self, tokens: int) -> pq.ParquetWriter:
        """The file's writer, its token encoding chosen by the first row group's size."""
        vocab = (read_vqtool_metadata(self.schema) or {}).get("vocab_size") or 1 << 16
        small = tokens < DICTIONARY_MIN_TOKENS * vocab
        column = "tokens.list.element"
        return pq.ParquetWriter(
            self.tmp,
            self.schema,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            use_dictionary=False if small else [column],
            column_encoding={column: "BYTE_STREAM_SPLIT"} if small else None,
            write_statistics=["key", "source_index"],
            store_schema=False,  # the Parquet types say it all; the Arrow copy cost 3 KB a file
        )

    def _flush(self) -> None:
        if not self.pending:
            return
        rows = [r for p in self.pending for r in p["tokens"]]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        if self.writer is None:
            self.writer = self._open(int(lengths.sum()))
        value_type = self.schema.field("tokens").type.value_type
        flat = pa.array(np.concatenate(rows) if rows else np.empty(0), type=value_type)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        columns = {"tokens": pa.ListArray.from_arrays(offsets, flat)}
        for name in (n for n in self.schema.names if n != "tokens"):
            values = [v for p in self.pending for v in p[name]]
            columns[name] = pa.array(values, type=self.schema.field(name).type)
        self.writer.write_table(
            pa.table(columns, schema=self.schema), row_group_size=ROW_GROUP_ROWS
        )
        self.rows += len(rows)
        self.pending, self.pending_rows = [], 0

    def commit(self, errors: list[dict], info: dict) -> dict:
        """Finish the file, rename it into place, then mark the task done."""
        self._flush()
        if self.writer is None:  # no row at all: an empty file of the schema
            self.writer = self._open(0)
        # the schema's metadata (vqtool, huggingface) as the file's key-value metadata: with
        # store_schema=False pyarrow writes neither it nor its 3 KB base64 Arrow copy
        meta = self.schema.metadata or {}
        self.writer.add_key_value_metadata({k.decode(): v.decode() for k, v in meta.items()})
        self.writer.close()
        size = self.tmp.stat().st_size
        digest = _md5(self.tmp) if self.out.remote else None
        self.out.put(self.tmp, f"{self.name}.parquet")
        part = self._verified(size, digest)
        if errors:
            lines = "".join(json.dumps(e) + "\n" for e in errors)
            self.out.write_text(f"{self.name}.errors.jsonl", lines)
        done = {**info, "rows": self.rows, "errors": len(errors), "bytes": size, "part": part}
        self.out.write_text(f"{self.name}.done.json", json.dumps(done, indent=1))
        self._drop_staging()
        return done

    def _verified(self, size: int, digest: str | None) -> dict:
        """The part as the folder shows it after the upload, checked: its size, and on an
        object store its ETag against the file's MD5 where the ETag is one (a single-part
        upload). The done marker records it and is written only after this check."""
        part = self.out.stamp(f"{self.name}.parquet")
        name = f"{self.out}/{self.name}.parquet"
        if part is None or part["size"] != size:
            shows = "nothing" if part is None else f"{part['size']:,} bytes"
            raise EncodeError(
                f"{name}: after the upload the store shows {shows}, not the {size:,} bytes "
                "written; the task is not marked done (rerun to retry it)"
            )
        etag = part["version"].strip('"')
        if digest and re.fullmatch(r"[0-9a-f]{32}", etag) and etag != digest:
            raise EncodeError(
                f"{name}: the stored object's MD5 (ETag {etag}) is not the file's ({digest}); "
                "the task is not marked done (rerun to retry it)"
            )
        return part

    def _drop_staging(self) -> None:
        if self.out.remote:
            shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self._drop_staging()


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
