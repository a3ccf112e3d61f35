"""Where images come from: webdataset tar shards (local, brace-expanded or
`pipe:` commands), image folders, and Parquet files with an image-bytes column,
on local disk or behind an fsspec URL (`s3://bucket/shards/{000..099}.tar`,
`gs://.../*.tar`, `hf://datasets/...`, `https://...`), streamed, never copied
whole to disk. A remote shard that fails part-way is reopened (with backoff,
`retries` times) and resumes after the samples it already gave; what still
fails is recorded as an error sample naming the shard and the reason.

`expand_sources` turns the command line's SRC list into `Shard`s; `iter_samples`
streams one shard as `RawSample`s. A member that cannot be read, or a sample
without an image, comes out as a `RawSample` with `error` set, so callers can
count and record it instead of crashing or silently losing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vqtool.assets import resolve
from vqtool.data.remote import RETRIES, expand_url, filesystem, is_url, redact, resumed, retrying
from vqtool.errors import SourceError  # noqa: F401 (re-exported)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm")
IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp", "image_bytes", "bytes")
KEY_COLUMNS = ("key", "__key__", "id", "image_id")
CAPTION_COLUMNS = ("caption", "text", "txt")
LABEL_COLUMNS = ("label", "cls", "class")


@dataclass(frozen=True)
class Shard:
    kind: Literal["tar", "pipe", "folder", "parquet"]
    path: str  # file or folder path or URL, or the shell command of a `pipe:` source
    retries: int = field(default=RETRIES, compare=False)  # remote: reopen this many times
    caption_from: str = field(default="auto", compare=False)  # see `caption_of`
    alias: str | None = field(default=None, compare=False)  # a bundled input's name

    @property
    def remote(self) -> bool:
        return self.kind != "pipe" and is_url(self.path)

    @property
    def name(self) -> str:
        """What records and messages call this shard (a URL without credentials; a
        bundled input by its name, the same wherever vqtool is installed)."""
        if self.alias:
            return self.alias
        if self.kind == "pipe":
            return f"pipe:{self.path}"
        return redact(self.path)


#: a tar member larger than this is recorded as an error, not read into memory
MAX_MEMBER_BYTES = 1 << 29  # 512 MiB

#: the machine-readable `kind` of every recorded error (errors.jsonl, reports)
ERROR_KINDS = {
    "undecodable": "the image bytes cannot be decoded",
    "empty": "an empty image member",
    "no_pixels": "an image of zero width or height",
    "too_many_pixels": "more pixels than --max-pixels (decompression bomb?)",
    "too_large": "a member larger than the per-member byte limit",
    "no_image": "a sample without an image member",
    "duplicate_key": "a key or member that repeats one already read",
    "link": "a link or special member (not followed)",
    "truncated_tar": "the tar stream ends or breaks mid-way",
    "pipe_failed": "a pipe: command exited with an error",
    "unreadable": "a file that cannot be read",
}


@dataclass
class RawSample:
    key: str
    source: str  # the shard it came from
    index: int  # position of the sample within its shard
    data: bytes | None = None  # encoded image bytes
    ext: str = ""
    caption: str | None = None
    label: int | None = None
    meta: dict = field(default_factory=dict)  # parsed .json member, if any
    text: str | None = None  # the .txt member (or caption file / column), if any
    error: str | None = None
    kind: str | None = None  # with error: one of ERROR_KINDS


# ----------------------------------------------------------------------------- expansion


def brace_expand(pattern: str) -> list[str]:
    """`data-{000..002}.tar` and `{a,b}` expansion, left to right, zero padding kept."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    span = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if span:
        lo, hi = span.group(1), span.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        step = 1 if int(hi) >= int(lo) else -1
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        options = body.split(",")
    return [e for option in options for e in brace_expand(head + option + tail)]


def expand_sources(
    sources: Iterable[str],
    stdin: Iterable[str] | None = None,
    retries: int = RETRIES,
    caption_from: str = "auto",
) -> list[Shard]:
    """SRC entries -> shards. `-` reads more entries, one per line, from `stdin`; URLs are
    brace-expanded, then globbed through their filesystem."""
    shards: list[Shard] = []
    for entry in sources:
        entry = entry.strip()
        if not entry:
            continue
        if entry == "-":
            if stdin is None:
                raise SourceError("'-' was given but there is no standard input to read paths from")
            shards += expand_sources([line for line in stdin if line.strip()], None, retries)
            continue
        if entry.startswith("pipe:"):
            shards.append(Shard("pipe", entry[len("pipe:") :].strip()))
            continue
        if is_url(entry):
            urls = [u for pattern in brace_expand(entry) for u in expand_url(pattern, retries)]
            shards += _remote_shards(urls, retries)
            continue
        bundled = entry if entry.startswith("vqtool:") else None
        entry = resolve(entry)  # a bundled name (vqtool:sample)
        for path in brace_expand(entry):
            shard = _local_shard(path)
            shards.append(dataclasses.replace(shard, alias=bundled) if bundled else shard)
    if not shards:
        raise SourceError("no input: give tar shards, image folders or Parquet files (or - )")
    if caption_from != "auto":
        check_caption_from(caption_from)
        shards = [dataclasses.replace(s, caption_from=caption_from) for s in shards]
    return shards


def _local_shard(path: str) -> Shard:
    p = Path(path)
    if p.is_dir():
        return Shard("folder", str(p))
    if not p.exists():
        raise SourceError(f"{path}: no such file or folder")
    if p.suffix == ".parquet":
        return Shard("parquet", str(p))
    if p.name.endswith((".tar", ".tar.gz", ".tgz")):
        return Shard("tar", str(p))
    raise SourceError(f"{path}: not a .tar shard, .parquet file or folder")


def _remote_shards(urls: list[str], retries: int) -> list[Shard]:
    """URLs -> shards, each checked to exist with one listing per parent prefix."""
    listed: dict[str, dict[str, str]] = {}
    out = []
    for url in urls:
        fs, path = filesystem(url)
        parent = path.rstrip("/").rsplit("/", 1)[0]
        if parent not in listed:
            where = f"listing {redact(url.rsplit('/', 1)[0])}"
            entries = retrying(where, lambda fs=fs, p=parent: fs.ls(p, detail=True), retries)
            listed[parent] = {e["name"].rstrip("/"): e.get("type", "file") for e in entries}
        kind = listed[parent].get(path.rstrip("/"))
        if kind is None:
            raise SourceError(f"{redact(url)}: no such object or prefix")
        if kind == "directory":
            out.append(Shard("folder", url, retries))
        elif path.endswith(".parquet"):
            out.append(Shard("parquet", url, retries))
        elif path.endswith((".tar", ".tar.gz", ".tgz")):
            out.append(Shard("tar", url, retries))
        else:
            raise SourceError(f"{redact(url)}: not a .tar shard, .parquet file or prefix")
    return out


# ----------------------------------------------------------------------------- reading


def iter_samples(shard: Shard) -> Iterator[RawSample]:
    """Stream one shard's samples in stored order (captions as `shard.caption_from` says)."""
    if shard.caption_from == "auto":
        yield from _iter_any(shard)
        return
    for sample in _iter_any(shard):
        sample.caption = caption_of(sample, shard.caption_from)
        yield sample


CAPTION_FROM = "auto (a .txt member, else the .json member's caption), txt, or json:FIELD"


def check_caption_from(value: str) -> str:
    if value in ("auto", "txt") or (value.startswith("json:") and len(value) > 5):
        return value
    raise SourceError(f"--caption-from {value!r}: use {CAPTION_FROM}")


def caption_of(sample: RawSample, caption_from: str) -> str | None:
    """The caption a sample carries where `caption_from` says: `txt`, or `json:FIELD`
    (dots reach into nested objects; a Parquet source's column FIELD)."""
    if caption_from == "txt":
        return sample.text
    if caption_from == "auto":
        return sample.caption
    value = sample.meta
    for part in caption_from.split(":", 1)[1].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return None if value is None else str(value)


def shards_without_captions(shards: list[Shard]) -> list[str]:
    """Shards whose first sample lacks the named caption (every local shard is checked,
    of remote ones the first): said before a long job starts, not found at step 1000."""
    missing, checked_remote = [], False
    for shard in shards:
        if shard.caption_from == "auto" or (shard.remote and checked_remote):
            continue
        checked_remote |= shard.remote
        first = next((x for x in iter_samples(shard) if not x.error), None)
        if first is not None and first.caption is None:
            missing.append(shard.name)
    return missing


def _iter_any(shard: Shard) -> Iterator[RawSample]:
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
    if shard.remote:
        yield from _iter_remote(shard)
    elif shard.kind == "tar":
        with open(shard.path, "rb") as f:
            yield from _iter_tar(f, shard.name)
    elif shard.kind == "pipe":
        yield from _iter_pipe(shard)
    elif shard.kind == "folder":
        yield from _iter_folder(shard)
    else:
        yield from _iter_parquet(shard)


def split_key(name: str) -> tuple[str, str]:
    """webdataset convention: `dir/abc.seg.jpg` -> key `dir/abc`, extension `seg.jpg`."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def printable_name(name: str) -> str:
    """A member name as text: bytes that are not UTF-8 (kept by tarfile as surrogate
    escapes) become `\\xNN`, so keys stay printable and writable, and reversible."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _iter_remote(shard: Shard) -> Iterator[RawSample]:
    fs, path = filesystem(shard.path)

    def tar_stream():
        with fs.open(path, "rb", block_size=1 << 22) as f:
            yield from _iter_tar(f, shard.name, raise_io=True)

    def parquet_stream():
        with fs.open(path, "rb") as f:
            yield from _iter_parquet(shard, f)

    if shard.kind == "folder":
        yield from _iter_remote_folder(shard, fs, path)
        return
    stream = tar_stream if shard.kind == "tar" else parquet_stream
    given = 0
    try:
        for sample in resumed(shard.name, stream, shard.retries):
            given += 1
            yield sample
    except SourceError as exc:
        yield RawSample(key="", source=shard.name, index=given, error=str(exc),
                        kind="unreadable")  # fmt: skip


def _iter_remote_folder(shard: Shard, fs, root: str) -> Iterator[RawSample]:
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
                problem = None
                if member.isfile() and member.size > MAX_MEMBER_BYTES:
                    problem = (
                        f"member {name!r} holds {member.size:,} bytes, over the "
                        f"{MAX_MEMBER_BYTES:,}-byte limit for one member; not read",
                        "too_large",
                    )
                elif not member.isfile():
                    what = "symbolic link" if member.issym() else "link or special file"
                    problem = f"{what} member {name!r} skipped (links are not followed)", "link"
                elif k in seen or (k == key and ext in current):
                    problem = (
                        f"duplicate key: member {name!r} repeats a sample already read",
                        "duplicate_key",
                    )
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
        return
    if key is None:
        return
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
        if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
    )
    for index, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        key = rel.rsplit(".", 1)[0]
        sample = RawSample(key=key, source=shard.name, index=index, ext=path.suffix[1:].lower())
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
