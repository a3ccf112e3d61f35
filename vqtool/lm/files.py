"""The files `vqtool export` writes: one writer class per format (`open_writer`), and
the Megatron index they share with `export --merge`. Reading them back is `lm.exported`.

One task writes, under temporary names, then renames into place:
- `megatron`: `NAME.bin` + `NAME.idx`, Megatron-Core's indexed dataset (header
  `MMIDIDX\\x00\\x00`, version 1, dtype code, sequence and document counts,
  int32 lengths, int64 byte pointers, int64 document indices);
- `stream`: `NAME.bin`, the ids back to back with no header (nanoGPT, OLMo,
  torchtitan read it with `numpy.memmap`), and `NAME.offsets.npy`, int64
  document starts with the total at the end;
- `parquet`: `NAME.parquet`, `input_ids` (list<uint32>) per document with `key`
  and the passthrough columns; packed rows carry `document_starts` instead;
- always `NAME.docs.parquet`: one row per document (key, source, source_index,
  start and length in the file's token stream, caption position, label), so
  document N can be found, decoded and traced to its image in every format.

`pack` concatenates documents and cuts rows of `pack` tokens (the last row of a
file may be shorter); `pad_to` gives each document its own row of `pad_to`
tokens, filled with the pad id.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.atomic import commit, start_writeback, temporary
from vqtool.errors import TokenDataError
from vqtool.lm.arrow import as_array, caption_positions, numbers
from vqtool.lm.codec import BuiltBatch
from vqtool.lm.megatron import write_megatron_idx

FORMATS = ("megatron", "stream", "parquet")
DTYPES = {"megatron": ("uint16", "int32"), "stream": ("uint16", "uint32"), "parquet": ("uint32",)}
DOCS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_index", pa.int32()),
        pa.field("start", pa.int64()),
        pa.field("length", pa.int32()),
        pa.field("caption", pa.string()),
        pa.field("label", pa.int64()),
        pa.field("grid_h", pa.int32()),  # tokens of their own grids (encode --resize none|smart)
        pa.field("grid_w", pa.int32()),
    ]
)


def choose_dtype(fmt: str, max_id: int, asked: str = "auto") -> str:
    """The narrowest dtype of `fmt` that holds ids up to `max_id` (or the one asked for,
    refused when an id would overflow it)."""
    choices = DTYPES[fmt]
    if asked != "auto":
        if asked not in choices:
            raise TokenDataError(f"--dtype {asked}: {fmt} files hold {' or '.join(choices)}")
        if max_id > np.iinfo(asked).max:
            raise TokenDataError(
                f"--dtype {asked} holds ids up to {np.iinfo(asked).max}, but this layout makes "
                f"ids up to {max_id}; use --dtype {choices[-1]} (or auto)"
            )
        return asked
    for name in choices:
        if max_id <= np.iinfo(name).max:
            return name
    raise TokenDataError(f"ids up to {max_id} do not fit {fmt} files (at most {choices[-1]})")


def file_names(fmt: str, name: str, mask: bool = False) -> list[str]:
    """The files of one export task: the ids, (megatron, stream with a loss mask) the
    mask beside them, and the document index last."""
    main = {"megatron": [".bin", ".idx"], "stream": [".bin", ".offsets.npy"]}.get(fmt, [".parquet"])
    masks = {"megatron": [".mask.bin", ".mask.idx"], "stream": [".mask.bin"]}.get(fmt, [])
    return [name + ext for ext in main + (masks if mask else [])] + [f"{name}.docs.parquet"]


@dataclass
class Packing:
    pack: int | None = None  # concatenate and cut rows of this many tokens
    pad_to: int | None = None  # one document per row, padded to this many tokens
    pad_id: int | None = None

    def __post_init__(self):
        if self.pack is not None and self.pad_to is not None:
            raise TokenDataError("give --pack or --pad-to, not both")
        for flag, value in (("--pack", self.pack), ("--pad-to", self.pad_to)):
            if value is not None and value < 1:
                raise TokenDataError(f"{flag} {value}: give a row length of at least 1 token")
        if self.pad_to is not None and self.pad_id is None:
            raise TokenDataError("--pad-to needs the layout's pad token (set pad = ID)")


class DocumentWriter(abc.ABC):
    """Writes one export task's files under temporary names; `commit` renames them into
    place (the caller then writes the done marker). The base class lays documents out
    (padding, the document index); each format's subclass writes the ids (`_write`) and
    its own index files (`_close`)."""

    fmt = ""

    def __init__(self, out: Path, name: str, dtype: str, packing: Packing, mask: bool = False):
        self.out, self.name, self.packing = out, name, packing
        self.dtype = np.dtype(dtype)
        self.mask = mask  # a loss mask is written beside the ids (uint8, 1 = trained)
        self.finals = [out / n for n in file_names(self.fmt, name, mask)]
        self.tmps = [temporary(p) for p in self.finals]
        for p in self.finals + self.tmps:
            p.unlink(missing_ok=True)
        self.position = 0  # tokens written to the file's stream
        self.doc_lengths: list[np.ndarray] = []
        self.doc_tables: list[pa.Table] = []  # the document index, written by publish
        self.rows = 0
        self.pad_tokens = 0

    def add(self, built: BuiltBatch, meta: dict[str, list]) -> None:
        ids, lengths = built.ids.astype(self.dtype, copy=False), built.lengths
        loss = built.mask if self.mask else None
        if self.packing.pad_to is not None:
            stream, loss = self._padded(ids, lengths, loss, meta)
            doc_starts = self.position + np.arange(len(lengths)) * self.packing.pad_to
        else:
            stream = ids
            doc_starts = self.position + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._index(built, meta, doc_starts)
        self._write(stream, doc_starts - self.position, lengths, loss, meta)
        self.position += len(stream)

    def _padded(self, ids, lengths, loss, meta) -> tuple[np.ndarray, np.ndarray | None]:
        """One row of `pad_to` tokens per document (and its mask: padding is never trained)."""
        pad_to = self.packing.pad_to
        too_long = np.flatnonzero(lengths > pad_to)
        if len(too_long):
            i = int(too_long[0])
            raise TokenDataError(
                f"sample {meta['key'][i]!s}: a document of {int(lengths[i])} tokens does not "
                f"fit --pad-to {pad_to}; raise --pad-to or use --pack"
            )
        rows = np.full((len(lengths), pad_to), self.packing.pad_id, dtype=self.dtype)
        filled = np.arange(pad_to) < lengths[:, None]
        rows[filled] = ids
        if loss is not None:
            padded = np.zeros((len(lengths), pad_to), dtype=np.uint8)
            padded[filled] = loss
            loss = padded.reshape(-1)
        self.pad_tokens += int(rows.size - lengths.sum())
        return rows.reshape(-1), loss

    def _index(self, built: BuiltBatch, meta: dict[str, list], doc_starts: np.ndarray) -> None:
        n = len(built.lengths)
        self.doc_tables.append(pa.table({
            "key": as_array(meta["key"], pa.string()),
            "source": as_array(meta["source"], pa.string()),
            "source_index": as_array(meta["source_index"], pa.int32()),
            "start": numbers(np.asarray(doc_starts), pa.int64()),
            "length": numbers(np.asarray(built.lengths), pa.int32()),
            "caption": caption_positions(built.positions, n),
            "label": as_array(meta["label"], pa.int64()),
            "grid_h": as_array(meta.get("grid_h", pa.nulls(n)), pa.int32()),
            "grid_w": as_array(meta.get("grid_w", pa.nulls(n)), pa.int32()),
        }, schema=DOCS_SCHEMA))  # fmt: skip
        self.doc_lengths.append(np.asarray(built.lengths, dtype=np.int64))

    @abc.abstractmethod
    def _write(self, stream, starts, lengths, loss, meta) -> None:
        """Write a batch's ids (`starts`: each document's start within `stream`)."""

    @abc.abstractmethod
    def _close(self, lengths: np.ndarray) -> None:
        """Write the last bytes and this format's index files; set `self.rows`."""

    @abc.abstractmethod
    def _closers(self) -> list:
        """The open files `abort` closes."""

    def commit(self) -> dict:
        """Finish and rename every file into place; returns the file facts for the marker."""
        facts = self.finish()
        facts["files"][self.finals[-1].name] = self.publish()
        return facts

    def finish(self) -> dict:
        """Write the last bytes and the indexes to the temporary files and close them; the
        file facts for the marker (`publish` then makes the files durable and renames)."""
        lengths = np.concatenate(self.doc_lengths) if self.doc_lengths else np.empty(0, np.int64)
        self._close(lengths)
        return {
            "documents": len(lengths),
            "tokens": int(lengths.sum()),
            "stream_tokens": self.position,
            "rows": self.rows,
            "pad_tokens": self.pad_tokens,
            "files": {
                f.name: t.stat().st_size
                for t, f in zip(self.tmps, self.finals)
                if t != self.tmps[-1]
            },
        }

    def publish(self) -> int:
        """Write the document index, fsync each finished file and rename it into place (the
        index last); the index's size. Runs on the export's commit thread."""
        docs = pa.concat_tables(self.doc_tables) if self.doc_tables else DOCS_SCHEMA.empty_table()
        pq.write_table(docs, self.tmps[-1], compression="zstd", write_statistics=False,
                       use_dictionary=["source", "caption"])  # fmt: skip
        size = self.tmps[-1].stat().st_size
        for tmp, final in zip(self.tmps, self.finals):
            commit(tmp, final, sync=True)
        return size

    def abort(self) -> None:
        for closer in self._closers():
            try:
                closer.close()
            except Exception:  # noqa: BLE001 - already failing; remove what was written
                pass
        for p in self.tmps:
            p.unlink(missing_ok=True)


class _RawWriter(DocumentWriter):
    """The ids back to back in `NAME.bin` (and the mask in `NAME.mask.bin`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.main = open(self.tmps[0], "wb")
        self.mask_file = open(self.tmps[2], "wb") if self.mask else None

    def _write(self, stream, starts, lengths, loss, meta) -> None:
        stream.tofile(self.main)
        start_writeback(self.main)  # the disk writes while the next batch is built
        if loss is not None:
            loss.tofile(self.mask_file)

    def _closers(self) -> list:
        return [f for f in (self.main, self.mask_file) if f is not None]

    def _close(self, lengths: np.ndarray) -> None:
        for f in self._closers():
            f.close()


class MegatronWriter(_RawWriter):
    """`NAME.bin` + `NAME.idx`, Megatron-Core's indexed dataset (the mask as its own)."""

    fmt = "megatron"

    def _close(self, lengths: np.ndarray) -> None:
        super()._close(lengths)
        pack, pad_to = self.packing.pack, self.packing.pad_to
        if pack:
            full, rest = divmod(self.position, pack)
            seq = np.asarray([pack] * full + ([rest] if rest else []), dtype=np.int32)
        elif pad_to:
            seq = np.full(len(lengths), pad_to, dtype=np.int32)
        else:
            seq = lengths.astype(np.int32)
        write_megatron_idx(self.tmps[1], seq, self.dtype)
        if self.mask:  # the mask as its own indexed dataset: same sizes, uint8
            write_megatron_idx(self.tmps[3], seq, np.dtype(np.uint8))
        self.rows = len(seq)


class StreamWriter(_RawWriter):
    """`NAME.bin` with no header and `NAME.offsets.npy` (document starts, total last)."""

    fmt = "stream"

    def _close(self, lengths: np.ndarray) -> None:
        super()._close(lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        with open(self.tmps[1], "wb") as f:
            np.save(f, starts)
        self.rows = len(lengths)


class ParquetDocWriter(DocumentWriter):
    """`NAME.parquet`: one row per document (`input_ids` with the passthrough columns), or
    packed rows of `pack` tokens with `document_starts`."""

    fmt = "parquet"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.schema = self._schema()
        self.main = pq.ParquetWriter(self.tmps[0], self.schema, compression="zstd")
        self.carry = np.empty(0, dtype=self.dtype)  # packed: the unfinished row
        self.carry_mask = np.empty(0, dtype=np.uint8)
        self.carry_starts: list[int] = []

    def _schema(self) -> pa.Schema:
        fields = [pa.field("input_ids", pa.list_(pa.uint32()))]
        if self.mask:
            fields.append(pa.field("loss_mask", pa.list_(pa.uint8())))
        if self.packing.pack:
            fields.append(pa.field("document_starts", pa.list_(pa.int32())))
        else:
            fields += [
                pa.field("key", pa.string()),
                pa.field("source", pa.string()),
                pa.field("source_index", pa.int32()),
                pa.field("caption", pa.string()),
                pa.field("label", pa.int64()),
            ]
        features = {"input_ids": {"feature": {"dtype": "uint32", "_type": "Value"},
                                  "_type": "Sequence"}}  # fmt: skip
        return pa.schema(fields, metadata={b"huggingface": json.dumps(
            {"info": {"features": features}}).encode()})  # fmt: skip

    def _lists(self, offsets: np.ndarray, stream: np.ndarray, loss) -> dict:
        ids = numbers(stream.astype(np.uint32), pa.uint32())
        starts = numbers(offsets.astype(np.int32), pa.int32())
        out = {"input_ids": pa.ListArray.from_arrays(starts, ids)}
        if self.mask:
            mask = numbers(np.asarray(loss).astype(np.uint8), pa.uint8())
            out["loss_mask"] = pa.ListArray.from_arrays(starts, mask)
        return out

    def _write(self, stream, starts, lengths, loss, meta) -> None:
        if self.packing.pack:
            self._add_packed(stream, starts, loss)
            return
        n, row_len = len(lengths), self.packing.pad_to
        offsets = (np.arange(n + 1) * row_len if row_len else
                   np.concatenate([[0], np.cumsum(lengths)])).astype(np.int32)  # fmt: skip
        table = pa.table({
            **self._lists(offsets, stream, loss),
            **{k: as_array(meta[k], self.schema.field(k).type)
               for k in ("key", "source", "source_index", "caption", "label")},
        }, schema=self.schema)  # fmt: skip
        self.main.write_table(table)
        self.rows += n

    def _add_packed(self, stream: np.ndarray, starts: np.ndarray, loss=None) -> None:
        n = self.packing.pack
        base = len(self.carry)
        stream = np.concatenate([self.carry, stream])
        if loss is not None:
            loss = np.concatenate([self.carry_mask, loss])
        all_starts = self.carry_starts + (starts + base).tolist()
        full = len(stream) // n
        if full:
            cut = None if loss is None else loss[: full * n]
            self._write_packed_rows(stream[: full * n], all_starts, full, cut)
        if loss is not None:
            self.carry_mask = loss[full * n :]
        self.carry = stream[full * n :]
        self.carry_starts = [s - full * n for s in all_starts if s >= full * n]

    def _write_packed_rows(self, stream: np.ndarray, starts: list[int], rows: int, loss=None):
        n = self.packing.pack if rows * self.packing.pack == len(stream) else len(stream)
        offsets = np.minimum(np.arange(rows + 1) * n, len(stream)).astype(np.int32)
        starts_arr = np.asarray([s for s in starts if s < len(stream)], dtype=np.int64)
        counts = np.bincount(starts_arr // n, minlength=rows)
        start_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        table = pa.table({
            **self._lists(offsets, stream, loss),
            "document_starts": pa.ListArray.from_arrays(
                numbers(start_offsets, pa.int32()),
                numbers((starts_arr % n).astype(np.int32), pa.int32())),
        }, schema=self.schema)  # fmt: skip
        self.main.write_table(table)
        self.rows += rows

    def _closers(self) -> list:
        return [self.main]

    def _close(self, lengths: np.ndarray) -> None:
        if self.packing.pack and len(self.carry):
            self._write_packed_rows(self.carry, self.carry_starts, 1, self.carry_mask)
        self.main.close()


WRITERS: dict[str, type[DocumentWriter]] = {w.fmt: w for w in (MegatronWriter, StreamWriter,
                                                                ParquetDocWriter)}  # fmt: skip


def open_writer(
    out: Path, name: str, fmt: str, dtype: str, packing: Packing, mask: bool = False
) -> DocumentWriter:
    """The writer of one export task's files in format `fmt`."""
    if fmt not in WRITERS:
        raise TokenDataError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    return WRITERS[fmt](out, name, dtype, packing, mask)
