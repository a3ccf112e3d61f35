"""What encode and export share about tasks: this process's share of a task list
(ranks, Slurm arrays) and the OS lock that claims a task while it is written. Standard
library only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from vqtool.data.remote import Folder
from vqtool.errors import EncodeError


@contextlib.contextmanager
def claim_task(out: Path | Folder, name: str, job: str = "encode"):
    """Hold `out/name.lock` (an OS lock, released if the process dies) while the task is
    written; yields False when another process finished the task meanwhile. A task
    another live process is writing is refused: two jobs never write one file. An
    object-store folder has no locks: its tasks are claimed by the executor's plan."""
    if isinstance(out, Folder):
        if out.remote:
            yield not out.exists(f"{name}.done.json")
            return
        out = Path(out.root)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no claim
        yield not (out / f"{name}.done.json").exists()
        return
    path = out / f"{name}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EncodeError(
                f"{out}: another vqtool {job} is writing {name} right now; run one {job} per "
                "folder, or split the work with --num-shards/--shard-index"
            ) from None
        except OSError:  # a filesystem without locks (some network mounts): no claim
            pass
        try:
            yield not (out / f"{name}.done.json").exists()
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_locks(out: Path | Folder) -> list[str]:
    """Remove the `NAME.lock` files no live process holds (a killed run leaves the lock of
    a task it had finished but not yet released); the names removed."""
    if isinstance(out, Folder):
        if out.remote:
            return []
        out = Path(out.root)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return []
    removed = []
    for path in sorted(out.glob("*.lock")):
        with contextlib.suppress(OSError), open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            path.unlink()
            removed.append(path.name)
    return removed


def split_tasks(tasks: list, num_shards: int | None, shard_index: int | None) -> list:
    """This process's share of a task list: `--num-shards/--shard-index` (Slurm arrays),
    else `RANK`/`WORLD_SIZE` (torchrun), else all of it."""
    if num_shards is not None or shard_index is not None:
        if num_shards is None or shard_index is None:
            raise EncodeError("--num-shards and --shard-index go together")
        k, i = num_shards, shard_index
    else:
        k, i = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if k < 1 or not 0 <= i < k:
        raise EncodeError(f"shard index {i} is not in [0, {k})")
    return tasks[i::k]
