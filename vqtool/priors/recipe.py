"""Prior recipes (`task = "prior"`): the prior's config, its token data, and the shared
training and evaluation tables; `load_recipe` reads either kind of recipe file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vqtool.errors import ConfigError
from vqtool.priors.models import PriorConfig
from vqtool.priors.text import TextConfig
from vqtool.training.recipe import (
    EvalConfig,
    Recipe,
    TrainConfig,
    check_tables,
    read_recipe,
    recipe_from_dict,
)
from vqtool.utils import config_from_dict


@dataclass
class TokenDataConfig:
    """Token rows for a prior: read from Parquet token shards."""

    batch_size: int = 32
    workers: int = 1  # DataLoader worker processes
    shuffle_buffer: int = 256  # rows shuffled within a stream
    # token rows kept in memory when they fit (then `--resume` continues with exactly the
    # batches an uninterrupted run draws); 0 = always stream them from the shards
    cache_mb: int = 1024


@dataclass
class PriorEvalConfig(EvalConfig):
    # hold this fraction of the --data rows out of training (chosen by a hash of each row's
    # key, so the split is the same on every run) and evaluate on them; 0: --eval-data only
    holdout: float = 0.0


@dataclass
class PriorRecipe:
    prior: PriorConfig
    data: TokenDataConfig
    train: TrainConfig
    eval: PriorEvalConfig
    text: TextConfig = field(default_factory=TextConfig)
    task: Literal["prior"] = "prior"
    source: dict = field(default_factory=dict)


def prior_recipe_from_dict(data: dict) -> PriorRecipe:
    data = {k: v for k, v in data.items() if k != "task"}
    check_tables(data, {"prior", "data", "train", "eval", "text"}, "prior recipes")
    prior = config_from_dict(PriorConfig, data.get("prior", {}), "prior.")
    for name in ("vocab_size", "tokens_per_image", "depth"):
        if name in data.get("prior", {}):
            raise ConfigError(
                f"prior.{name} is read from the token data; remove it from the recipe"
            )
    dcfg = config_from_dict(TokenDataConfig, data.get("data", {}), "data.")
    train = config_from_dict(TrainConfig, data.get("train", {}), "train.")
    evalc = config_from_dict(PriorEvalConfig, data.get("eval", {}), "eval.")
    if not 0 <= evalc.holdout < 1:
        raise ConfigError(f"eval.holdout must be in [0, 1), got {evalc.holdout}")
    text = config_from_dict(TextConfig, data.get("text", {}), "text.")
    if prior.has_text and not text.tokenizer:
        raise ConfigError(
            f"prior.kind {prior.kind!r} models captions: set text.tokenizer to a "
            "Hugging Face tokenizer.json (e.g. --set text.tokenizer=tokenizer.json)"
        )
    if text.tokenizer and not prior.has_text:
        raise ConfigError(f"text.tokenizer: prior.kind {prior.kind!r} does not use captions")
    if train.grad_accum < 1 or train.steps < 1 or dcfg.batch_size < 1:
        raise ConfigError("train.steps, train.grad_accum and data.batch_size must be >= 1")
    if dcfg.cache_mb < 0:
        raise ConfigError(f"data.cache_mb must be >= 0, got {dcfg.cache_mb}")
    return PriorRecipe(prior=prior, data=dcfg, train=train, eval=evalc, text=text, task="prior",
                       source={"task": "prior", **data})  # fmt: skip


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, settings: dict | None = None
) -> Recipe | PriorRecipe:
    """A tokenizer or prior recipe file, by its `task` (see `read_recipe` for the
    overrides)."""
    data = read_recipe(path, overrides, settings)
    if data.get("task") == "prior":
        return prior_recipe_from_dict(data)
    return recipe_from_dict(data)
