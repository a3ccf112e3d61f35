"""The training loop, recipes and resumable training state."""

from vqtool.errors import RunError
from vqtool.training.loop import TrainEvent, TrainResult, TrainTask, run_training
from vqtool.training.recipe import Recipe, load_recipe, recipe_from_dict
from vqtool.training.tokenizer import train_tokenizer

__all__ = [
    "Recipe",
    "RunError",
    "TrainEvent",
    "TrainResult",
    "TrainTask",
    "load_recipe",
    "recipe_from_dict",
    "run_training",
    "train_tokenizer",
]
