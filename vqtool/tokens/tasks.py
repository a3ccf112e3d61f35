"""The task layer encode, export and the Ray executor share: the folder's pin (its
manifest: a configuration hash, refusal to mix, the planned task names), the skip over
done tasks (each done marker checked against this run's plan), this process's share of a
task list (ranks, Slurm arrays) and the OS lock that claims a task while it is written.
Standard library only."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from vqtool.data.remote import Folder
from vqtool.errors import EncodeError


def config_hash(pinned: dict) -> str:
    """The short hash that pins a folder to the settings in `pinned` (JSON-able)."""
    return hashlib.sha256(json.dumps(pinned, sort_keys=True).encode()).hexdigest()[:16]


def check_pin(
    out: Folder,
    manifest: str,
    config_hash: str,
    tasks: list[str],
    refuse: Callable[[dict], Exception],
) -> bool:
    """Refuse a folder whose manifest pins another configuration (raises `refuse(old
    manifest)`, the job's own error); record task names this plan adds (so `inspect`
    names the missing ones). True when the folder was pinned already."""
    if not out.exists(manifest):
        return False
    old = json.loads(out.read_text(manifest))
    if old.get("config_hash") != config_hash:
        raise refuse(old)
    planned = old.get("tasks") or []
    if set(tasks) - set(planned):
        old["tasks"] = sorted(set(planned) | set(tasks))
        out.write_text(manifest, json.dumps(old, indent=1))
    return True


def pin(out: Folder, manifest: str, record: dict, config_hash: str, tasks: list[str]) -> None:
    """Write the folder's manifest unless it is pinned already."""
    if not out.exists(manifest):
        info = {**record, "config_hash": config_hash, "tasks": tasks}
        out.write_text(manifest, json.dumps(info, indent=1))


def sort_done(
    out: Folder, tasks: list, check: Callable[[object, dict], str | None]
) -> tuple[list, list[dict], list[str]]:
    """(tasks to run, done markers of the tasks skipped, notes on tasks run again).
    `check(task, marker)` raises when a marker was written for other inputs or settings,
    or returns why a done task must run again (its marker is then removed: the task is
    written again, exactly once, under its name)."""
    todo, done, redo = [], [], []
    for task in tasks:
        marker = f"{task.name}.done.json"
        if not out.exists(marker):
            todo.append(task)
            continue
        info = json.loads(out.read_text(marker))
        why = check(task, info)
        if why:
            out.remove(marker)
            redo.append(f"{task.name}: {why}")
            todo.append(task)
        else:
            done.append(info)
    return todo, done, redo


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
