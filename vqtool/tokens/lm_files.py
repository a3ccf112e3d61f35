"""The files `vqtool export` writes, and reading documents back out of them.

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

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.atomic import commit, start_writeback, temporary
from vqtool.errors import TokenDataError
from vqtool.tokens.lm_documents import BuiltBatch, ResolvedLayout
from vqtool.tokens.lm_layout import LayoutSpec
from vqtool.tokens.text import TextTokenizer
from vqtool.utils import config_from_dict

FORMATS = ("megatron", "stream", "parquet")
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {"uint8": 1, "uint16": 8, "int32": 4}  # Megatron-Core's DType enum
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


def _as(values, type_: pa.DataType) -> pa.Array:
    """A column (arrow array or Python list) as an arrow array of `type_`."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == type_ else values.cast(type_)
    return pa.array(values, type_)


def _positions(positions: list[str] | str, n: int) -> pa.Array:
    """The caption position per document (one string: the same for all)."""
    if isinstance(positions, str):
        return pa.repeat(pa.scalar(positions, pa.string()), n)
    return pa.array(positions, pa.string())


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


def write_megatron_idx(path: Path, seq: np.ndarray, dtype: np.dtype) -> None:
    """A Megatron-Core `.idx` (MMIDIDX version 1) for sequences of lengths `seq` in
    `dtype`, each sequence its own document."""
    pointers = np.concatenate([[0], np.cumsum(seq.astype(np.int64))[:-1]]) * dtype.itemsize
    with open(path, "wb") as f:
        f.write(MEGATRON_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", MEGATRON_CODES[dtype.name]))
        f.write(struct.pack("<Q", len(seq)))
        f.write(struct.pack("<Q", len(seq) + 1))
        f.write(seq.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(np.arange(len(seq) + 1, dtype="<i8").tobytes())


class DocumentWriter:
    """Writes one export task's files; `commit` renames them into place (the caller then
    writes the done marker)."""

    def __init__(
        self, out: Path, name: str, fmt: str, dtype: str, packing: Packing, mask: bool = False
    ):
        if fmt not in FORMATS:
            raise TokenDataError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
        self.out, self.name, self.fmt, self.packing = out, name, fmt, packing
        self.dtype = np.dtype(dtype)
        self.mask = mask  # a loss mask is written beside the ids (uint8, 1 = trained)
        self.finals = [out / n for n in file_names(fmt, name, mask)]
        self.tmps = [temporary(p) for p in self.finals]
        for p in self.finals + self.tmps:
            p.unlink(missing_ok=True)
        self.position = 0  # tokens written to the file's stream
        self.doc_lengths: list[np.ndarray] = []
        self.doc_tables: list[pa.Table] = []  # the document index, written by publish
        self.main = self.mask_file = None
        if fmt in ("megatron", "stream"):
            self.main = open(self.tmps[0], "wb")
            if mask:
                self.mask_file = open(self.tmps[2], "wb")
        else:
            self.parquet_schema = self._parquet_schema()
            self.main = pq.ParquetWriter(self.tmps[0], self.parquet_schema, compression="zstd")
        self.carry = np.empty(0, dtype=self.dtype)  # packed parquet: the unfinished row
        self.carry_mask = np.empty(0, dtype=np.uint8)
        self.carry_starts: list[int] = []
        self.rows = 0
        self.pad_tokens = 0

    def _parquet_schema(self) -> pa.Schema:
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

    def add(self, built: BuiltBatch, meta: dict[str, list]) -> None:
        ids, lengths = built.ids.astype(self.dtype, copy=False), built.lengths
        pad_to = self.packing.pad_to
        if pad_to is not None:
            too_long = np.flatnonzero(lengths > pad_to)
            if len(too_long):
                i = int(too_long[0])
                raise TokenDataError(
                    f"sample {meta['key'][i]!s}: a document of {int(lengths[i])} tokens does not "
                    f"fit --pad-to {pad_to}; raise --pad-to or use --pack"
                )
            rows = np.full((len(lengths), pad_to), self.packing.pad_id, dtype=self.dtype)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            mask = np.arange(pad_to) < lengths[:, None]
            rows[mask] = ids
            if self.mask:  # padding is never trained
                loss = np.zeros((len(lengths), pad_to), dtype=np.uint8)
                loss[mask] = built.mask
                loss = loss.reshape(-1)
            self.pad_tokens += int(rows.size - lengths.sum())
            stream, doc_starts = rows.reshape(-1), self.position + np.arange(len(lengths)) * pad_to
        else:
            loss = built.mask if self.mask else None
            stream = ids
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            doc_starts = self.position + starts
        n = len(lengths)
        self.doc_tables.append(pa.table({
            "key": _as(meta["key"], pa.string()), "source": _as(meta["source"], pa.string()),
            "source_index": _as(meta["source_index"], pa.int32()),
            "start": pa.array(doc_starts, pa.int64()),
            "length": pa.array(lengths, pa.int32()),
            "caption": _positions(built.positions, n),
            "label": _as(meta["label"], pa.int64()),
            "grid_h": _as(meta.get("grid_h", pa.nulls(n)), pa.int32()),
            "grid_w": _as(meta.get("grid_w", pa.nulls(n)), pa.int32()),
        }, schema=DOCS_SCHEMA))  # fmt: skip
        self.doc_lengths.append(np.asarray(lengths, dtype=np.int64))
        if self.fmt in ("megatron", "stream"):
            stream.tofile(self.main)
            start_writeback(self.main)  # the disk writes while the next batch is built
            if self.mask:
                loss.tofile(self.mask_file)
        elif self.packing.pack:
            self._add_packed(stream, doc_starts - self.position, loss)
        else:
            row_len = pad_to if pad_to is not None else None
            offsets = (np.arange(n + 1) * row_len if row_len else
                       np.concatenate([[0], np.cumsum(lengths)])).astype(np.int32)  # fmt: skip
            table = pa.table({
                "input_ids": pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(stream.astype(np.uint32), pa.uint32())),
                **({"loss_mask": pa.ListArray.from_arrays(pa.array(offsets), pa.array(loss))}
                   if self.mask else {}),
                **{k: _as(meta[k], self.parquet_schema.field(k).type)
                   for k in ("key", "source", "source_index", "caption", "label")},
            }, schema=self.parquet_schema)  # fmt: skip
            self.main.write_table(table)
            self.rows += n
        self.position += len(stream)

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
        row_of = starts_arr // n
        counts = np.bincount(row_of, minlength=rows)
        start_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        table = pa.table({
            "input_ids": pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(stream.astype(np.uint32), pa.uint32())),
            **({"loss_mask": pa.ListArray.from_arrays(pa.array(offsets), pa.array(loss))}
               if self.mask else {}),
            "document_starts": pa.ListArray.from_arrays(
                pa.array(start_offsets), pa.array((starts_arr % n).astype(np.int32))),
        }, schema=self.parquet_schema)  # fmt: skip
        self.main.write_table(table)
        self.rows += rows

    def commit(self) -> dict:
        """Finish and rename every file into place; returns the file facts for the marker."""
        facts = self.finish()
        facts["files"][self.finals[-1].name] = self.publish()
        return facts

    def finish(self) -> dict:
        """Write the last bytes and the indexes to the temporary files and close them; the
        file facts for the marker (`publish` then makes the files durable and renames)."""
        lengths = np.concatenate(self.doc_lengths) if self.doc_lengths else np.empty(0, np.int64)
        if self.fmt == "parquet" and self.packing.pack and len(self.carry):
            self._write_packed_rows(self.carry, self.carry_starts, 1, self.carry_mask)
        self.main.close()
        if self.mask_file is not None:
            self.mask_file.close()
        if self.fmt == "megatron":
            self.rows = self._write_idx(lengths, self.tmps[1], self.dtype)
            if self.mask:  # the mask as its own indexed dataset: same sizes, uint8
                self._write_idx(lengths, self.tmps[3], np.dtype(np.uint8))
        elif self.fmt == "stream":
            starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            with open(self.tmps[1], "wb") as f:
                np.save(f, starts)
            self.rows = len(lengths)
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

    def _write_idx(self, doc_lengths: np.ndarray, path: Path, dtype: np.dtype) -> int:
        pack, pad_to = self.packing.pack, self.packing.pad_to
        if pack:
            full, rest = divmod(self.position, pack)
            seq = np.asarray([pack] * full + ([rest] if rest else []), dtype=np.int32)
        elif pad_to:
            seq = np.full(len(doc_lengths), pad_to, dtype=np.int32)
        else:
            seq = doc_lengths.astype(np.int32)
        write_megatron_idx(path, seq, dtype)
        return len(seq)

    def abort(self) -> None:
        for closer in (self.main, self.mask_file):
            try:
                closer.close()
            except Exception:  # noqa: BLE001 - already failing; remove what was written
                pass
        for p in self.tmps:
            p.unlink(missing_ok=True)


def _loose(text: str) -> str:
    """A regex for `text` whatever whitespace a tokenizer's decode puts between pieces."""
    return r"\s*".join(re.escape(c) for c in text if not c.isspace())


def _strip_template(caption: str, template: str) -> str:
    """The caption inside its chat template's text, as decoded."""
    pre, post = template.split("{caption}", 1)
    if pre.strip():
        caption = re.sub(rf"^\s*{_loose(pre)}\s*", "", caption, count=1)
    if post.strip():
        caption = re.sub(rf"\s*{_loose(post)}\s*$", "", caption, count=1)
    return caption


# -- reading back ----------------------------------------------------------------------------
@dataclass
class ExportedFile:
    folder: Path
    name: str
    fmt: str
    dtype: str

    def index(self) -> pa.Table:
        return pq.read_table(self.folder / f"{self.name}.docs.parquet")

    def stream(self) -> np.ndarray:
        """The file's whole token stream (a memory map for .bin files)."""
        if self.fmt in ("megatron", "stream"):
            path = self.folder / f"{self.name}.bin"
            if path.stat().st_size == 0:
                return np.empty(0, dtype=self.dtype)
            return np.memmap(path, dtype=self.dtype, mode="r")
        col = pq.read_table(self.folder / f"{self.name}.parquet", columns=["input_ids"])
        values = col.column("input_ids").combine_chunks().flatten()
        return values.to_numpy(zero_copy_only=False)


EXPORT_MANIFEST = "export.json"


def is_export(path: str | Path) -> bool:
    return (Path(path) / EXPORT_MANIFEST).is_file()


@dataclass
class ExportSet:
    """A finished export folder, read back: its manifest, its finished files (those with a
    done marker) and the layout bound again, checked against the recorded hash."""

    folder: Path
    manifest: dict
    files: list[ExportedFile]
    layout: object  # ResolvedLayout
    unfinished: list[str]

    @classmethod
    def open(cls, folder: str | Path, text_tokenizer: str | None = None) -> ExportSet:
        folder = Path(folder)
        manifest = json.loads((folder / EXPORT_MANIFEST).read_text())
        spec = config_from_dict(LayoutSpec, manifest["layout"]["spec"])
        text = None
        recorded = manifest.get("text_tokenizer")
        if recorded:
            path = text_tokenizer or recorded["path"]
            if not Path(path).is_file():
                raise TokenDataError(
                    f"{folder} was exported with text tokenizer {recorded['path']}, which is not "
                    "there; give it with --text-tokenizer"
                )
            text = TextTokenizer.open(path)
            if text.sha256 != recorded["sha256"]:
                raise TokenDataError(
                    f"--text-tokenizer {path} (sha256 {text.sha256[:12]}...) is not the one "
                    f"{folder} was exported with ({recorded['sha256'][:12]}...)"
                )
        tokens = manifest["tokens"]
        layout = ResolvedLayout.bind(spec, {**tokens["layout"], "vocab_size": tokens["vocab_size"]},
                                     text)  # fmt: skip
        if layout.hash() != manifest["layout_hash"]:
            raise TokenDataError(
                f"{folder}: the layout binds to other ids now (hash {layout.hash()}, recorded "
                f"{manifest['layout_hash']}); was a lookup table or tokenizer file changed?"
            )
        files, unfinished = [], []
        for name in manifest.get("merged") or manifest.get("tasks") or []:
            if (folder / f"{name}.done.json").exists():
                files.append(ExportedFile(folder, name, manifest["format"], manifest["dtype"]))
            else:
                unfinished.append(name)
        if not files:
            raise TokenDataError(f"{folder}: no finished export files (no *.done.json yet)")
        return cls(folder, manifest, files, layout, unfinished)

    def documents(self):
        """(file, index table) for every finished file, in task order."""
        for f in self.files:
            yield f, f.index()

    def select(
        self,
        keys: list[str] | None = None,
        rows: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> tuple[list[str], np.ndarray, list[str | None], list[dict]]:
        """Documents by key, by global document range [a, b) or the first N, parsed back to
        (keys, codes (N, T), caption texts, index rows)."""
        picked: list[tuple[ExportedFile, dict, np.ndarray]] = []
        if keys is not None:
            wanted = dict.fromkeys(keys)
            for f, index in self.documents():
                col = index.column("key").to_pylist()
                stream = None
                for i, k in enumerate(col):
                    if k in wanted and wanted[k] is None:
                        stream = f.stream() if stream is None else stream
                        row = index.slice(i, 1).to_pylist()[0]
                        wanted[k] = (f, row, np.asarray(
                            stream[row["start"] : row["start"] + row["length"]]))  # fmt: skip
            absent = [k for k, v in wanted.items() if v is None]
            if absent:
                raise TokenDataError(f"key(s) not in the export: {', '.join(absent[:5])}")
            picked = list(wanted.values())
        else:
            start, stop = rows if rows is not None else (0, limit or 16)
            if start < 0 or stop <= start:
                raise TokenDataError(f"document range {start}:{stop} is empty; give A:B, A < B")
            seen = 0
            for f, index in self.documents():
                n = index.num_rows
                lo, hi = max(start - seen, 0), min(stop - seen, n)
                if lo < hi:
                    stream = f.stream()
                    for row in index.slice(lo, hi - lo).to_pylist():
                        ids = np.asarray(stream[row["start"] : row["start"] + row["length"]])
                        picked.append((f, row, ids))
                seen += n
                if seen >= stop:
                    break
            if not picked:
                raise TokenDataError(f"document {start} is past the end ({seen} documents)")
        codes, captions, rows_out = [], [], []
        for f, row, ids in picked:
            grid = (row.get("grid_h"), row.get("grid_w"))
            layout = self.layout if grid[0] is None else self.layout.regrid(grid)
            doc = layout.parse(ids, f"{f.name} document {row['key']}")
            codes.append(doc.codes)
            text = self.layout.text
            caption = text.decode(doc.caption_ids) if doc.caption_ids is not None and text else None
            spec = self.layout.spec
            for suffix in spec.caption_suffixes if doc.position == "before" else ():
                if caption is not None and caption.endswith(suffix.strip()):
                    caption = caption[: len(caption) - len(suffix.strip())].rstrip()
                    break  # the instruction phrase added at export is not the caption
            if caption is not None and doc.position == "before":  # the template's text
                caption = _strip_template(caption, spec.caption_template)
            captions.append(caption)
            rows_out.append({**row, "label": doc.label, "position": doc.position})
        if len({len(c) for c in codes}) > 1:  # rows of their own grids: one array each
            return [r["key"] for r in rows_out], codes, captions, rows_out
        return [r["key"] for r in rows_out], np.stack(codes), captions, rows_out
