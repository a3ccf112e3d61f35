"""The one training loop: device and precision, AdamW with warmup and cosine
decay, gradient accumulation and clipping, optional weight EMA, the GAN and
perceptual terms, periodic evaluation, atomic checkpoints and `--resume`,
and DistributedDataParallel under torchrun (codebook statistics are
all-reduced by the quantizers themselves).

Nothing here prints: progress goes to `callback(TrainEvent)` and `logging`."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from vqtool.data import ImageStream, PositionTracker, StreamPosition, expand_sources, make_loader
from vqtool.losses.gan import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from vqtool.losses.perceptual import load_perceptual
from vqtool.losses.reconstruction import reconstruction_loss
from vqtool.metrics import CodebookUsage, psnr, ssim
from vqtool.models.tokenizer import Tokenizer
from vqtool.training.recipe import Recipe
from vqtool.training.state import load_optimizer, load_state, optimizer_tensors, save_state
from vqtool.utils import rank, world_size

log = logging.getLogger("vqtool.train")
CHECKPOINT = "tokenizer.safetensors"


class RunError(ValueError):
    """The run folder or the training setup cannot be used as asked."""


@dataclass
class TrainEvent:
    kind: str  # "start", "log", "eval", "checkpoint"
    step: int
    total: int
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    run: str
    checkpoint: str
    start_step: int
    steps: int
    images: int
    skipped: int
    skip_examples: list
    wall_s: float
    train: dict
    eval: dict | None
    device: str
    tokenizer: Tokenizer | None = None  # the trained model (not serialized)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "tokenizer"}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def init_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)


def lr_at(step: int, recipe: Recipe) -> float:
    t = recipe.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


class _Trainer:
    def __init__(self, recipe: Recipe, out: Path, resume: bool, callback):
        self.recipe, self.out, self.callback = recipe, out, callback or (lambda e: None)
        t = recipe.train
        self.device = pick_device(t.device)
        init_distributed(self.device)
        self.amp = autocast_dtype(t.precision, self.device)
        torch.manual_seed(t.seed)  # identical initial weights on every rank
        self.tok = Tokenizer(recipe.tokenizer).to(self.device)
        params = [p for p in self.tok.parameters() if p.requires_grad]
        betas = tuple(t.betas)
        self.opt = (
            torch.optim.AdamW(params, t.lr, betas, weight_decay=t.weight_decay) if params else None
        )
        lc = recipe.loss
        self.lpips = (
            load_perceptual(lc.perceptual_weights).to(self.device)
            if lc.perceptual_weight > 0
            else None
        )
        self.disc = self.dopt = None
        if lc.gan_weight > 0:
            self.disc = PatchDiscriminator(lc.disc_channels, lc.disc_layers).to(self.device)
            self.dopt = torch.optim.AdamW(
                self.disc.parameters(), t.lr, betas, weight_decay=t.weight_decay
            )
        self.ema = copy.deepcopy(self.tok).requires_grad_(False) if t.ema else None
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        vocab = self.tok.vocab_size
        self.usage_run = CodebookUsage(vocab)
        self.usage_recent = CodebookUsage(vocab, window=50)
        self.step, self.position = 0, StreamPosition()
        if resume:
            self._resume()
        elif (out / "state.json").exists():
            raise RunError(
                f"{out} already holds a run; pass --resume to continue it or pick a new --out"
            )
        self.model = self.tok
        if world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.tok, device_ids=ids, broadcast_buffers=False
            )
            if self.disc is not None:
                self.disc = torch.nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)

    # -- state -------------------------------------------------------------------------
    def _resume(self) -> None:
        try:
            tensors, info = load_state(self.out)
        except (FileNotFoundError, ValueError) as exc:
            raise RunError(str(exc)) from exc
        self.tok.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.opt:
            load_optimizer(self.opt, tensors, info["opt_groups"], "opt")
        if self.disc is not None and "disc_groups" in info:
            self.disc.load_state_dict(
                {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
            )
            load_optimizer(self.dopt, tensors, info["disc_groups"], "dopt")
        if self.ema is not None:
            self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        self.usage_run.load_state_dict({"counts": tensors["usage.counts"]})
        self.step = info["step"]
        self.position = StreamPosition(**info["position"])
        log.info("resumed %s at step %d", self.out, self.step)

    def save(self, tracker: PositionTracker) -> None:
        if rank() != 0:
            return
        final = self.ema or self.tok
        meta = {
            "vqtool.train.step": str(self.step),
            "vqtool.recipe": json.dumps(self.recipe.source),
        }
        final.save(self.out / CHECKPOINT, meta, {"usage.counts": self.usage_run.counts})
        tensors = {f"model.{k}": v.detach().cpu() for k, v in self.tok.state_dict().items()}
        tensors["usage.counts"] = self.usage_run.counts
        info = {"position": tracker.position().__dict__}
        if self.opt:
            t, info["opt_groups"] = optimizer_tensors(self.opt, "opt")
            tensors.update(t)
        if self.disc is not None:
            disc = getattr(self.disc, "module", self.disc)
            tensors.update({f"disc.{k}": v.detach().cpu() for k, v in disc.state_dict().items()})
            t, info["disc_groups"] = optimizer_tensors(self.dopt, "dopt")
            tensors.update(t)
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.detach().cpu() for k, v in self.ema.state_dict().items()})
        save_state(self.out, self.step, tensors, info)
        self.callback(TrainEvent("checkpoint", self.step, self.recipe.train.steps))

    # -- one optimizer step ----------------------------------------------------------------
    def train_step(self, batches: list) -> dict:
        r, lc = self.recipe, self.recipe.loss
        lr = lr_at(self.step, r)
        for opt in (self.opt, self.dopt):
            for group in opt.param_groups if opt else []:
                group["lr"] = lr
        gan_on = self.disc is not None and self.step >= lc.gan_start
        logs: dict[str, float] = {}
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or world_size() == 1 else self.model.no_sync()
            with sync:
                x = self.tok.normalize(batch.images.to(self.device, non_blocking=True))
                with torch.autocast(
                    self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
                ):
                    out = self.model(x)
                    rec = reconstruction_loss(
                        lc.reconstruction, out.output, x, r.tokenizer.pixel_range
                    )
                    pred = (
                        out.output
                        if r.tokenizer.output == "rgb"
                        else self.tok.to_unit(out.output) * 2 - 1
                    )
                    loss = rec + out.loss
                    if self.lpips is not None:
                        loss = loss + lc.perceptual_weight * self.lpips(pred, x)
                    if gan_on:
                        g = generator_loss(lc.gan_loss, self.disc(pred))
                        w = torch.ones(())
                        if lc.adaptive_weight and self.tok.net.last_layer is not None:
                            w = adaptive_weight(loss, g, self.tok.net.last_layer)
                        loss = loss + lc.gan_weight * w * g
                        logs["gan_weight"] = float(w)
                if self.opt:
                    self.scaler.scale(loss / len(batches)).backward()
            if gan_on:
                self._disc_step(x, pred.detach())
            for codes in out.codes:
                self.usage_run.update(codes)
                self.usage_recent.update(codes)
            logs.update(
                loss=loss.item(), rec=rec.item(), quant=float(out.loss.detach()), **out.metrics
            )
            with torch.no_grad():
                logs["psnr"] = float(
                    psnr(
                        self.tok.to_unit(out.output),
                        (x + 1) / 2 if r.tokenizer.pixel_range == "-1,1" else x,
                    ).mean()
                )
        if self.opt:
            self.scaler.unscale_(self.opt)
            if r.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(
                    self.opt.param_groups[0]["params"], r.train.grad_clip
                )
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self._ema_update(r.train.ema)
        for q in self.tok.net.quantizers:
            q.anneal(self.step)
        self.step += 1
        logs["lr"] = lr
        return logs

    def _disc_step(self, real, fake) -> None:
        with torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
        ):
            d_loss = discriminator_loss(self.recipe.loss.gan_loss, self.disc(real), self.disc(fake))
        self.dopt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.dopt.step()

    @torch.no_grad()
    def _ema_update(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.tok.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.tok.buffers()):
            e.copy_(b)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, shards) -> dict:
        model = self.ema or self.tok
        e, size = self.recipe.eval, self.recipe.tokenizer.image_size
        was_training = model.training
        model.eval()
        usage = CodebookUsage(model.vocab_size)
        scores: dict[str, list] = {"psnr": [], "ssim": []}
        loader = make_loader(ImageStream(shards, size, train=False), e.batch_size, workers=0)
        seen = 0
        for batch in loader:
            if seen >= e.images:
                break
            images = batch.images[: e.images - seen]
            if not len(images):
                continue
            x = model.normalize(images.to(self.device))
            with torch.autocast(
                self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
            ):
                out = model(x)
            target = images.to(self.device).float() / 255
            recon = model.to_unit(out.output)
            scores["psnr"].append(psnr(recon, target).cpu())
            scores["ssim"].append(ssim(recon, target).cpu())
            for codes in out.codes:
                usage.update(codes)
            seen += len(images)
        model.train(was_training)
        if not seen:
            raise RunError("--eval-data yielded no decodable images")
        stats = usage.stats()
        return {
            "images": seen,
            "psnr": float(torch.cat(scores["psnr"]).mean()),
            "ssim": float(torch.cat(scores["ssim"]).mean()),
            "used_share": stats.used_share,
            "perplexity": stats.perplexity,
            "entropy_bits": stats.entropy_bits,
        }


def train_tokenizer(
    recipe: Recipe,
    data: list[str],
    out: str | Path,
    eval_data: list[str] | None = None,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train `recipe` on the images of `data`, writing the run to `out`."""
    out = Path(out)
    shards = expand_sources(data)
    eval_shards = expand_sources(eval_data) if eval_data else None
    out.mkdir(parents=True, exist_ok=True)
    tr = _Trainer(recipe, out, resume, callback)
    r = recipe
    total, start = r.train.steps, tr.step
    stream = ImageStream(
        shards,
        r.tokenizer.image_size,
        train=True,
        seed=r.train.seed + 1000 * rank(),
        start=tr.position,
        shuffle_buffer=r.data.shuffle_buffer,
        crop_scale=tuple(r.data.crop_scale),
    )
    loader = make_loader(
        stream, r.data.batch_size, r.data.workers, pin_memory=tr.device.type == "cuda"
    )
    tracker = PositionTracker(tr.position)
    (out / "recipe.json").write_text(json.dumps(r.source, indent=1))
    metrics_file = (out / "metrics.jsonl").open("a")
    tr.callback(TrainEvent("start", start, total, {"device": str(tr.device)}))
    images = skipped = 0
    skip_examples: list = []
    logs: dict = {}
    last_eval = None
    t0 = time.perf_counter()
    batches = iter(loader)
    try:
        while tr.step < total:
            group = []
            while len(group) < r.train.grad_accum:
                batch = next(batches)
                tracker.update(batch.positions)
                skipped += len(batch.errors)
                skip_examples += batch.errors[: max(0, 5 - len(skip_examples))]
                if len(batch.images):
                    group.append(batch)
            images += sum(len(b.images) for b in group)
            logs = tr.train_step(group)
            step = tr.step
            if step % r.train.log_every == 0 or step == total:
                elapsed = time.perf_counter() - t0
                stats = tr.usage_recent.stats()
                logs.update(
                    images_per_s=images / elapsed, used_share=stats.used_share, skipped=skipped
                )
                metrics_file.write(json.dumps({"step": step, "kind": "train", **logs}) + "\n")
                metrics_file.flush()
                tr.callback(TrainEvent("log", step, total, logs))
            if (
                eval_shards
                and rank() == 0
                and (step == total or (r.eval.every and step % r.eval.every == 0))
            ):
                last_eval = tr.evaluate(eval_shards)
                metrics_file.write(json.dumps({"step": step, "kind": "eval", **last_eval}) + "\n")
                metrics_file.flush()
                tr.callback(TrainEvent("eval", step, total, last_eval))
            if step % r.train.checkpoint_every == 0 or step == total:
                tr.save(tracker)
    finally:
        metrics_file.close()
    if start == total and not (out / CHECKPOINT).exists():
        tr.save(tracker)
    return TrainResult(
        run=str(out),
        checkpoint=str(out / CHECKPOINT),
        start_step=start,
        steps=tr.step,
        images=images,
        skipped=skipped,
        skip_examples=[list(e) for e in skip_examples],
        wall_s=time.perf_counter() - t0,
        train=logs,
        eval=last_eval,
        device=str(tr.device),
        tokenizer=tr.ema or tr.tok,
    )
