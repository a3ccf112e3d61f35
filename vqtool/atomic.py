"""Write-then-rename, and the sweep that removes what a killed writer left.

Every file vqtool writes is first written as `NAME.<pid>.tmp` beside its final name and
renamed over it when whole, so a reader never sees half a file. A process killed between
the two steps leaves its temporary file behind; `sweep` removes those whose writer is gone,
and every command that writes into a folder sweeps it when it starts. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path


def temporary(path: str | Path) -> Path:
    """The temporary name this process writes `path` under."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def commit(tmp: Path, path: str | Path, sync: bool = False) -> None:
    """Rename a finished temporary file over `path` (after an fsync when `sync`)."""
    if sync:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def replacing(path: str | Path, sync: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write; on success it replaces `path`, on error it is
    removed."""
    tmp = temporary(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, path, sync)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep(folder: str | Path, recursive: bool = False) -> list[str]:
    """Remove the `NAME.<pid>.tmp` files in `folder` whose writing process is gone; their
    names (relative to `folder`)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for tmp in sorted(root.rglob("*.tmp") if recursive else root.glob("*.tmp")):
        pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(str(tmp.relative_to(root)))
    return removed


def start_writeback(f) -> None:
    """Ask the kernel to start writing `f`'s dirty pages to disk now, without waiting
    (Linux `sync_file_range`; elsewhere nothing): the fsync before the rename then waits
    only for the last pages instead of the whole file (a 34 MB export file: 40 ms of
    fsync down to 3 ms on the development machine). The call itself queues every dirty
    page for the disk, ~0.7 ms per MB of the caller's time, so it runs on a helper
    thread (on a duplicate of the descriptor: the file may be closed meanwhile) and the
    caller goes on building the next batch."""
    global _sync_file_range, _writeback_queue
    if _sync_file_range is None:
        _sync_file_range = _find_sync_file_range()
    if _sync_file_range is False:
        return
    f.flush()
    with _writeback_lock:
        if _writeback_queue is None:
            _writeback_queue = queue.SimpleQueue()
            threading.Thread(target=_write_back, args=(_writeback_queue,), daemon=True,
                             name="vqtool-writeback").start()  # fmt: skip
    _writeback_queue.put(os.dup(f.fileno()))


def _write_back(requests) -> None:
    while True:
        fd = requests.get()
        try:
            _sync_file_range(fd, 0, 0, 2)  # SYNC_FILE_RANGE_WRITE, from 0 to the end
        finally:
            os.close(fd)


_sync_file_range = None
_writeback_queue = None
_writeback_lock = threading.Lock()


def _find_sync_file_range():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return fn
