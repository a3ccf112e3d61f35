"""Training a tokenizer: reconstruction + quantizer losses, optional GAN
(PatchGAN, adaptive weight) and perceptual terms, codebook usage tracking,
and PSNR/SSIM/usage evaluation on held-out images. The loop is `training.loop`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from vqtool.data import ImageStream, StreamPosition, expand_sources, make_loader
from vqtool.data.cache import cache_photos, cache_side, cached_batches
from vqtool.errors import RunError
from vqtool.losses.gan import (
    adaptive_weight,
    build_discriminator,
    discriminator_loss,
    generator_loss,
)
from vqtool.losses.perceptual import load_perceptual
from vqtool.losses.reconstruction import reconstruction_loss
from vqtool.metrics import CodebookUsage, psnr, ssim
from vqtool.models.tokenizer import Tokenizer
from vqtool.runtime import rank, set_cpu_threads, world_size
from vqtool.training.loop import StepBatch, TrainEvent, TrainResult, TrainTask, run_training
from vqtool.training.recipe import Recipe
from vqtool.training.state import load_optimizer, optimizer_tensors

CHECKPOINT = "tokenizer.safetensors"
log = logging.getLogger("vqtool.train")


def no_images_message(shards, errors: list[tuple[str, str]]) -> str:
    names = ", ".join(sh.name for sh in shards[:3]) + (" ..." if len(shards) > 3 else "")
    why = f"; e.g. {errors[0][0]}: {errors[0][1]}" if errors else " (no image files at all)"
    if any(sh.kind == "folder" and (Path(sh.path) / "encode.json").exists() for sh in shards):
        why += "; it holds token shards, which a prior recipe (task = 'prior') trains on"
    return f"--data {names}: no decodable image in a whole pass over the data{why}"


class TokenizerTask(TrainTask):
    kind = "tokenizer"
    checkpoint = CHECKPOINT

    def __init__(self, recipe: Recipe, shards, eval_shards):
        self.recipe, self.shards, self.eval_shards = recipe, shards, eval_shards
        self.has_eval = bool(eval_shards)
        torch.manual_seed(recipe.train.seed)  # identical initial weights on every rank
        self.model = Tokenizer(recipe.tokenizer)
        vocab = self.model.vocab_size
        self.usage_run = CodebookUsage(vocab)
        self.usage_recent = CodebookUsage(vocab, window=50)
        self.disc = self.dopt = self.lpips = None
        self._pending = None  # (real, fake) for the discriminator step after backward
        self._disc_loss: float | None = None

    def setup(self, device, amp, train) -> None:
        super().setup(device, amp, train)
        self.model.to(device)
        lc = self.recipe.loss
        if lc.perceptual_weight > 0:
            self.lpips = load_perceptual(lc.perceptual_weights).to(device)
        if lc.gan_weight > 0:
            self.disc = build_discriminator(
                lc.discriminator, lc.disc_channels, lc.disc_layers, self.recipe.tokenizer.image_size
            ).to(device)
            self.dopt = torch.optim.AdamW(
                self.disc.parameters(),
                train.lr,
                tuple(train.betas),
                weight_decay=train.weight_decay,
            )
            if world_size() > 1:
                ids = [device.index] if device.type == "cuda" else None
                self.disc = torch.nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)

    # -- data ------------------------------------------------------------------------------
    def busy_workers(self) -> int:
        # with the photos cached, the workers only decode before the first step
        return 0 if self.recipe.data.cache_mb else self.recipe.data.workers

    def batches(self, position: StreamPosition) -> Iterator[StepBatch]:
        r, d = self.recipe, self.recipe.data
        short = d.crop_short_side()
        seed = r.train.seed + 1000 * rank()
        if d.cache_mb:
            side = cache_side(r.tokenizer.image_size, short, tuple(d.crop_scale))

            def caching(photos: int, nbytes: int, done: bool) -> None:
                info = {"photos": photos, "mib": nbytes / 2**20, "done": done}
                self.events(TrainEvent("caching", 0, r.train.steps, info))

            cache = cache_photos(self.shards, side, d.cache_mb << 20, d.workers,
                                 progress=caching)  # fmt: skip
            if cache is not None and not cache.photos:
                raise RunError(no_images_message(self.shards, cache.errors))
            if cache is not None:
                log.info(
                    "training photos cached: %d, %.1f MiB", len(cache.photos), cache.nbytes / 2**20
                )
                errors = list(cache.errors)
                # the batch index continues from the saved position (see data.cache)
                for batch in cached_batches(
                    cache,
                    r.tokenizer.image_size,
                    d.batch_size,
                    seed,
                    position.epoch,
                    short,
                    tuple(d.crop_scale),
                ):
                    yield StepBatch(batch.images, len(batch.images), errors, batch.positions)
                    errors = []
                return
            log.info("training photos exceed data.cache_mb=%d; streaming them", d.cache_mb)
            if self.device.type == "cpu":
                set_cpu_threads(r.train.threads, d.workers)
        stream = ImageStream(
            self.shards,
            r.tokenizer.image_size,
            train=True,
            seed=seed,
            start=position,
            shuffle_buffer=d.shuffle_buffer,
            crop_scale=tuple(d.crop_scale),
            short_side=short,
        )
        loader = make_loader(stream, d.batch_size, d.workers, pin_memory=self.device.type == "cuda")
        seen: list[tuple[str, str]] = []
        for batch in loader:
            seen = (seen + batch.errors)[:3]
            yield StepBatch(batch.images, len(batch.images), batch.errors, batch.positions)
        raise RunError(no_images_message(self.shards, seen))

    # -- one micro-batch ---------------------------------------------------------------------
    def loss(self, model, batch: StepBatch, step: int):
        r, lc, tok = self.recipe, self.recipe.loss, self.model
        x = tok.normalize(batch.data.to(self.device, non_blocking=True))
        out = model(x)
        rec = reconstruction_loss(lc.reconstruction, out.output, x, r.tokenizer.pixel_range)
        pred = out.output if r.tokenizer.output == "rgb" else tok.to_unit(out.output) * 2 - 1
        loss = rec + out.loss
        logs: dict[str, float] = {}
        target = (x + 1) / 2 if r.tokenizer.pixel_range == "-1,1" else x  # in [0, 1]
        if lc.ssim_weight > 0:
            # pred is in [-1, 1] for the logit-Laplace head, else in the pixel range
            signed = r.tokenizer.pixel_range == "-1,1" or r.tokenizer.output != "rgb"
            s = ssim((pred + 1) / 2 if signed else pred, target).mean()
            loss = loss + lc.ssim_weight * (1 - s)
            logs["ssim"] = float(s.detach())
        if self.lpips is not None:
            perceptual = self.lpips(pred, x)
            loss = loss + lc.perceptual_weight * perceptual
            logs["perceptual"] = float(perceptual.detach())
        gan_on = self.disc is not None and step >= lc.gan_start
        if gan_on:
            g = generator_loss(lc.gan_loss, self.disc(pred))
            w = torch.ones(())
            if lc.adaptive_weight and tok.net.last_layer is not None:
                w = adaptive_weight(loss, g, tok.net.last_layer)
            loss = loss + lc.gan_weight * w * g
            logs["gan_weight"] = float(w)
            self._pending = (x, pred.detach())
        for codes in out.codes:
            self.usage_run.update(codes)
            self.usage_recent.update(codes)
        logs.update(loss=loss.item(), rec=rec.item(), quant=float(out.loss.detach()), **out.metrics)
        if "used" not in logs:  # several levels: the mean of their batch shares
            shares = [v for k, v in out.metrics.items() if k.endswith("_used")]
            logs["used"] = sum(shares) / max(1, len(shares))
        if (step + 1) % self.train_cfg.log_every == 0 or step + 1 == self.train_cfg.steps:
            with torch.no_grad():  # only for the steps that are logged
                logs["psnr"] = float(psnr(tok.to_unit(out.output), target).mean())
        return loss, logs

    def after_backward(self, batch, step) -> None:
        if self._pending is None:
            return
        real, fake = self._pending
        self._pending = None
        with torch.autocast(
            self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
        ):
            d_loss = discriminator_loss(self.recipe.loss.gan_loss, self.disc(real), self.disc(fake))
        self.dopt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.dopt.step()
        self._disc_loss = float(d_loss.detach())

    def after_step(self, step: int) -> None:
        for q in self.model.net.quantizers:
            q.anneal(step)

    def log_extras(self) -> dict:
        # Collapse shows in the perplexity, not in the share of codes touched: restarts
        # re-seed unused codes every few steps, so nearly every code is touched once in a
        # window even when a handful carry the tokens. `used` (this batch's share of codes
        # used) comes with the quantizer's metrics.
        stats = self.usage_recent.stats()
        extras = {
            "window_used_share": stats.used_share,
            "window_perplexity": stats.perplexity,
            "effective_share": stats.perplexity / self.model.vocab_size,
        }
        if self._disc_loss is not None:
            extras["disc_loss"] = self._disc_loss
        return extras

    # -- evaluation -----------------------------------------------------------------------------
    def describe(self, kind: str, m: dict) -> str:
        if kind == "eval":
            return (
                f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, codes used "
                f"{m['used_share']:.1%}, perplexity {m['perplexity']:.0f} ({m['images']} images)"
            )
        return (
            f"loss {m['loss']:.3f} psnr {m['psnr']:.1f} codes: batch {m['used']:.0%} "
            f"effective {m['effective_share']:.0%} {m['images_per_s']:.1f} img/s"
        )

    def evaluate(self, model) -> dict | None:
        if not self.eval_shards:
            return None
        e, size = self.recipe.eval, self.recipe.tokenizer.image_size
        usage = CodebookUsage(model.vocab_size)
        scores: dict[str, list] = {"psnr": [], "ssim": []}
        loader = make_loader(ImageStream(self.eval_shards, size, train=False), e.batch_size, 0)
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

    # -- files ----------------------------------------------------------------------------------
    def save_checkpoint(self, model, path: Path, metadata) -> None:
        model.save(path, metadata, {"usage.counts": self.usage_run.counts})

    def state_tensors(self):
        tensors = {"usage.counts": self.usage_run.counts}
        info = {}
        if self.disc is not None:
            disc = getattr(self.disc, "module", self.disc)
            tensors.update({f"disc.{k}": v.detach().cpu() for k, v in disc.state_dict().items()})
            t, info["disc_groups"] = optimizer_tensors(self.dopt, "dopt")
            tensors.update(t)
        return tensors, info

    def load_state(self, tensors, info) -> None:
        self.usage_run.load_state_dict({"counts": tensors["usage.counts"]})
        if self.disc is not None and "disc_groups" in info:
            disc = getattr(self.disc, "module", self.disc)
            disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
            load_optimizer(self.dopt, tensors, info["disc_groups"], "dopt")


def train_tokenizer(
    recipe: Recipe,
    data: list[str],
    out: str | Path,
    eval_data: list[str] | None = None,
    resume: bool = False,
    callback: Callable[[TrainEvent], None] | None = None,
) -> TrainResult:
    """Train `recipe` on the images of `data`, writing the run to `out`."""
    shards = expand_sources(data)
    eval_shards = expand_sources(eval_data) if eval_data else None
    return run_training(TokenizerTask(recipe, shards, eval_shards), out, resume, callback)
