"""Reading one shard as `RawSample`s, one reader per kind (`READERS`; a remote shard's
kinds in `REMOTE_READERS`): webdataset tars (a member that cannot be read, a link, a
repeated key, a member over the size limit or a stream cut mid-way each come out as an
error sample), `pipe:` commands, image folders, and Parquet files with an image-bytes
column. A remote shard that fails part-way is reopened (with backoff, `retries` times)
and resumes after the samples it already gave."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vqtool.data.remote import filesystem, resumed, retrying
from vqtool.data.samples import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    IMAGE_EXTENSIONS,
    KEY_COLUMNS,
    LABEL_COLUMNS,
    MAX_MEMBER_BYTES,
    RawSample,
    Shard,
    printable_name,
    split_key,
)
from vqtool.errors import SourceError


def read_shard(shard: Shard) -> Iterator[RawSample]:
    """One shard's samples in stored order (captions as its members carry them)."""
    if not shard.remote and shard.kind in ("tar", "parquet") and not Path(shard.path).exists():
        # gone since it was listed (moved, deleted): a recorded error, never a crash
        yield RawSample(
            key="",
            source=shard.name,
            index=0,
            kind="unreadable",
            error=f"{shard.name}: the file is gone (it was there when listed)",
        )
        return
    table = REMOTE_READERS if shard.remote else READERS
    yield from table[shard.kind](shard)


def _read_remote(shard: Shard) -> Iterator[RawSample]:
    """A remote tar or Parquet file, reopened where it broke off."""
    fs, path = filesystem(shard.path)

    def tar_stream():
        with fs.open(path, "rb", block_size=1 << 22) as f:
            yield from _iter_tar(f, shard.name, raise_io=True)

    def parquet_stream():
        with fs.open(path, "rb") as f:
            yield from _iter_parquet(shard, f)

    stream = tar_stream if shard.kind == "tar" else parquet_stream
    given = 0
    try:
        for sample in resumed(shard.name, stream, shard.retries):
            given += 1
            yield sample
    except SourceError as exc:
        yield RawSample(key="", source=shard.name, index=given, error=str(exc),
                        kind="unreadable")  # fmt: skip


def _read_remote_folder(shard: Shard) -> Iterator[RawSample]:
    fs, root = filesystem(shard.path)
    try:
        found = retrying(f"listing {shard.name}", lambda: sorted(fs.find(root)), shard.retries)
    except SourceError as exc:
        yield RawSample(key="", source=shard.name, index=0, error=str(exc), kind="unreadable")
        return
    names = set(found)
    files = [p for p in found if p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS]
    for index, path in enumerate(files):
        rel = path[len(root.rstrip("/")) + 1 :]
        sample = RawSample(key=rel.rsplit(".", 1)[0], source=shard.name, index=index,
                           ext=path.rsplit(".", 1)[-1].lower())  # fmt: skip
        try:
            sample.data = retrying(shard.name + "/" + rel, lambda p=path: fs.cat_file(p),
                                   shard.retries)  # fmt: skip
        except SourceError as exc:
            sample.error, sample.kind = str(exc), "unreadable"
        caption = path.rsplit(".", 1)[0] + ".txt"
        if caption in names:
            with contextlib.suppress(SourceError):
                text = retrying(shard.name, lambda c=caption: fs.cat_file(c), shard.retries)
                sample.caption = sample.text = text.decode("utf-8", "replace").strip()
        yield sample


class _Tail:
    """A stream that remembers its last block, to tell a tar that ends with its
    end-of-archive marker (zero blocks) from one cut at a block boundary."""

    def __init__(self, stream):
        self.stream, self.last = stream, b""

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.last = (self.last + data)[-512:]
        return data

    def ends_clean(self) -> bool:
        while self.read(1 << 16):  # what tarfile left unread: the marker and padding
            pass
        return len(self.last) == 512 and not any(self.last)


def _member_problem(member, name: str, k: str, ext: str, seen: set, key, current: dict):
    """(message, kind) when a tar member is not read: over the size limit, a link or
    special file, or a repeat of a key already read; else None."""
    if member.isfile() and member.size > MAX_MEMBER_BYTES:
        return (
            f"member {name!r} holds {member.size:,} bytes, over the "
            f"{MAX_MEMBER_BYTES:,}-byte limit for one member; not read",
            "too_large",
        )
    if not member.isfile():
        what = "symbolic link" if member.issym() else "link or special file"
        return f"{what} member {name!r} skipped (links are not followed)", "link"
    if k in seen or (k == key and ext in current):
        return f"duplicate key: member {name!r} repeats a sample already read", "duplicate_key"
    return None


def _iter_tar(stream, source: str, raise_io: bool = False) -> Iterator[RawSample]:
    """`raise_io`: let a read error propagate (a remote stream is reopened) instead of
    recording it as a truncated shard. A tar without its end-of-archive marker was cut
    at a block boundary: its last sample is a `truncated_tar` error naming it."""
    stream = _Tail(stream)
    index = 0
    current: dict[str, bytes] = {}
    key = None
    seen: set[str] = set()  # keys of the samples already assembled from this shard
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                name = printable_name(member.name)
                k, ext = split_key(name)
                problem = _member_problem(member, name, k, ext, seen, key, current)
                if problem:
                    yield RawSample(
                        key=k, source=source, index=-1, error=problem[0], kind=problem[1]
                    )
                    continue
                if k != key and key is not None:
                    yield _assemble(key, current, source, index)
                    seen.add(key)
                    index += 1
                    current = {}
                key = k
                handle = tar.extractfile(member)
                current[ext] = handle.read() if handle else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        if raise_io:
            raise
        yield from _broken_tar(key, current, source, index, exc)
        return
    if key is not None:
        yield from _tar_end(stream, key, current, source, index)


def _broken_tar(key, current: dict, source: str, index: int, exc) -> Iterator[RawSample]:
    """A tar stream that broke mid-way: the sample being read if it was whole, then the
    `truncated_tar` error."""
    partial = _assemble(key, current, source, index) if key is not None and current else None
    if partial is not None and not partial.error:  # whole before the break: kept
        yield partial
        index += 1
    where = f" in sample {key!r}" if partial is not None and partial.error else ""
    yield RawSample(
        key=key or "",
        source=source,
        index=index,
        error=f"unreadable tar stream after {index} samples{where}: {exc}",
        kind="truncated_tar",
    )


def _tar_end(stream: _Tail, key: str, current: dict, source: str, index: int):
    """The last sample, and a `truncated_tar` error when the end-of-archive marker is
    missing (a cut at a block boundary)."""
    last = _assemble(key, current, source, index)
    if stream.ends_clean():
        yield last
        return
    cut = (
        f"the shard ends without tar's end-of-archive marker, in sample {key!r} (members "
        f"read: {', '.join(sorted(current)) or 'none'}): a cut download or copy?"
    )
    if last.error:  # the cut took its image: the sample is the truncation's error
        last.error, last.kind = cut, "truncated_tar"
        yield last
    else:
        yield last
        yield RawSample(key=key, source=source, index=-1, error=cut, kind="truncated_tar")


def _assemble(key: str, parts: dict[str, bytes], source: str, index: int) -> RawSample:
    sample = RawSample(key=key, source=source, index=index)
    for ext in parts:
        last = ext.rsplit(".", 1)[-1]
        if last in IMAGE_EXTENSIONS and sample.data is None:
            sample.data, sample.ext = parts[ext], last
    if "json" in parts:
        try:
            sample.meta = json.loads(parts["json"])
        except (ValueError, UnicodeDecodeError):
            sample.meta = {}
    if "txt" in parts:
        sample.caption = sample.text = parts["txt"].decode("utf-8", "replace").strip()
    elif isinstance(sample.meta.get("caption"), str):
        sample.caption = sample.meta["caption"]
    if "cls" in parts:
        try:
            sample.label = int(parts["cls"].decode().strip())
        except ValueError:
            pass
    if sample.data is None:
        kinds = ", ".join(sorted(parts)) or "nothing"
        sample.error, sample.kind = f"no image member (found: {kinds})", "no_image"
    return sample


def _iter_pipe(shard: Shard) -> Iterator[RawSample]:
    proc = subprocess.Popen(shard.path, shell=True, stdout=subprocess.PIPE)
    try:
        yield from _iter_tar(proc.stdout, shard.name)
    finally:
        proc.stdout.close()
        code = proc.wait()
    if code != 0:
        yield RawSample(
            key="",
            source=shard.name,
            index=-1,
            error=f"command exited with status {code}",
            kind="pipe_failed",
        )


def _iter_folder(shard: Shard) -> Iterator[RawSample]:
    root = Path(shard.path)
    files = sorted(
        p
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )
    for index, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        key = rel.rsplit(".", 1)[0]
        sample = RawSample(key=key, source=shard.name, index=index, ext=path.suffix[1:].lower())
        if not path.exists():  # a link whose target is gone: recorded, not skipped unseen
            sample.error, sample.kind = f"{rel}: a broken link (its target is missing)", "link"
            yield sample
            continue
        try:
            sample.data = path.read_bytes()
        except OSError as exc:
            sample.error, sample.kind = f"unreadable file: {exc}", "unreadable"
        caption = path.with_suffix(".txt")
        if caption.exists():
            sample.caption = sample.text = caption.read_text(errors="replace").strip()
        yield sample


def _iter_parquet(shard: Shard, handle=None) -> Iterator[RawSample]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(handle if handle is not None else shard.path)
    names = pf.schema_arrow.names
    image_col = next((c for c in IMAGE_COLUMNS if c in names), None)
    if image_col is None:
        raise SourceError(
            f"{shard.path}: no image column; expected one of {', '.join(IMAGE_COLUMNS)}"
        )
    key_col = next((c for c in KEY_COLUMNS if c in names), None)
    cap_col = next((c for c in CAPTION_COLUMNS if c in names), None)
    lab_col = next((c for c in LABEL_COLUMNS if c in names), None)
    wanted = shard.caption_from.split(":", 1)[1] if shard.caption_from.startswith("json:") else ""
    field_col = wanted.split(".")[0] if wanted.split(".")[0] in names else None
    columns = list(dict.fromkeys(c for c in (image_col, key_col, cap_col, lab_col, field_col) if c))
    stem = Path(shard.name).stem
    index = 0
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        rows = batch.to_pydict()
        for i in range(batch.num_rows):
            value = rows[image_col][i]
            if isinstance(value, dict):  # HF `Image` feature: {"bytes": ..., "path": ...}
                value = value.get("bytes")
            key = str(rows[key_col][i]) if key_col else f"{stem}/{index:08d}"
            sample = RawSample(key=key, source=shard.name, index=index, data=value)
            if cap_col and isinstance(rows[cap_col][i], str):
                sample.caption = sample.text = rows[cap_col][i]
            if field_col:
                sample.meta[field_col] = rows[field_col][i]
            if lab_col and isinstance(rows[lab_col][i], int):
                sample.label = rows[lab_col][i]
            if not value:
                sample.error = "empty image cell"
                sample.data = None
            yield sample
            index += 1


def _read_local_tar(shard: Shard) -> Iterator[RawSample]:
    with open(shard.path, "rb") as f:
        yield from _iter_tar(f, shard.name)


READERS: dict[str, Callable[[Shard], Iterator[RawSample]]] = {
    "tar": _read_local_tar,
    "pipe": _iter_pipe,
    "folder": _iter_folder,
    "parquet": _iter_parquet,
}
REMOTE_READERS: dict[str, Callable[[Shard], Iterator[RawSample]]] = {
    "tar": _read_remote,
    "parquet": _read_remote,
    "folder": _read_remote_folder,
}
