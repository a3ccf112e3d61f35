"""Object stores through fsspec: URLs as inputs (`s3://`, `gs://`, `hf://`,
`https://`, ...) and as output folders, with retries for transient failures.

Credentials come from each filesystem's usual environment and configuration
(for S3: `AWS_*` variables, `~/.aws`, instance roles); vqtool never takes them
as flags and never writes them: every URL it records or prints goes through
`redact` (no user:password, no query string such as a presigned signature).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from vqtool.atomic import replacing, sweep, temporary
from vqtool.errors import SourceError

T = TypeVar("T")
URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
GLOB = re.compile(r"[*?\[]")
#: errors that no retry can fix: the object is missing or forbidden
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
RETRIES = 3  # retries after the first attempt (`--retries`)
BACKOFF_S = 0.5  # first wait; doubles each retry


def is_url(path: str | os.PathLike) -> bool:
    m = URL.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def redact(url: str) -> str:
    """A URL safe to record and print: no user info, no query or fragment."""
    if not is_url(url):
        return url
    scheme, rest = url.split("://", 1)
    host, slash, path = rest.partition("/")
    host = host.rpartition("@")[2]
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{host}{slash}{path}"


#: the clients' own retries, turned off so that `--retries` bounds every request (s3fs
#: would retry 5 times with backoff, botocore 3 times more, each inside vqtool's tries)
SINGLE_ATTEMPT = {
    "s3": {"config_kwargs": {"retries": {"total_max_attempts": 1, "mode": "standard"}}},
}
#: the filesystems whose `retries` attribute counts their own attempts
OWN_RETRIES = ("s3", "gs", "gcs")


def filesystem(url: str):
    """(fsspec filesystem, path within it) for a URL, with the client's own retries off
    where it has them (`SINGLE_ATTEMPT`): vqtool's retries are the only ones."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:  # pragma: no cover - fsspec comes with torch
        raise SourceError(f"{redact(url)}: URLs need fsspec: pip install 'vqtool[cloud]'") from exc
    scheme = url.split("://", 1)[0].lower()
    scheme = "s3" if scheme in ("s3", "s3a") else scheme
    try:
        fs, path = url_to_fs(url, **SINGLE_ATTEMPT.get(scheme, {}))
        if scheme in OWN_RETRIES and isinstance(getattr(fs, "retries", None), int):
            fs.retries = 1  # one attempt per call: vqtool's retries wrap it
        return fs, path
    except (ImportError, ValueError) as exc:
        scheme = url.split("://", 1)[0]
        raise SourceError(
            f"{redact(url)}: no filesystem for {scheme}:// ({exc}); for s3:// install "
            "'vqtool[cloud]' (s3fs), for gs:// gcsfs, for hf:// huggingface_hub"
        ) from exc
    except OSError as exc:  # a filesystem that connects as it is made (ftp://, sftp://)
        raise SourceError(f"{redact(url)}: cannot connect ({reason(exc)})") from exc


def reason(exc: BaseException) -> str:
    """An error's text without anything secret-looking (URLs are redacted)."""
    text = f"{type(exc).__name__}: {exc}"
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", lambda m: redact(m.group(0)), text)


def retrying(
    what: str, fn: Callable[[], T], retries: int = RETRIES, backoff: float = BACKOFF_S
) -> T:
    """`fn()`, retried with exponential backoff on transient errors; a permanent error
    (missing, forbidden) or the last failure raises `SourceError` naming `what`."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except PERMANENT as exc:
            raise SourceError(f"{what}: {reason(exc)}") from exc
        except Exception as exc:  # noqa: BLE001 - network stacks raise many types
            if attempt == retries:
                raise SourceError(
                    f"{what}: failed {retries + 1} times, last: {reason(exc)}"
                ) from exc
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def resumed(
    what: str,
    stream: Callable[[], Iterator[T]],
    retries: int = RETRIES,
    backoff: float = BACKOFF_S,
) -> Iterator[T]:
    """Items of `stream()`, restarted after a transient failure and skipping the items
    already yielded (the stream gives the same items in the same order each time)."""
    given = 0
    for attempt in range(retries + 1):
        try:
            for i, item in enumerate(stream()):
                if i >= given:
                    given += 1
                    yield item
            return
        except PERMANENT as exc:
            raise SourceError(f"{what}: {reason(exc)}") from exc
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - network stacks raise many types
            if attempt == retries:
                raise SourceError(
                    f"{what}: failed {retries + 1} times (after {given} samples), last: "
                    f"{reason(exc)}"
                ) from exc
            time.sleep(backoff * 2**attempt)


def expand_url(url: str, retries: int = RETRIES) -> list[str]:
    """A URL, or every object a glob in it matches (sorted), as URLs."""
    fs, path = filesystem(url)
    if not GLOB.search(path):
        return [url]
    scheme = url.split("://", 1)[0]
    found = retrying(f"listing {redact(url)}", lambda: sorted(fs.glob(path)), retries)
    if not found:
        raise SourceError(f"{redact(url)}: the pattern matches no objects")
    return [p if is_url(p) else f"{scheme}://{p}" for p in found]


#: object stores whose first path component is a bucket
BUCKET_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


class Folder:
    """An output folder: a local directory, or an object-store prefix (`s3://b/tokens`).

    Writes are whole: a local file goes to a temporary name and is renamed; an object
    is one PUT, which stores make visible all at once or not at all."""

    def __init__(self, where: str | os.PathLike, retries: int = RETRIES):
        self.where = str(where).rstrip("/") if is_url(where) else str(where)
        self.remote = is_url(where)
        self.retries = retries
        if self.remote:
            self.fs, self.root = filesystem(self.where)
            self.root = self.root.rstrip("/")
        else:
            self.fs, self.root = None, self.where

    def __str__(self) -> str:
        return redact(self.where)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def url(self, name: str) -> str:
        return f"{self.where}/{name}" if self.remote else str(Path(self.root) / name)

    def _io(self, what: str, fn):
        return retrying(f"{what} {redact(self.url(''))}", fn, self.retries)

    def make(self, create_bucket: bool = False) -> None:
        """The folder, made if missing. On an object store the bucket must exist (a
        mistyped bucket is refused, not created) unless `create_bucket`."""
        if not self.remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            return
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (
            self.fs.protocol,)  # fmt: skip
        if set(protocols) & BUCKET_STORES:
            bucket = self.root.split("/", 1)[0]
            if not self._io("checking", lambda: self.fs.exists(bucket)):
                if not create_bucket:
                    raise SourceError(
                        f"--out {self}: bucket {bucket!r} does not exist (a typo?); check the "
                        "name, or pass --create-bucket to create it"
                    )
                self._io("creating", lambda: self.fs.mkdir(bucket))
        with contextlib.suppress(Exception):  # object stores have no folders
            self.fs.makedirs(self.root, exist_ok=True)

    def is_file_not_folder(self) -> bool:
        if self.remote:
            return self._io("checking", lambda: self.fs.isfile(self.root))
        p = Path(self.root)
        return p.exists() and not p.is_dir()

    def exists(self, name: str) -> bool:
        if self.remote:  # ask the store, not a cached listing: other workers write here
            self.fs.invalidate_cache(self.path(name))
            return self._io("checking", lambda: self.fs.exists(self.path(name)))
        return Path(self.path(name)).exists()

    def read_text(self, name: str) -> str:
        if self.remote:
            return self._io("reading", lambda: self.fs.cat_file(self.path(name)).decode())
        return Path(self.path(name)).read_text()

    def write_text(self, name: str, text: str) -> None:
        if self.remote:
            self._io("writing", lambda: self.fs.pipe_file(self.path(name), text.encode()))
            return
        path = Path(self.path(name))
        with replacing(path) as tmp:  # ranks may write one file: per-process names
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def create_text(self, name: str, text: str) -> str | None:
        """Write `name` only if it does not exist yet, in one step: an object store's
        conditional create (`If-None-Match: *`), locally a hard link of a finished
        temporary file. The version written (`_written`), or None when it existed."""
        if self.remote:

            def create():
                try:
                    return self.fs.pipe_file(self.path(name), text.encode(), mode="create")
                except FileExistsError:
                    return False

            answer = self._io("writing", create)
            return None if answer is False else self._written(name, answer)
        path = Path(self.path(name))
        tmp = temporary(path)
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return self._written(name, None)

    def replace_text_if(self, name: str, text: str, version: str) -> str | None:
        """Overwrite `name` only while it is still `version` (its `stamp()["version"]`;
        an object store's `If-Match`): the version written, or None when another writer
        changed or removed it first."""
        if self.remote:

            def replace():
                try:
                    return self.fs.pipe_file(self.path(name), text.encode(), IfMatch=version)
                except (FileExistsError, FileNotFoundError):
                    return False
                except OSError as exc:  # 412 Precondition Failed, as the client words it
                    if "condition" in str(exc).lower():
                        return False
                    raise

            answer = self._io("writing", replace)
            return None if answer is False else self._written(name, answer)
        now = self.stamp(name)
        if now is None or now["version"] != version:
            return None
        self.write_text(name, text)
        return self._written(name, None)

    def _written(self, name: str, answer) -> str:
        """The version a write just made: the store's answer to the write itself (S3's
        ETag), so that another writer replacing the object right after cannot be taken
        for ours; else (a store whose client answers nothing, a local file) read back."""
        if isinstance(answer, dict) and (said := answer.get("ETag") or answer.get("generation")):
            return str(said)
        found = self.stamp(name)
        return found["version"] if found else ""

    def stamp(self, name: str) -> dict | None:
        """`{"size", "version"}` of `name` (an object's ETag or generation; a local file's
        mtime), or None when it is not there."""
        if self.remote:
            path = self.path(name)
            self.fs.invalidate_cache(path)
            try:
                info = self._io("checking", lambda: self.fs.info(path))
            except SourceError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    return None
                raise
            version = info.get("ETag") or info.get("generation") or info.get("etag")
            return {"size": int(info.get("size") or 0), "version": str(version or "")}
        try:
            st = Path(self.path(name)).stat()
        except FileNotFoundError:
            return None
        return {"size": st.st_size, "version": str(st.st_mtime_ns)}

    def conditional_writes(self) -> bool:
        """Whether the store refuses a second conditional create of one name (a probe
        object written twice, then removed): what claims and the folder's pin rely on."""
        if not self.remote:
            return True
        probe = f".vqtool-probe-{os.getpid()}-{time.monotonic_ns()}"
        try:
            first = self.create_text(probe, "probe") is not None
            second = self.create_text(probe, "probe") is not None
        except (SourceError, TypeError, NotImplementedError, ValueError):
            return False
        finally:
            with contextlib.suppress(Exception):
                self.remove(probe)
        return first and not second

    def sweep_stale(self) -> list[str]:
        """Remove the `NAME.<pid>.tmp` files a killed writer left (see `vqtool.atomic`);
        the names removed."""
        return [] if self.remote else sweep(self.root)

    def put(self, local: Path, name: str) -> None:
        """Move a finished local file into the folder under `name`, whole."""
        if self.remote:
            self._io("uploading to", lambda: self.fs.put_file(str(local), self.path(name)))
            local.unlink(missing_ok=True)
            return
        with open(local, "rb") as f:
            os.fsync(f.fileno())
        os.replace(local, self.path(name))

    def remove(self, name: str) -> None:
        if self.remote:
            with contextlib.suppress(FileNotFoundError):
                if self.exists(name):
                    self._io("removing from", lambda: self.fs.rm_file(self.path(name)))
            return
        Path(self.path(name)).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Names directly in the folder, sorted."""
        if self.remote:

            def listing():
                try:
                    return self.fs.ls(self.root, detail=False, refresh=True)
                except FileNotFoundError:
                    return []

            found = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._io("listing", listing)]
        else:
            root = Path(self.root)
            found = [p.name for p in root.iterdir()] if root.is_dir() else []
        return sorted(found)
