"""Recipes: TOML files that map one-to-one onto typed config dataclasses.

    task = "tokenizer"
    [model]      architecture = "conv", channels = 64, ...
    [quantizer]  kind = "vq", codebook_size = 1024, ...
    [loss]       reconstruction = "l1", gan_weight = 0.1, ...
    [data]       image_size = 64, batch_size = 16, ...
    [train]      steps = 2000, lr = 2e-4, ...
    [eval]       every = 500, images = 64

`--set quantizer.codebook_size=4096` overrides any key; values are parsed as
TOML (`--set train.betas=[0.5,0.9]`), bare words as strings. Unknown keys and
bad values fail at load time with the dotted key in the message.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vqtool.assets import RECIPES, list_recipes, recipe_path, recommended_recipes  # noqa: F401
from vqtool.errors import ConfigError
from vqtool.models.tokenizer import TokenizerConfig
from vqtool.utils import Precision, config_from_dict, parse_override

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class LossConfig:
    reconstruction: Literal["l1", "l2", "logit_laplace"] = "l1"
    ssim_weight: float = 0.0  # adds ssim_weight * (1 - SSIM) (Zhao et al. 2017): sharper edges
    perceptual_weight: float = 0.0  # LPIPS-style term; needs perceptual_weights
    perceptual_weights: list[str] = field(default_factory=list)  # VGG-16 + LPIPS weight files
    gan_weight: float = 0.0  # 0 = no discriminator
    gan_start: int = 0  # step at which the discriminator switches on
    gan_loss: Literal["hinge", "non_saturating"] = "hinge"
    adaptive_weight: bool = True  # VQGAN's |grad rec| / |grad gan| balance at the last layer
    discriminator: Literal["patchgan", "stylegan"] = "patchgan"  # stylegan: ViT-VQGAN's
    disc_channels: int = 64
    disc_layers: int = 3  # PatchGAN depth (StyleGAN halves down to 4x4)


@dataclass
class DataConfig:
    image_size: int = 64  # training crop size (the tokenizer's resolution)
    batch_size: int = 16
    workers: int = 2  # DataLoader worker processes (decoding)
    # What a training crop is. "short_side": each photo resized (bicubic) so its short side
    # is `short_side` pixels (0 = image_size, exactly what encode feeds the tokenizer), then
    # a random image_size x image_size crop + flip. "random_resized": a random crop covering
    # `crop_scale` of the photo's area (aspect 3:4-4:3), resized to image_size + flip.
    crop: Literal["short_side", "random_resized"] = "short_side"
    short_side: int = 0
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # random_resized only
    # Decode the training photos once, resized for the crops, and keep them in memory when
    # they fit in this many MiB (0 = always stream, decoding every photo every time).
    cache_mb: int = 2048
    shuffle_buffer: int = 64  # samples shuffled within a stream (when not cached)

    def crop_short_side(self) -> int:
        """The short side photos are resized to for fixed-size crops; 0 for random-resized."""
        return (self.short_side or self.image_size) if self.crop == "short_side" else 0


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 2e-4  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    warmup: int = 100  # linear warmup steps, then cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step
    ema: float | None = None  # decay of an EMA of the weights (saved as the checkpoint)
    precision: Precision = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"  # auto: CUDA when present
    # torch CPU threads; 0 = the usable cores less the DataLoader workers that decode while
    # the model runs (too many threads spin-wait on a loaded machine)
    threads: int = 0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500

    def __post_init__(self):
        checks = [
            (self.lr > 0, f"train.lr must be positive, got {self.lr}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
             f"train.betas must be two numbers in [0, 1), got {self.betas}"),
            (self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup >= 0, f"train.warmup must be >= 0, got {self.warmup}"),
            (0 <= self.min_lr_ratio <= 1,
             f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}"),
            (self.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (self.ema is None or 0 < self.ema < 1, f"train.ema must lie in (0, 1), got {self.ema}"),
            (self.log_every >= 1 and self.checkpoint_every >= 1,
             "train.log_every and train.checkpoint_every must be >= 1"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class EvalConfig:
    every: int = 500  # steps between evaluations on --eval-data (0 = only at the end)
    images: int = 64  # held-out images per evaluation
    batch_size: int = 16


@dataclass
class Recipe:
    tokenizer: TokenizerConfig
    loss: LossConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    task: Literal["tokenizer"] = "tokenizer"
    source: dict = field(default_factory=dict)  # the merged TOML, for the run folder


def check_tables(data: dict, known: set[str], what: str) -> None:
    """Refuse a top-level table or key a recipe of this kind does not have."""
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown table or key {unknown[0]!r}; {what} have task and "
            f"[{'], ['.join(sorted(known))}]"
        )


def recipe_from_dict(data: dict) -> Recipe:
    """A tokenizer recipe (`task = "tokenizer"`, the default) from its merged TOML."""
    data = dict(data)
    task = data.pop("task", "tokenizer")
    if task == "prior":
        raise ConfigError("task = 'prior': read prior recipes with vqtool.priors.recipe")
    if task != "tokenizer":
        raise ConfigError(f"task: {task!r} is not one of 'tokenizer', 'prior'")
    check_tables(data, {"model", "quantizer", "loss", "data", "train", "eval"}, "recipes")
    dcfg = config_from_dict(DataConfig, data.get("data", {}), "data.")
    loss = config_from_dict(LossConfig, data.get("loss", {}), "loss.")
    tok = TokenizerConfig.from_dict(
        {
            "model": data.get("model", {}),
            "quantizer": data.get("quantizer", {}),
            "image_size": dcfg.image_size,
            "output": "logit_laplace" if loss.reconstruction == "logit_laplace" else "rgb",
        }
    )
    train = config_from_dict(TrainConfig, data.get("train", {}), "train.")
    evalc = config_from_dict(EvalConfig, data.get("eval", {}), "eval.")
    if loss.perceptual_weight > 0 and not loss.perceptual_weights:
        raise ConfigError(
            "loss.perceptual_weight > 0 needs loss.perceptual_weights: the VGG-16 + LPIPS weight "
            "file(s) to load (nothing is downloaded)"
        )
    if train.grad_accum < 1 or train.steps < 1 or dcfg.batch_size < 1:
        raise ConfigError("train.steps, train.grad_accum and data.batch_size must be >= 1")
    if dcfg.short_side and dcfg.short_side < dcfg.image_size:
        raise ConfigError(
            f"data.short_side {dcfg.short_side} is below data.image_size {dcfg.image_size}; "
            "use 0 (= image_size) or a larger value"
        )
    scale = dcfg.crop_scale
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"data.crop_scale {dcfg.crop_scale}: expected [low, high] in (0, 1]")
    if train.threads < 0 or dcfg.cache_mb < 0 or dcfg.workers < 0:
        raise ConfigError("train.threads, data.cache_mb and data.workers must be >= 0")
    return Recipe(tokenizer=tok, loss=loss, data=dcfg, train=train, eval=evalc, task=task,
                  source={"task": task, **data})  # fmt: skip


def recipe_tokens(name: str) -> tuple[int, float] | None:
    """A tokenizer recipe's tokens and bits per image (its model built on the meta
    device); None for a prior recipe (its token layout comes from its data)."""
    import math

    import torch

    from vqtool.models.tokenizer import Tokenizer

    data = read_recipe(recipe_path(name))
    if data.get("task", "tokenizer") != "tokenizer":
        return None
    with torch.device("meta"):
        layout = Tokenizer(recipe_from_dict(data).tokenizer).layout
    return layout.tokens_per_image, layout.tokens_per_image * math.log2(layout.vocab_size)


def read_recipe(
    path: str | Path, overrides: list[str] | None = None, settings: dict | None = None
) -> dict:
    """A recipe file's (or shipped recipe's) TOML with `--set KEY=VALUE` overrides (TOML
    values) and then `settings` ({"train.steps": 5}: Python values from typed options)."""
    path = recipe_path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    items = [(*parse_override(item), f"--set {item}") for item in overrides or []]
    items += [(key.split("."), value, key) for key, value in (settings or {}).items()]
    for keys, value, what in items:
        table = data
        for k in keys[:-1]:
            table = table.setdefault(k, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{what}: {k} is not a table")
        table[keys[-1]] = value
    return data


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, settings: dict | None = None
) -> Recipe:
    """A tokenizer recipe file, checked (see `read_recipe` for the overrides)."""
    return recipe_from_dict(read_recipe(path, overrides, settings))
