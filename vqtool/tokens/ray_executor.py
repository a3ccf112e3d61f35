"""`vqtool encode --executor ray`: the same tasks and the same task function, on a Ray
cluster.

The driver plans the task list and skips done tasks exactly as a local run does.
One actor per GPU (or per `ray_cpus_per_actor` CPUs) opens the tokenizer once and
is handed the next task whenever it finishes one, so fast actors take more (no
static split). A task whose actor or node dies is handed to another actor, at
most `ray_max_retries` times, then reported failed with the reason. Output is
committed only by the task's writer (the part file, then its done marker), so a
task that ran twice leaves one part file, never duplicate rows: Ray retries are
at-least-once, the done markers make the result exactly-once.
"""

from __future__ import annotations

import collections
import contextlib
import signal
import socket
import threading

from vqtool.errors import EncodeError, IncompleteError, UserError
from vqtool.tokens.encode_config import EncodeConfig
from vqtool.tokens.encode_job import EncodeJob, Task, make_job

#: what an actor reports per task, added to the driver's result
FIGURES = ("images", "tokens", "errors", "bytes_on_disk", "exif_oriented", "high_bit_depth")


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise EncodeError("--executor ray needs Ray: pip install 'vqtool[ray]'") from exc
    return ray


def start(cfg: EncodeConfig):
    """Connect to `cfg.ray_address` (a running cluster), or start a local one."""
    ray = _ray()
    if not ray.is_initialized():
        if cfg.ray_address:
            _check_reachable(cfg.ray_address)
        ours = signal.getsignal(signal.SIGTERM)
        _init(ray, cfg.ray_address)
        if threading.current_thread() is threading.main_thread() and callable(ours):
            # Ray's core worker installs a handler that dumps its stack and dies by the
            # signal; a scheduler's SIGTERM should stop the run as Ctrl-C does (exit 130)
            signal.signal(signal.SIGTERM, ours)
    return ray


#: what Ray's client server answers when the session process it forked died at birth
#: (an intermittent Ray fault, ray-project/ray#63202)
_CLIENT_SESSION_DIED = "Initialization failure from server"


def _init(ray, address: str | None) -> None:
    """`ray.init` (joining `address`, else a local cluster), once more when a `ray://`
    session died as Ray's client server started it; any other refusal is one line naming
    the address."""
    kwargs = {"address": address} if address else {}
    for attempt in (1, 2):
        try:  # actors import vqtool from the same environment; silence Ray's banner
            ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
            return
        except ConnectionError as exc:
            said = str(exc).splitlines()[0]
            died = _CLIENT_SESSION_DIED in said
            if died and attempt == 1:
                ray.shutdown()
                continue
            hint = (" (Ray's client server could not start this session twice in a row, an "
                    "intermittent Ray fault, ray-project/ray#63202; starting the head with "
                    "GRPC_ENABLE_FORK_SUPPORT=false in its environment avoids it)"
                    if died else "")  # fmt: skip
            raise EncodeError(f"--ray-address {address}: {said}{hint}") from None


#: how long a cluster address may take to answer before the run is refused
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout`, an address nothing answers at (`host:port`, or
    `ray://host[:port]`, port 10001 by default), instead of waiting on Ray's retries."""
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    where = address.removeprefix("ray://").split("/", 1)[0]
    host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
    port_n = int(port) if port.isdigit() else (10001 if client else 6379)
    try:
        socket.create_connection((host or "127.0.0.1", port_n), timeout=timeout).close()
    except OSError as exc:
        raise EncodeError(
            f"--ray-address {address}: nothing answers at {host or '127.0.0.1'}:{port_n} "
            f"within {timeout:.0f} s ({exc.strerror or type(exc).__name__}); start the "
            "cluster (ray start --head) or check the address"
        ) from None


def compute_device(cfg: EncodeConfig) -> str:
    """The device type the actors will encode on (it pins the folder's precision)."""
    ray = start(cfg)
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.device.startswith("cuda") and not gpus:
        raise EncodeError(f"--device {cfg.device}: the Ray cluster has no GPUs")
    on_gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and gpus > 0)
    return "cuda" if on_gpu else "cpu"


class EncodeActor:
    """Holds one tokenizer; runs whole tasks with the local task function."""

    def __init__(self, cfg: EncodeConfig, config_hash: str):
        self.job: EncodeJob = make_job(cfg)
        if self.job.config_hash != config_hash:
            raise EncodeError(
                f"an actor on {self.job.device} pins configuration {self.job.config_hash}, the "
                f"driver {config_hash}: give --device and --precision explicitly"
            )
        self.events: list[tuple[str, dict]] = []
        self.job.callback = lambda kind, info: self.events.append((kind, info))

    def run(self, task: Task) -> dict:
        r = self.job.result
        before = {k: getattr(r, k) for k in FIGURES}
        examples = len(r.error_examples)
        self.job.usage.counts.zero_()
        self.job.run_task(task)
        done = next((i for k, i in reversed(self.events) if k == "task"), None)
        lost = next((i for k, i in reversed(self.events) if k == "unfinished"), None)
        self.events.clear()
        return {
            "name": task.name,
            **{k: getattr(r, k) - before[k] for k in FIGURES},
            "error_examples": r.error_examples[examples:],
            "counts": self.job.usage.counts.clone(),
            "written": done is not None,
            "done": done or {},
            "unfinished": lost,
        }


class _Actors:
    """The encode actors: as many as the cluster holds (one per GPU for CUDA work, else
    CPUs // --ray-cpus-per-actor; --ray-actors caps it), and room for a replacement."""

    def __init__(self, ray, cfg: EncodeConfig, job: EncodeJob, compute: str, tasks: int):
        self.ray, self.cfg = ray, cfg
        self.gpus = ray.cluster_resources().get("GPU", 0) if compute == "cuda" else 0
        per_actor = {"num_gpus": 1, "num_cpus": 0} if self.gpus else {
            "num_cpus": cfg.ray_cpus_per_actor}  # fmt: skip
        if cfg.ray_actors is not None:
            count = cfg.ray_actors
        elif self.gpus:
            count = int(self.gpus)
        else:
            count = max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.ray_cpus_per_actor))
        self.count = max(1, min(count, tasks)) if tasks else 0
        self.remote = ray.remote(EncodeActor).options(max_restarts=0, max_concurrency=1,
                                                      **per_actor)  # fmt: skip
        self.config_hash = job.config_hash

    def new(self):
        return self.remote.remote(self.cfg, self.config_hash)

    def room_for_one(self) -> bool:
        free = self.ray.available_resources()
        if self.gpus:
            return free.get("GPU", 0) >= 1
        return free.get("CPU", 0) >= self.cfg.ray_cpus_per_actor


def _raise_unless_retryable(exc, task_error: type) -> None:
    """Return for a dead actor or a task whose decode worker died (`IncompleteError`);
    raise anything else the task raised, a user error as locally (its last line)."""
    if not isinstance(exc, task_error) or isinstance(exc.as_instanceof_cause(), IncompleteError):
        return
    error = _task_error(exc)
    if error is exc:
        raise exc
    raise error from None


def _task_error(exc) -> BaseException:
    """A task that raised on an actor: a user error as locally (its last line), else the
    error itself."""
    cause = exc.as_instanceof_cause()
    if isinstance(cause, UserError):
        return type(cause)(str(cause).split("\n")[-1] or str(cause))
    return exc


def run_on_ray(cfg: EncodeConfig, job: EncodeJob, todo: list[Task], compute: str) -> None:
    """Run `todo` on actors (on GPUs when `compute` is "cuda"), adding their figures and
    usage to `job.result`. A task whose actor or node dies is redone on a new actor, at
    most `cfg.ray_max_retries` times."""
    ray = start(cfg)
    from ray.exceptions import RayActorError, RayTaskError

    actors = _Actors(ray, cfg, job, compute, len(todo))
    idle = [actors.new() for _ in range(actors.count)]
    pending = collections.deque(todo)
    running: dict = {}  # object ref -> (actor, task)
    tries: collections.Counter = collections.Counter()
    failed: list[str] = []
    r = job.result
    r.ray_actors = actors.count
    try:
        while pending or running:
            while idle and pending:
                actor, task = idle.pop(), pending.popleft()
                running[actor.run.remote(task)] = (actor, task)
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(ready[0])
            try:
                info = ray.get(ready[0])
            except (RayActorError, RayTaskError) as exc:  # the actor, its node or a decode
                # worker died: redo the task on a new actor; any other task error stops
                _raise_unless_retryable(exc, RayTaskError)
                tries[task.name] += 1
                if tries[task.name] > cfg.ray_max_retries:
                    failed.append(f"{task.name}: its actor died {tries[task.name]} times "
                                  f"({type(exc).__name__})")  # fmt: skip
                else:
                    pending.append(task)
                    r.ray_retried += 1
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                if actors.room_for_one():
                    idle.append(actors.new())
                if not idle and not running and pending:
                    raise EncodeError(
                        f"no Ray actor is left to run {len(pending)} task(s) (the last one died: "
                        f"{type(exc).__name__}); rerun to finish them"
                    ) from None
                continue
            idle.append(actor)
            _merge(job, info)
    finally:
        for actor in idle + [a for a, _ in running.values()]:
            with contextlib.suppress(Exception):
                ray.kill(actor)
    if failed:
        r.ray_failed = failed
        r.unfinished += failed
        r.notes.append(f"{len(failed)} task(s) failed on Ray: " + "; ".join(failed[:3])
                       + " (rerun to redo them)")  # fmt: skip


def _merge(job: EncodeJob, info: dict) -> None:
    r = job.result
    for k in FIGURES:
        setattr(r, k, getattr(r, k) + info[k])
    r.error_examples += info["error_examples"][: max(0, 5 - len(r.error_examples))]
    job.usage.counts += info["counts"]
    job.callback("batch", {"images": info["images"], "errors": info["errors"]})
    if info["written"]:
        r.tasks_done += 1
        job.callback("task", {"name": info["name"], **info["done"]})
    if info.get("unfinished"):
        r.unfinished.append(f"{info['name']}: {info['unfinished']['reason']}")
