"""Where images come from: webdataset tar shards (local, brace-expanded or
`pipe:` commands), image folders, and Parquet files with an image-bytes column,
on local disk or behind an fsspec URL (`s3://bucket/shards/{000..099}.tar`,
`gs://.../*.tar`, `hf://datasets/...`, `https://...`), streamed, never copied
whole to disk. A remote shard that fails part-way is reopened (with backoff,
`retries` times) and resumes after the samples it already gave; what still
fails is recorded as an error sample naming the shard and the reason.

`expand_sources` turns the command line's SRC list into `Shard`s (`samples`);
`iter_samples` streams one shard as `RawSample`s (the readers per kind: `readers`).
A member that cannot be read, or a sample without an image, comes out as a
`RawSample` with `error` set, so callers can count and record it instead of
crashing or silently losing it.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from vqtool.assets import resolve
from vqtool.data.readers import read_shard
from vqtool.data.remote import RETRIES, expand_url, filesystem, is_url, redact, retrying
from vqtool.data.samples import (
    RawSample,
    Shard,
)
from vqtool.errors import SourceError

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


def _kind_of(url: str, path: str) -> str:
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    raise SourceError(f"{redact(url)}: not a .tar shard, .parquet file or prefix")


def _remote_shards(urls: list[str], retries: int) -> list[Shard]:
    """URLs -> shards, each checked to exist with one listing per parent prefix; a web
    server (http, https), which need not list its folders, is asked about each file
    (HEAD) instead."""
    listed: dict[str, dict[str, str]] = {}
    out = []
    for url in urls:
        fs, path = filesystem(url)
        if url.split("://", 1)[0].lower() in ("http", "https"):
            kind = _kind_of(url, path.split("?", 1)[0])
            try:
                retrying(f"checking {redact(url)}", lambda fs=fs, p=path: fs.info(p), retries)
            except SourceError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    raise SourceError(f"{redact(url)}: no such file on the server") from None
                raise
            out.append(Shard(kind, url, retries))
            continue
        parent = path.rstrip("/").rsplit("/", 1)[0]
        if parent not in listed:
            where = f"listing {redact(url.rsplit('/', 1)[0])}"
            entries = retrying(where, lambda fs=fs, p=parent: fs.ls(p, detail=True), retries)
            listed[parent] = {e["name"].rstrip("/"): e.get("type", "file") for e in entries}
        kind = listed[parent].get(path.rstrip("/"))
        if kind is None:
            raise SourceError(f"{redact(url)}: no such object or prefix")
        out.append(Shard("folder", url, retries) if kind == "directory"
                   else Shard(_kind_of(url, path), url, retries))  # fmt: skip
    return out


def iter_samples(shard: Shard) -> Iterator[RawSample]:
    """Stream one shard's samples in stored order (captions as `shard.caption_from` says)."""
    if shard.caption_from == "auto":
        yield from read_shard(shard)
        return
    for sample in read_shard(shard):
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


#: samples looked at per shard before a long job: one malformed sidecar does not make a
#: shard look captionless
CAPTION_PROBE = 8


def shards_without_captions(shards: list[Shard]) -> list[str]:
    """Shards none of whose first `CAPTION_PROBE` samples carries the named caption (every
    local shard is checked, of remote ones the first): said before a long job starts,
    not found at step 1000."""
    missing, checked_remote = [], False
    for shard in shards:
        if shard.caption_from == "auto" or (shard.remote and checked_remote):
            continue
        checked_remote |= shard.remote
        first = list(itertools.islice((x for x in iter_samples(shard) if not x.error),
                                      CAPTION_PROBE))  # fmt: skip
        if first and all(x.caption is None for x in first):
            missing.append(shard.name)
    return missing
