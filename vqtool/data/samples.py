"""What the data layer hands around: a `Shard` (one input: a tar, a `pipe:` command, an
image folder or a Parquet file, local or behind a URL), a `RawSample` (one sample's
bytes and members, or the error that replaced it), the recorded error kinds, and the
webdataset naming rules. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vqtool.data.remote import RETRIES, is_url, redact

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


def split_key(name: str) -> tuple[str, str]:
    """webdataset convention: `dir/abc.seg.jpg` -> key `dir/abc`, extension `seg.jpg`."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def printable_name(name: str) -> str:
    """A member name as text: bytes that are not UTF-8 (kept by tarfile as surrogate
    escapes) become `\\xNN`, so keys stay printable and writable, and reversible."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
