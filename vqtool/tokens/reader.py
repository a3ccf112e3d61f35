"""Reading token shards back: the one reader `inspect`, `decode` and the priors use.

    ds = TokenDataset.open("tokens/")          # an encode folder, or Parquet files
    ds.meta["layout"]                          # what encode recorded
    for keys, tokens, batch in ds.iter_batches():   # tokens: (B, T) numpy
        ...

Only finished files are read: in an encode folder a `part-N.parquet` counts
once its `part-N.done.json` marker exists (a file without it is a task that
was interrupted between rename and marker, and a rerun rewrites it). Files
written with different tokenizers or layouts are refused, never mixed.
"""

from __future__ import annotations

import functools
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqtool.data.remote import Folder, filesystem, is_url, redact, retrying
from vqtool.data.sources import brace_expand
from vqtool.errors import SourceError, TokenDataError
from vqtool.tokens.schema import read_vqtool_metadata

MANIFEST = "encode.json"
ROOFLINE = "roofline.json"  # the last encode run's figures against its limits


@dataclass
class TokenFile:
    path: str  # a local path or a URL
    rows: int
    bytes: int
    row_groups: int

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def open(self) -> pq.ParquetFile:
        if is_url(self.path):
            fs, path = filesystem(self.path)
            return pq.ParquetFile(retrying(f"opening {redact(self.path)}",
                                           lambda: fs.open(path, "rb")))  # fmt: skip
        return pq.ParquetFile(self.path)

    def batches(
        self, columns: list[str], batch_size: int, threads: bool = True
    ) -> Iterator[pa.RecordBatch]:
        """The file's rows in stored order, `batch_size` at a time. `threads`: through
        Arrow's dataset scanner, row groups decoded ahead on its threads (1.4x the speed of
        one thread for one file on 2 cores); without, on the calling thread alone, which
        costs less CPU in all (no hand-offs between pool threads) when the caller decodes
        several files at once (export's readers: 0.93 -> 1.0x the ten-line baseline on 2
        cores, benchmarks/export.py). A remote file always goes through the scanner, which
        fetches its column chunks in few, coalesced reads. A local file of one row group
        has nothing to decode ahead: it is read directly (importing the scanner costs
        ~0.3 s, a one-file export's whole budget)."""
        if not is_url(self.path) and (not threads or self.row_groups <= 1):
            with pq.ParquetFile(self.path) as file:
                yield from file.iter_batches(batch_size, columns=columns)
            return
        import pyarrow.dataset as pads

        if is_url(self.path):
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            fs, path = filesystem(self.path)
            dataset = pads.dataset(path, format="parquet",
                                   filesystem=PyFileSystem(FSSpecHandler(fs)))  # fmt: skip
        else:
            dataset = pads.dataset(self.path, format="parquet")
        yield from dataset.to_batches(columns=columns, batch_size=batch_size)


def _expanded(entries) -> Iterator[str]:
    """Local entries with their braces (`part-{000..003}.parquet`) and glob patterns
    (`'tokens/*/part-*.parquet'`, quoted so that one flag takes them) expanded, sorted."""
    for entry in entries:
        if is_url(entry) or Path(entry).exists():
            yield entry
            continue
        for each in brace_expand(entry):
            if not glob.has_magic(each):
                yield each
                continue
            found = sorted(glob.glob(each))
            if not found:
                raise TokenDataError(f"{each}: the pattern matches no token file or folder")
            yield from found


def _open_files(files: list[str]) -> tuple[list[TokenFile], dict]:
    """Each token file opened (its footer read) and checked to be a vqtool token file of
    the same tokenizer and layout as the first: (the files, the first's metadata)."""
    token_files, meta = [], None
    for path in files:
        try:
            pf = TokenFile(path, 0, 0, 0).open()
        except (pa.ArrowInvalid, OSError, SourceError) as exc:
            raise TokenDataError(f"{redact(path)}: not a readable Parquet file ({exc})") from exc
        this = read_vqtool_metadata(pf.schema_arrow)
        if this is None or "tokens" not in pf.schema_arrow.names:
            raise TokenDataError(
                f"{path}: not a vqtool token file (no 'vqtool' metadata or 'tokens' column); "
                "token files are written by `vqtool encode`"
            )
        if meta is None:
            meta = this
        elif _identity(this) != _identity(meta):
            raise TokenDataError(
                f"{path} was written with tokenizer {_sha(this)} (layout "
                f"{this.get('layout', {}).get('grids')}), {token_files[0].path} with "
                f"{_sha(meta)} (layout {meta.get('layout', {}).get('grids')}); "
                "read them separately"
            )
        md = pf.metadata
        if is_url(path):
            fs, p = filesystem(path)
            size = int(retrying(f"reading {redact(path)}", lambda fs=fs, p=p: fs.size(p)))
        else:
            size = Path(path).stat().st_size
        token_files.append(TokenFile(path, md.num_rows, size, md.num_row_groups))
    return token_files, meta


@dataclass
class TokenDataset:
    files: list[TokenFile]
    meta: dict  # the `vqtool` file metadata (identical across files)
    folder: str | None = None
    manifest: dict | None = None  # DIR/encode.json, for an encode folder
    done_tasks: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # tasks started but not marked done
    missing_tasks: list[str] = field(default_factory=list)  # planned tasks with no output yet
    error_files: list[str] = field(default_factory=list)  # paths or URLs
    roofline: dict | None = None  # the last encode run's limits (DIR/roofline.json)

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(cls, paths: str | Path | list[str | Path]) -> TokenDataset:
        """An encode output folder, one or more token Parquet files, or a mix."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise TokenDataError("no token files given")
        files: list[str] = []
        folder = manifest = roofline = None
        done, unfinished, missing, errors = [], [], [], []
        for entry in _expanded(map(str, paths)):
            if is_url(entry) or Path(entry).is_dir():
                where = Folder(entry)
                if where.remote and entry.endswith(".parquet"):
                    files.append(entry)
                    continue
                folder = entry
                found, info = _scan_folder(where)
                files += found
                manifest = info["manifest"] or manifest
                roofline = info["roofline"] or roofline
                done += info["done"]
                unfinished += info["unfinished"]
                missing += info["missing"]
                errors += info["errors"]
            elif Path(entry).is_file():
                files.append(entry)
            else:
                raise TokenDataError(f"{entry}: no such token file or folder")
        if not files:
            where = ", ".join(map(str, paths))
            raise TokenDataError(f"{where}: no finished token Parquet files (*.parquet) found")
        token_files, meta = _open_files(files)
        return cls(
            token_files, meta, folder, manifest, sorted(done), sorted(unfinished),
            sorted(missing), errors, roofline,
        )  # fmt: skip

    # -- facts -------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def layout(self) -> dict:
        return self.meta["layout"]

    @property
    def tokens_per_image(self) -> int:
        return int(self.layout["tokens_per_image"])

    @functools.cached_property
    def native(self) -> bool:
        """Rows of their own grids (`encode --resize none|smart:...`): `grid_h`, `grid_w`
        (read once: `tokens_of` asks for every batch)."""
        return bool(self.files) and "grid_h" in self.files[0].open().schema_arrow.names

    def refuse_native(self, what: str) -> None:
        if self.native:
            policy = self.meta.get("preprocessing", {}).get("policy", "none")
            raise TokenDataError(
                f"{what} needs one token grid for every row, and these tokens keep each "
                f"image's own grid (encoded with --resize {policy}); encode with --resize "
                "square for it"
            )

    @property
    def tokenizer_sha256(self) -> str | None:
        return self.meta.get("tokenizer", {}).get("sha256")

    def has_values(self, column: str) -> bool:
        """Whether any row carries a value (not null) in `column`."""
        for f in self.files:
            pf = f.open()
            if column not in pf.schema_arrow.names:
                continue
            for batch in pf.iter_batches(columns=[column], batch_size=65536):
                if batch.column(0).null_count < batch.num_rows:
                    return True
        return False

    def error_records(self) -> Iterator[dict]:
        for path in self.error_files:
            if is_url(path):
                fs, p = filesystem(path)
                text = retrying(f"reading {redact(path)}", lambda fs=fs, p=p: fs.cat_file(p))
                lines = text.decode().splitlines()
            else:
                lines = Path(path).read_text().splitlines()
            yield from (json.loads(line) for line in lines if line.strip())

    # -- rows -----------------------------------------------------------------------------
    def iter_batches(
        self, batch_rows: int = 4096, columns: tuple[str, ...] = ("key", "tokens")
    ) -> Iterator[tuple[list[str], np.ndarray, pa.RecordBatch]]:
        """Stream (keys, tokens (B, T), record batch) in file order; memory is one batch."""
        for f in self.files:
            pf = f.open()
            for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns)):
                yield batch.column("key").to_pylist(), self.tokens_of(batch), batch

    def read_row_group(self, file: int, group: int, columns=("tokens",)) -> pa.Table:
        """One row group: the unit the priors' loader deals out to ranks and workers."""
        return self.files[file].open().read_row_group(group, columns=list(columns))

    def tokens_of(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """The `tokens` list column as a (B, T) integer array (no per-row Python)."""
        self.refuse_native("reading rows as one (rows, tokens) array")
        col = batch.column("tokens")
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        n, t = len(col), self.tokens_per_image
        offsets = col.offsets.to_numpy()
        if len(col) and (offsets[-1] - offsets[0] != n * t or np.any(np.diff(offsets) != t)):
            lengths = sorted(set(np.diff(offsets).tolist()))[:5]
            raise TokenDataError(
                f"token rows of lengths {lengths} do not match the recorded layout "
                f"({t} tokens per image)"
            )
        values = col.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[0] + n * t]
        return values.reshape(n, t)

    def select_native(
        self,
        keys: list[str] | None = None,
        rows: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> tuple[list[str], list[np.ndarray], list[tuple[int, int]]]:
        """`select` for rows of their own grids: (keys, token rows, (grid_h, grid_w) each)."""
        out: dict[str, tuple] = {}
        order: list[str] = []
        start, stop = rows if rows is not None else (0, limit if limit is not None else self.rows)
        if keys is None and (start < 0 or stop <= start):
            raise TokenDataError(f"row range {start}:{stop} is empty; give A:B with 0 <= A < B")
        seen = 0
        wanted = set(keys or ())
        for f in self.files:
            columns = ["key", "tokens", "grid_h", "grid_w"]
            for batch in f.open().iter_batches(batch_size=1024, columns=columns):
                got = batch.to_pydict()
                for i, k in enumerate(got["key"]):
                    take = k in wanted and k not in out if keys is not None else (
                        start <= seen + i < stop)  # fmt: skip
                    if take:
                        out[k] = (
                            np.asarray(got["tokens"][i]),
                            (got["grid_h"][i], got["grid_w"][i]),
                        )
                        order.append(k)
                seen += batch.num_rows
                if (keys is not None and len(out) == len(wanted)) or (
                    keys is None and seen >= stop
                ):
                    break
        if keys is not None:
            absent = [k for k in keys if k not in out]
            if absent:
                raise TokenDataError(f"key(s) not in the token files: {', '.join(absent[:5])}")
            order = list(dict.fromkeys(keys))
        elif start >= self.rows:
            raise TokenDataError(f"row {start} is past the end ({self.rows} rows)")
        return order, [out[k][0] for k in order], [out[k][1] for k in order]

    def select(
        self,
        keys: list[str] | None = None,
        rows: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Rows by key (in the order asked), by global row range [a, b), or the first N."""
        picked_keys: list[str] = []
        picked: list[np.ndarray] = []
        if keys is not None:
            wanted = {k: None for k in keys}
            for batch_keys, tokens, _ in self.iter_batches():
                for i, k in enumerate(batch_keys):
                    if k in wanted and wanted[k] is None:
                        wanted[k] = tokens[i]
                if all(v is not None for v in wanted.values()):
                    break
            absent = [k for k, v in wanted.items() if v is None]
            if absent:
                raise TokenDataError(
                    f"key(s) not in the token files: {', '.join(absent[:5])}"
                    + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
                )
            return list(wanted), np.stack(list(wanted.values()))
        start, stop = rows if rows is not None else (0, limit if limit is not None else self.rows)
        if start < 0 or stop <= start:
            raise TokenDataError(f"row range {start}:{stop} is empty; give A:B with 0 <= A < B")
        if start >= self.rows:
            raise TokenDataError(f"row {start} is past the end ({self.rows} rows)")
        seen = 0
        for batch_keys, tokens, _ in self.iter_batches():
            n = len(batch_keys)
            lo, hi = max(start - seen, 0), min(stop - seen, n)
            if lo < hi:
                picked_keys += batch_keys[lo:hi]
                picked.append(tokens[lo:hi])
            seen += n
            if seen >= stop:
                break
        return picked_keys, np.concatenate(picked)


def _identity(meta: dict) -> tuple:
    return (
        meta.get("tokenizer", {}).get("sha256"),
        json.dumps(meta.get("layout"), sort_keys=True),
        meta.get("vocab_size"),
    )


def _sha(meta: dict) -> str:
    sha = meta.get("tokenizer", {}).get("sha256") or "?"
    return sha[:12] + "..."


def _scan_folder(folder: Folder) -> tuple[list[str], dict]:
    names = folder.names()
    manifest = json.loads(folder.read_text(MANIFEST)) if MANIFEST in names else None
    roofline = json.loads(folder.read_text(ROOFLINE)) if ROOFLINE in names else None
    done, unfinished, files, errors = [], [], [], []
    for part in [n for n in names if n.endswith(".parquet")]:
        name = part[: -len(".parquet")]
        if f"{name}.done.json" in names:
            files.append(folder.url(part))
            done.append(name)
            if f"{name}.errors.jsonl" in names:
                errors.append(folder.url(f"{name}.errors.jsonl"))
        else:
            unfinished.append(name)
    for tmp in [n for n in names if n.endswith(".tmp") and ".parquet." in n]:
        unfinished.append(tmp.split(".parquet.", 1)[0])  # NAME.parquet.<pid>.tmp
    planned = (manifest or {}).get("tasks") or []
    missing = [t for t in planned if t not in done and t not in unfinished]
    return files, {
        "manifest": manifest,
        "roofline": roofline,
        "done": done,
        "unfinished": sorted(set(unfinished)),
        "missing": missing,
        "errors": errors,
    }
