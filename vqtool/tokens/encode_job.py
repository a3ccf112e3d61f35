"""One process's encode job: the tokenizer on its device, the pinned configuration, and
the task function (`EncodeJob.run_tasks`) that the local driver (`tokens/encode.py`) and the
Ray actors (`tokens/ray_executor.py`) both run.

One DataLoader streams the images of all of a process's tasks through decode workers
that live for the whole run (decode, EXIF, RGB, resize and crop to the tokenizer's
resolution); batches are tokenized under `inference_mode`, and a task's rows are
written, in input order, when its last shard ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vqtool import signals
from vqtool.data import ImageStream, make_loader
from vqtool.data.decoding import MAX_PIXELS, InputRule, family_rule
from vqtool.data.policies import parse_policy
from vqtool.data.remote import Folder
from vqtool.errors import EncodeError, IncompleteError
from vqtool.metrics import CodebookUsage
from vqtool.models import Tokenizer
from vqtool.pretrained.opener import open_tokenizer
from vqtool.runtime import autocast_dtype, pick_device, set_cpu_threads, set_tf32
from vqtool.tokens.encode_config import EncodeConfig, EncodeResult
from vqtool.tokens.heartbeat import Heartbeat
from vqtool.tokens.identity import file_record, job_identity, pinned_hash
from vqtool.tokens.schema import token_schema
from vqtool.tokens.task_rows import NativeBuffer, Task, TaskRows, batch_columns
from vqtool.tokens.tasks import claim_task
from vqtool.tokens.writer import TaskWriter
from vqtool.utils import ENCODE_PRECISIONS


def make_job(
    cfg: EncodeConfig,
    callback: Callable[[str, dict], None] | None = None,
    device: str | None = None,
    compute: str | None = None,
) -> EncodeJob:
    """Everything one process needs to run tasks: the tokenizer on `device` (default
    `cfg.device`), the pinned configuration, the schema and a result to add to. A Ray
    driver plans on the CPU for `compute`, the device type its actors will run on."""
    if cfg.precision not in ENCODE_PRECISIONS:
        raise EncodeError(f"--precision {cfg.precision!r}: use {', '.join(ENCODE_PRECISIONS)}")
    out = Folder(cfg.out, cfg.retries)
    if out.is_file_not_folder():
        raise EncodeError(f"--out {out}: an existing file, not a folder; name a folder")
    device = pick_device(device or cfg.device)
    if device.type == "cpu" and not compute:  # this process runs the model on the CPU
        set_cpu_threads(cfg.threads, cfg.workers)
    opened = open_tokenizer(cfg.tokenizer, device, cfg.image_size)
    tok = opened.tokenizer
    set_tf32(cfg.tf32)
    image_size = tok.config.image_size
    runs_on = torch.device(compute) if compute else device
    amp = autocast_dtype(cfg.precision, runs_on)
    tf32 = cfg.tf32 and runs_on.type == "cuda"
    policy = parse_policy(cfg.resize or tok.config.policy)
    convolutional = ("conv", "dvae", "magvit2", "maskgit_vqgan", "emu3", "movq", "infinity")
    if policy[0] != "square" and tok.config.model.architecture not in convolutional:
        raise EncodeError(
            f"--resize {cfg.resize or tok.config.policy}: this tokenizer's token layout is "
            f"fixed to {image_size} px (a ViT, hierarchical or palette model); use --resize square"
        )
    f = tok.config.model.downsample
    if policy[0] == "area" and len(policy) > 2 and policy[2] % f:
        raise EncodeError(
            f"--resize {cfg.resize}: sides rounded to multiples of {policy[2]} do not divide "
            f"into this tokenizer's {f}-pixel patches; use a multiple of {f}"
        )
    rule = family_rule(tok.config.resize, cfg.orientation, cfg.high_bit_depth)
    identity = job_identity(tok, opened, image_size, amp, tf32, policy, rule)
    identity["preprocessing"].update(decode_choice(cfg.decode, tok.config.resize, policy))
    result = EncodeResult(
        out=str(out), tasks_total=0, tasks_mine=0, tasks_done=0, tasks_skipped=0, images=0,
        tokens=0, errors=0, vocab_size=tok.vocab_size, device=str(device),
        tokenizer_family=opened.foreign.family if opened.foreign else None,
        notes=opened.notes + (opened.foreign.notes if opened.foreign else []),
        input_rule=rule.to_dict(),
    )  # fmt: skip
    return EncodeJob(cfg=cfg, tok=tok, out=out, policy=policy, rule=rule,
                schema=token_schema(tok.vocab_size, file_record(identity, pinned_hash(identity)),
                                    grids=policy[0] != "square"),
                np_dtype=np.dtype(identity["dtype"]), amp=amp,
                image_size=image_size, config_hash=pinned_hash(identity), identity=identity,
                device=device, usage=CodebookUsage(tok.vocab_size), result=result,
                callback=callback or (lambda kind, info: None))  # fmt: skip


DECODERS = ("pil", "draft")


def decode_choice(decode: str | None, resize: str, policy: tuple) -> dict:
    """--decode checked; what the folder records of it: nothing for the family's own way
    (draft for vqtool's own tokenizers, a full decode for the public ones, whose
    originals decode in full), else {"decode": NAME} (pinned: a rerun with another is
    refused)."""
    if decode is None:
        return {}
    if decode not in DECODERS:
        raise EncodeError(f"--decode {decode!r}: use {' or '.join(DECODERS)}")
    if decode == "draft" and policy[0] != "square":
        raise EncodeError(
            "--decode draft reduces JPEGs towards one square size; --resize "
            f"{':'.join(map(str, policy))} keeps each image's own: leave --decode out (or pil)"
        )
    own = "draft" if resize == "bicubic" else "pil"
    return {} if decode == own else {"decode": decode}


@dataclass
class EncodeJob:
    """What every task of one encode run shares."""

    cfg: EncodeConfig
    tok: Tokenizer
    out: Folder
    policy: tuple
    rule: InputRule
    schema: object
    np_dtype: np.dtype
    amp: torch.dtype | None
    image_size: int
    config_hash: str
    identity: dict
    device: torch.device
    usage: CodebookUsage
    result: EncodeResult
    callback: Callable[[str, dict], None]
    native: NativeBuffer | None = None  # images of their own sizes, across tasks
    shapes: dict = field(default_factory=dict)  # (height, width) -> images the network saw
    decode_s: float = 0.0  # seconds the decoded images took to decode and resize, in all
    decoded: int = 0
    beat: Heartbeat | None = None  # progress from inside a slow batch (while run_tasks runs)

    def run_task(self, task: Task) -> None:
        """Claim one task, encode it into its Parquet file, then mark it done."""
        self.run_tasks([task])

    def run_tasks(self, tasks: list[Task]) -> None:
        """Encode `tasks` through one loader whose decode workers live for the whole run:
        workers take shards in input order, each task's rows wait in memory until the last
        of its shards ends, then go to its file sorted by (shard, member), whatever the
        number of workers or the batch size. Each task is claimed (OS lock) at its first
        row, written, marked done, and released."""
        if not tasks:
            return
        try:
            with Heartbeat(self.callback) as self.beat:
                self._run(tasks)
        except RuntimeError as exc:
            # the loader's SIGCHLD handler raises wherever the main thread is: a decode
            # worker killed while the loop winds down (joining the heartbeat) lands here
            if "DataLoader worker" not in str(exc):
                raise
            raise IncompleteError(
                f"a decode worker died ({str(exc).splitlines()[0]}; out of memory?) as the "
                "run finished its reads; rerun the same command to finish what is left "
                "(done tasks are kept)"
            ) from None

    def _run(self, tasks: list[Task]) -> None:
        shards = [s for t in tasks for s in t.shards]
        owner = [(ti, j) for ti, t in enumerate(tasks) for j in range(len(t.shards))]
        stream = ImageStream(
            shards,
            self.image_size,
            train=False,
            max_pixels=self.cfg.max_pixels or MAX_PIXELS,
            resize=self.tok.config.resize,
            native=self.policy,
            factor=getattr(self.tok.net, "factor", 1),
            ends=True,
            rule=self.rule,
            draft=None if self.cfg.decode is None else self.cfg.decode == "draft",
        )
        loader = make_loader(
            stream, self.cfg.batch_size, self.cfg.workers, pin_memory=self.device.type == "cuda"
        )
        open_: dict[int, TaskRows] = {}
        try:
            for batch in loader:
                signals.check()  # a stop request the workers' start-up may have swallowed
                self._take_batch(batch, tasks, owner, open_)
                for sid, parts, stamp in batch.ends:
                    rows = self._open(tasks, owner[sid][0], open_)
                    rows.ended(owner[sid][1], parts, stamp)
                    if rows.complete:
                        self._finish(open_.pop(owner[sid][0]))
                self.callback("batch", {"images": len(batch.images), "errors": len(batch.errors)})
        except BaseException as exc:
            self.native = None
            for rows in open_.values():
                rows.claim.close()
            if isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc):
                raise IncompleteError(
                    f"a decode worker died ({str(exc).splitlines()[0]}; out of memory?): "
                    f"{len(open_)} task(s) in progress were not written; rerun the same "
                    "command to finish them (done tasks are kept)"
                ) from None
            raise
        if open_:  # every shard ends with a marker: anything left is a bug
            raise AssertionError(f"tasks never completed: {sorted(open_)}")

    def _open(self, tasks: list[Task], ti: int, open_: dict) -> TaskRows:
        """A task's rows, claimed at first contact."""
        if ti not in open_:
            claim = contextlib.ExitStack()
            try:
                free = claim.enter_context(claim_task(
                    self.out, tasks[ti].name, single_writer=self.cfg.single_writer,
                    lease_s=self.cfg.claim_lease_s))
            except BaseException:
                claim.close()
                raise
            open_[ti] = TaskRows(tasks[ti], claim, free)
        return open_[ti]

    def _take_batch(self, batch, tasks: list[Task], owner: list, open_: dict) -> None:
        for (key, why), m, (sid, n) in zip(batch.errors, batch.error_meta, batch.error_orders):
            error = {"key": key, "kind": m["kind"], "reason": why, "source": m["source"],
                     "source_index": m["index"]}  # fmt: skip
            self._open(tasks, owner[sid][0], open_).errors.append(((owner[sid][1], n), error))
        if not len(batch.images):
            return
        for m in batch.meta:  # what the input rule met; the decode time (roofline)
            for what in m.get("touched", ()):
                setattr(self.result, what, getattr(self.result, what) + 1)
            self.decode_s += m.get("decode_s", 0.0)
            self.decoded += "decode_s" in m
        tags = [(owner[sid][0], owner[sid][1], n) for sid, n in batch.orders]
        for ti in dict.fromkeys(t[0] for t in tags):
            self._open(tasks, ti, open_)
        if self.policy[0] != "square":
            return self._encode_native(batch, tags, tasks)
        tokens, _ = self._network(batch.images.to(self.device, non_blocking=True), grid=False)
        self.usage.update(tokens)
        rows = tokens.cpu().numpy().astype(self.np_dtype)
        meta = batch_columns(batch)
        for i, (ti, j, n) in enumerate(tags):
            open_[ti].add((j, n), rows[i], {k: v[i] for k, v in meta.items()})
        self.result.images += len(batch.images)
        self.result.tokens += tokens.numel()

    def _finish(self, rows: TaskRows) -> None:
        """Write a complete task's rows in input order, mark it done, release its claim."""
        try:
            if self.native is not None:  # its images of their own sizes, all encoded now
                for shape in list(self.native.buckets):
                    self._run_bucket(self.native, shape)
                for tag, (row, grid) in self.native.take(rows.task.name).items():
                    rows.add(tag, row, {**self.native.meta.pop((rows.task.name, tag)),
                                        "grid_h": grid[0], "grid_w": grid[1]})  # fmt: skip
            if not rows.free:  # another process finished it meanwhile, or holds it
                if rows.free.by:
                    self._unfinished(rows, f"claimed by another live run ({rows.free.by})")
                return
            lost = _unreadable_input(rows.errors)
            if rows.free.lost:  # its lease ran out and another run took the task over
                lost = "its claim was taken over by another run (this one stalled)"
            if lost:  # not done: no file, no marker; the rerun reads the task again
                self._unfinished(rows, lost)
                return
            writer = TaskWriter(self.out, rows.task.name, self.schema)
            try:
                tokens, meta = rows.in_order()
                self._note_repeated_keys(rows.task.name, meta.get("key", []))
                if len(tokens):
                    writer.add(tokens, meta)
                errors = [e for _, e in sorted(rows.errors, key=lambda x: x[0])]
                shards = [s.name for s in rows.task.shards]
                info = {"config_hash": self.config_hash, "shards": shards, "inputs": rows.stamps}
                done = writer.commit(errors, info)
            except BaseException:
                writer.abort()
                raise
        finally:
            rows.claim.close()
        r = self.result
        r.tasks_done += 1
        r.errors += len(errors)
        r.error_examples += errors[: max(0, 5 - len(r.error_examples))]
        r.bytes_on_disk += done["bytes"]
        self.callback("task", {"name": rows.task.name, **done})

    def _note_repeated_keys(self, name: str, keys: list[str]) -> None:
        """Keys that appear in more than one input of a task are kept but said: export's
        per-sample draws and `decode --keys` take keys as unique."""
        seen: set[str] = set()
        repeated = sorted({k for k in keys if k in seen or seen.add(k)})
        if repeated:
            self.result.notes.append(
                f"{name}: {len(repeated)} key(s) appear in more than one input (e.g. "
                f"{repeated[0]!r}); both rows are kept, but keys should be unique"
            )

    def _unfinished(self, rows: TaskRows, why: str) -> None:
        self.result.unfinished.append(f"{rows.task.name}: {why}")
        self.callback("unfinished", {"name": rows.task.name, "reason": why})

    def _encode_native(self, batch, tags: list[tuple], tasks: list[Task]) -> None:
        """Images of their own sizes wait in buckets of one size across loader batches, so
        the network sees full batches; a task's rows are written, with their grids, in
        input order when its last shard ends (`_finish`)."""
        native = self.native = self.native or NativeBuffer()
        images = batch.images if isinstance(batch.images, list) else list(batch.images)
        meta = batch_columns(batch)
        for i, (img, (ti, j, n)) in enumerate(zip(images, tags)):
            native.add(img, (tasks[ti].name, (j, n)), {k: v[i] for k, v in meta.items()})
            if len(native.buckets[tuple(img.shape)]) >= self.cfg.batch_size:
                self._run_bucket(native, tuple(img.shape))
        if native.waiting > 4 * self.cfg.batch_size:  # many sizes: bound the images held
            for shape in sorted(native.buckets, key=lambda s: -len(native.buckets[s])):
                self._run_bucket(native, shape)
        self.result.images += len(images)

    def _network(self, images: torch.Tensor, grid: bool) -> tuple[torch.Tensor, tuple | None]:
        """The tokenizer on a batch (under autocast when asked): on a CPU in pieces of at
        most CPU_PIXELS pixels (a batch of eight 256 px images ran 5-10% slower per image
        than one or two at a time, three 112x160 px Emu3.5 images 33% slower than one,
        and the default batch of 64 held gigabytes of activations)."""
        amp, n = self.amp, len(images)
        size = tuple(images.shape[-2:])
        self.shapes[size] = self.shapes.get(size, 0) + len(images)
        if self.device.type == "cpu":
            n = max(1, CPU_PIXELS // (images.shape[-1] * images.shape[-2]))
        out, shape = [], None
        beat = self.beat  # run_tasks' helper thread
        beat.begin(len(images))
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            for part in images.split(n):
                if grid:
                    tokens, shape = self.tok.encode_grid(part)
                else:
                    tokens = self.tok.encode(part)
                out.append(tokens)
                beat.advance(len(part))
        beat.end()
        return torch.cat(out), shape

    def _run_bucket(self, native: NativeBuffer, shape: tuple) -> None:
        bucket = native.buckets.pop(shape, [])
        if not bucket:
            return
        stacked = torch.stack([img for _, img in bucket]).to(self.device, non_blocking=True)
        tokens, grid = self._network(stacked, grid=True)
        self.usage.update(tokens)
        self.result.tokens += tokens.numel()
        for (tag, _), row in zip(bucket, tokens.cpu().numpy().astype(self.np_dtype)):
            native.rows[tag] = (row, grid)
        native.waiting -= len(bucket)


#: the most pixels the network sees at once on a CPU (one image of 128 px or more; 4 of 64 px)
CPU_PIXELS = 1 << 14

#: whole-input failures: the task's rows would be incomplete, so it is not marked done
INPUT_FAILURES = ("unreadable", "pipe_failed")


def _unreadable_input(errors: list) -> str | None:
    """The reason a task's input could not be read as a whole (an `unreadable` shard after
    its retries, a failed `pipe:` command), or None."""
    for _, e in errors:
        if e["kind"] in INPUT_FAILURES and not e["key"]:
            return f"{e['source']}: {e['reason']}"
    return None
