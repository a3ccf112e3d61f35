"""The one training loop, for tokenizers and priors alike: device and
precision, AdamW with warmup and cosine decay, gradient accumulation and
clipping, optional weight EMA, periodic evaluation, atomic checkpoints and
`--resume`, and DistributedDataParallel under torchrun.

What differs between model kinds lives in a `TrainTask` (the tokenizer's
reconstruction/GAN/perceptual step in `training.tokenizer`, the priors'
cross-entropy in `priors.task`): the model, its loss on one micro-batch,
its data stream, evaluation, and its checkpoint file.

Nothing here prints: progress goes to `callback(TrainEvent)` and `logging`."""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vqtool import signals
from vqtool.atomic import replacing, sweep
from vqtool.data import PositionTracker, StreamPosition
from vqtool.errors import RunError
from vqtool.runtime import (
    autocast_dtype,
    init_distributed,
    pick_device,
    rank,
    set_cpu_threads,
    world_size,
)
from vqtool.training.recipe import TrainConfig
from vqtool.training.state import load_optimizer, load_state, optimizer_tensors, save_state

log = logging.getLogger("vqtool.train")


@dataclass
class TrainEvent:
    kind: str  # "start", "log", "eval", "checkpoint", "caching" (photos read into memory)
    step: int
    total: int
    metrics: dict = field(default_factory=dict)
    text: str = ""  # "log" / "eval": the task's one-line rendering of the metrics


@dataclass
class TrainResult:
    run: str
    checkpoint: str
    start_step: int
    steps: int
    images: int  # training samples seen (images, or token rows for priors)
    skipped: int
    skip_examples: list
    wall_s: float
    train: dict
    eval: dict | None
    device: str
    kind: str = "tokenizer"
    summary: list = field(default_factory=list)  # the task's [name, value] rows for a report
    swept: list[str] = field(default_factory=list)  # temporary files of killed runs, removed
    model: nn.Module | None = None  # the trained model (not serialized)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def lr_at(step: int, t: TrainConfig) -> float:
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


@dataclass
class StepBatch:
    """One micro-batch as the loop sees it: the task's payload, how many
    samples it holds, and the skipped items and stream positions it carries."""

    data: object
    count: int
    errors: list = field(default_factory=list)
    positions: list = field(default_factory=list)


class TrainTask(abc.ABC):
    """What one kind of model brings to the loop."""

    kind: str = ""
    checkpoint: str = ""  # file name of the final model in the run folder
    model: nn.Module  # the module whose weights are trained and saved
    recipe: object  # has .train (TrainConfig), .eval.every and .source (the merged TOML)
    has_eval: bool = False  # whether evaluate() has held-out data
    # the run's event callback (set by run_training): a task reports a long phase of its
    # own through it, as TrainEvent("caching", ...) while it reads its data into memory
    events: Callable[[TrainEvent], None] = staticmethod(lambda event: None)

    def setup(self, device: torch.device, amp: torch.dtype | None, train: TrainConfig) -> None:
        """Called once the device is known (before resume and DDP wrapping)."""
        self.device, self.amp, self.train_cfg = device, amp, train

    @abc.abstractmethod
    def batches(self, position: StreamPosition) -> Iterator[StepBatch]:
        """The endless training stream, starting at `position`."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: StepBatch, step: int) -> tuple[torch.Tensor, dict]:
        """Forward one micro-batch through `model` (maybe DDP-wrapped): loss and logs."""

    def after_backward(self, batch: StepBatch, step: int) -> None:
        """Runs after each micro-batch's backward (the GAN's discriminator step)."""
        return None

    def after_step(self, step: int) -> None:
        """Runs after each optimizer step (temperature schedules)."""
        return None

    def log_extras(self) -> dict:
        return {}

    @abc.abstractmethod
    def describe(self, kind: str, metrics: dict) -> str:
        """One line for a "log" (training) or "eval" (held-out) event's metrics."""

    def summary_rows(self, train: dict, evaluation: dict | None) -> list[tuple[str, str]]:
        """The task's rows for the run's summary: the last training and held-out figures."""
        rows = [("last train log", self.describe("log", train))] if train else []
        return rows + ([("eval", self.describe("eval", evaluation))] if evaluation else [])

    def busy_workers(self) -> int:
        """DataLoader workers decoding while the model trains (for the thread count)."""
        return 0

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict | None:
        """Held-out metrics, or None without evaluation data."""

    @abc.abstractmethod
    def save_checkpoint(self, model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
        """Write the final-model file (atomically)."""

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Extra resumable state (tensors, JSON info)."""
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        """Restore what `state_tensors` saved."""
        return None

    def params(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]


class _Trainer:
    def __init__(self, task: TrainTask, train: TrainConfig, source: dict, out: Path, resume):
        self.task, self.t, self.source, self.out = task, train, source, out
        self.device = pick_device(train.device)
        init_distributed(self.device)
        self.amp = autocast_dtype(train.precision, self.device)
        if self.device.type == "cpu":
            set_cpu_threads(train.threads, task.busy_workers())
        task.setup(self.device, self.amp, train)
        params = task.params()
        self.opt = (
            torch.optim.AdamW(params, train.lr, tuple(train.betas), weight_decay=train.weight_decay)
            if params
            else None
        )
        self.ema = copy.deepcopy(task.model).requires_grad_(False) if train.ema else None
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        self.step, self.position = 0, StreamPosition()
        if resume:
            self._resume()
        elif (out / "state.json").exists():
            raise RunError(
                f"{out} already holds a run; pass --resume to continue it or pick a new --out"
            )
        self.model = task.model
        if world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(
                task.model, device_ids=ids, broadcast_buffers=False
            )

    @property
    def final(self) -> nn.Module:
        return self.ema or self.task.model

    # -- state -------------------------------------------------------------------------
    def _resume(self) -> None:
        try:
            tensors, info = load_state(self.out)
        except (FileNotFoundError, ValueError) as exc:
            raise RunError(str(exc)) from exc
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.task.model.load_state_dict(model)
        except RuntimeError:  # other names or shapes: another model configuration
            raise RunError(
                f"--resume: {self.out} holds a run of another model configuration (see its "
                "recipe.json); resume with the same recipe and --set values, or use another --out"
            ) from None
        if self.opt:
            load_optimizer(self.opt, tensors, info["opt_groups"], "opt")
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.task.load_state(tensors, info)
        self.step = info["step"]
        self.position = StreamPosition(**info["position"])
        log.info("resumed %s at step %d", self.out, self.step)

    def save(self, tracker: PositionTracker) -> None:
        if rank() != 0:
            return
        meta = {"vqtool.train.step": str(self.step), "vqtool.recipe": json.dumps(self.source)}
        self.task.save_checkpoint(self.final, self.out / self.task.checkpoint, meta)
        tensors = {f"model.{k}": v.detach().cpu() for k, v in self.task.model.state_dict().items()}
        extra, info = self.task.state_tensors()
        tensors.update(extra)
        info = {**info, "position": tracker.position().__dict__}
        if self.opt:
            t, info["opt_groups"] = optimizer_tensors(self.opt, "opt")
            tensors.update(t)
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.detach().cpu() for k, v in self.ema.state_dict().items()})
        save_state(self.out, self.step, tensors, info)

    # -- one optimizer step ----------------------------------------------------------------
    def train_step(self, batches: list[StepBatch]) -> dict:
        lr = lr_at(self.step, self.t)
        for group in self.opt.param_groups if self.opt else []:
            group["lr"] = lr
        logs: dict[str, float] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or world_size() == 1 else self.model.no_sync()
            with sync:
                with torch.autocast(
                    self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
                ):
                    loss, batch_logs = self.task.loss(self.model, batch, self.step)
                if self.opt:
                    self.scaler.scale(loss / len(batches)).backward()
            self.task.after_backward(batch, self.step)
            logs.update(batch_logs)
        if self.opt:
            self.scaler.unscale_(self.opt)
            if self.t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], self.t.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self._ema_update(self.t.ema)
        self.task.after_step(self.step)
        self.step += 1
        logs["lr"] = lr
        return logs

    @torch.no_grad()
    def _ema_update(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.task.model.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.task.model.buffers()):
            e.copy_(b)

    @torch.no_grad()
    def evaluate(self) -> dict | None:
        model = self.final
        was_training = model.training
        model.eval()
        try:
            return self.task.evaluate(model)
        finally:
            model.train(was_training)


@dataclass
class _Progress:
    """What a run counts as it goes, and its metrics file (one JSON line per log/eval)."""

    metrics: object  # the open metrics.jsonl
    t0: float
    images: int = 0
    skipped: int = 0
    skip_examples: list = field(default_factory=list)

    def gather(self, batches, tracker: PositionTracker, n: int) -> list[StepBatch]:
        """The next `n` non-empty batches (one optimizer step), counting skipped samples."""
        group: list[StepBatch] = []
        while len(group) < n:
            batch = next(batches)
            tracker.update(batch.positions)
            self.skipped += len(batch.errors)
            self.skip_examples += batch.errors[: max(0, 5 - len(self.skip_examples))]
            if batch.count:
                group.append(batch)
        self.images += sum(b.count for b in group)
        return group

    def write(self, step: int, kind: str, figures: dict) -> None:
        self.metrics.write(json.dumps({"step": step, "kind": kind, **figures}) + "\n")
        self.metrics.flush()


def _run_folder(out: str | Path, source: dict) -> tuple[Path, list[str]]:
    """The run folder with its recipe.json, and the temporary files a killed run left
    between writing and renaming (removed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    swept = sweep(out)
    with replacing(out / "recipe.json") as tmp:
        tmp.write_text(json.dumps(source, indent=1))
    return out, swept


def run_training(
    task: TrainTask,
    out: str | Path,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train `task` for its recipe's `train.steps` optimizer steps, writing the run to `out`."""
    train, eval_every, source = task.recipe.train, task.recipe.eval.every, task.recipe.source
    callback = callback or (lambda e: None)
    out, swept = _run_folder(out, source)
    task.events = callback
    tr = _Trainer(task, train, source, out, resume)
    total, start = train.steps, tr.step
    tracker = PositionTracker(tr.position)
    callback(TrainEvent("start", start, total, {"device": str(tr.device)}))
    run = _Progress((out / "metrics.jsonl").open("a"), time.perf_counter())
    logs, last_eval, batches = {}, None, task.batches(tr.position)
    try:
        while tr.step < total:
            signals.check()  # a stop request swallowed inside a worker's start-up
            logs = tr.train_step(run.gather(batches, tracker, train.grad_accum))
            step = tr.step
            if step % train.log_every == 0 or step == total:
                elapsed = time.perf_counter() - run.t0
                logs.update(images_per_s=run.images / elapsed, elapsed_s=elapsed,
                            skipped=run.skipped, **task.log_extras())  # fmt: skip
                run.write(step, "train", logs)
                callback(TrainEvent("log", step, total, logs, task.describe("log", logs)))
            if task.has_eval and rank() == 0 and (step == total or (
                    eval_every and step % eval_every == 0)):  # fmt: skip
                last_eval = tr.evaluate()
                run.write(step, "eval", last_eval)
                text = task.describe("eval", last_eval)
                callback(TrainEvent("eval", step, total, last_eval, text))
            if step % train.checkpoint_every == 0 or step == total:
                tr.save(tracker)
                callback(TrainEvent("checkpoint", step, total))
    finally:
        run.metrics.close()
        if hasattr(batches, "close"):
            batches.close()
    if start == total and not (out / task.checkpoint).exists():
        tr.save(tracker)
    return TrainResult(
        run=str(out),
        checkpoint=str(out / task.checkpoint),
        start_step=start,
        steps=tr.step,
        images=run.images,
        skipped=run.skipped,
        skip_examples=[list(e) for e in run.skip_examples],
        wall_s=time.perf_counter() - run.t0,
        train=logs,
        eval=last_eval,
        device=str(tr.device),
        kind=task.kind,
        swept=swept,
        summary=[list(row) for row in task.summary_rows(logs, last_eval)],
        model=tr.final,
    )
