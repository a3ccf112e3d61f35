"""The training loop, recipes and resumable training state."""

from vqtool.training.loop import RunError, TrainEvent, TrainResult, train_tokenizer
from vqtool.training.recipe import Recipe, load_recipe, recipe_from_dict

__all__ = [
    "Recipe",
    "RunError",
    "TrainEvent",
    "TrainResult",
    "load_recipe",
    "recipe_from_dict",
    "train_tokenizer",
]
