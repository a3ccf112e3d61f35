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
import socket
import threading
import time
import uuid
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


def pin(
    out: Folder,
    manifest: str,
    record: dict,
    config_hash: str,
    tasks: list[str],
    refuse: Callable[[dict], Exception] | None = None,
) -> None:
    """Write the folder's manifest unless it is pinned already, with a conditional create:
    of two runs starting at once one pins the folder, and the other is checked against
    that pin (`refuse`, as `check_pin`) instead of overwriting it."""
    if out.exists(manifest):
        return
    info = {**record, "config_hash": config_hash, "tasks": tasks}
    if out.create_text(manifest, json.dumps(info, indent=1)) is None and refuse is not None:
        check_pin(out, manifest, config_hash, tasks, refuse)


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


#: how long an object-store claim holds without being renewed (a crashed owner's task is
#: taken over after this); the owner renews it every third of it
LEASE_S = 600.0
#: this process, as a claim's owner
OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claim:
    """A task held on an object store: `NAME.claim` created conditionally (`If-None-Match:
    *`) with its owner and lease, renewed by a background thread with `If-Match` on the
    version this owner wrote. `lost` turns True when another run took it over (the
    lease ran out: this process stalled), and the task must then not be marked done."""

    def __init__(self, out: Folder, name: str, version: str, lease_s: float):
        self.out, self.name, self.version, self.lease_s = out, name, version, lease_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"vqtool-lease-{name}")  # fmt: skip
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                now = self.out.replace_text_if(self.name, _claim_text(self.lease_s), self.version)
            except Exception:  # noqa: BLE001 - a store hiccup: the next renewal tries again
                continue
            if now is None:
                self.lost = True
                return
            self.version = now  # what this write made, not whatever is there by now

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self.lost:
            with contextlib.suppress(Exception):
                self.out.remove(self.name)


def _claim_text(lease_s: float) -> str:
    return json.dumps({"owner": OWNER, "expires": time.time() + lease_s})


class Held:
    """What `claim_task` yields: true when this process writes the task (false: another
    finished it, or another live run holds it: `by` names that run); `lost` when an
    object-store claim was taken over meanwhile."""

    def __init__(self, free: bool, claim: Claim | None = None, by: str | None = None):
        self.free, self.claim, self.by = free, claim, by

    def __bool__(self) -> bool:
        return self.free

    @property
    def lost(self) -> bool:
        return self.claim is not None and self.claim.lost


@contextlib.contextmanager
def _claim_remote(out: Folder, name: str, lease_s: float):
    """An object-store task claimed with a conditional create; an expired claim (its owner
    crashed) is taken over with `If-Match` on the version read, so one run wins."""
    if out.exists(f"{name}.done.json"):
        yield Held(False)
        return
    claim_name = f"{name}.claim"
    version = out.create_text(claim_name, _claim_text(lease_s))
    if version is None:
        found = out.stamp(claim_name)
        try:
            held = json.loads(out.read_text(claim_name)) if found else {}
        except Exception:  # noqa: BLE001 - released meanwhile, or unreadable: retake below
            held = {}
        if found and held.get("expires", 0) > time.time():
            yield Held(False, by=str(held.get("owner")))
            return
        version = (out.replace_text_if(claim_name, _claim_text(lease_s), found["version"])
                   if found else out.create_text(claim_name, _claim_text(lease_s)))  # fmt: skip
        if version is None:  # another run took it over first
            yield Held(False, by="another run")
            return
    claim = Claim(out, claim_name, version, lease_s)
    try:
        yield Held(not out.exists(f"{name}.done.json"), claim)
    finally:
        claim.release()


@contextlib.contextmanager
def claim_task(
    out: Path | Folder,
    name: str,
    job: str = "encode",
    single_writer: bool = False,
    lease_s: float = LEASE_S,
):
    """Hold `out/name.lock` (an OS lock, released if the process dies) while the task is
    written; yields a false `Held` when another process finished the task meanwhile. A
    task another live process is writing is refused: two jobs never write one file. On
    an object store the task is claimed with a conditional create and a lease
    (`_claim_remote`); a task another live run holds is skipped; with `single_writer`
    (a store without conditional writes) only the done marker is checked."""
    if isinstance(out, Folder):
        if out.remote:
            if single_writer:
                yield Held(not out.exists(f"{name}.done.json"))
                return
            with _claim_remote(out, name, lease_s) as held:
                yield held
            return
        out = Path(out.root)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no claim
        yield Held(not (out / f"{name}.done.json").exists())
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
            yield Held(not (out / f"{name}.done.json").exists())
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
