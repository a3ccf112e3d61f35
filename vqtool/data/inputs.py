"""What vqtool knows about an input without decoding it: a stamp of its content (to redo
a task whose input changed) and how many images it holds (to size tasks by images)."""

from __future__ import annotations

import contextlib
import os
import tarfile
from pathlib import Path

from vqtool.data.remote import filesystem
from vqtool.data.samples import IMAGE_EXTENSIONS, Shard, split_key

__all__ = ["count_images", "input_stamp"]


def input_stamp(shard: Shard) -> dict | None:
    """A local file's or folder's size and modification time, an object's size and ETag
    (or generation) as its store reports them; None for pipes and inputs that cannot be
    asked (the read that follows records the error itself)."""
    if shard.kind == "pipe":
        return None
    if not shard.remote:
        if not os.path.exists(shard.path):
            return None
        st = os.stat(shard.path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        fs, path = filesystem(shard.path)
        fs.invalidate_cache(path)
        info = fs.info(path)
    except Exception:  # noqa: BLE001 - unreachable now: the read records the error itself
        return None
    tag = next((info[k] for k in ("ETag", "etag", "generation", "md5Hash") if info.get(k)), None)
    if tag is None or info.get("type") == "directory":
        return None
    return {"size": info.get("size"), "etag": str(tag).strip('"')}


def count_images(shard: Shard) -> int | None:
    """The images a shard holds, from its headers alone (a tar's member headers, a Parquet
    file's row count, a folder's image files); None for a pipe, an object-store folder
    or a shard that cannot be read."""
    if shard.kind == "pipe":
        return None
    if shard.remote:
        return _count_remote(shard)
    with contextlib.suppress(OSError, tarfile.TarError):
        if shard.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(shard.path).metadata.num_rows
        if shard.kind == "folder":
            return sum(1 for p in Path(shard.path).rglob("*")
                       if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)  # fmt: skip
        return _count_tar(tarfile.open(shard.path, "r:*"))  # seeks over a plain tar's data
    return None


def _count_remote(shard: Shard) -> int | None:
    if shard.kind not in ("tar", "parquet"):
        return None
    try:
        fs, path = filesystem(shard.path)
        with fs.open(path, "rb") as f:
            if shard.kind == "parquet":
                import pyarrow.parquet as pq

                return pq.ParquetFile(f).metadata.num_rows
            return _count_tar(tarfile.open(fileobj=f, mode="r:"))
    except Exception:  # noqa: BLE001 - the encode itself reports an unreadable shard
        return None


def _count_tar(tar: tarfile.TarFile) -> int:
    keys = set()
    with tar:
        for member in tar:
            key, ext = split_key(member.name)
            if member.isfile() and ext.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                keys.add(key)
    return len(keys)
