"""Reading a vqtool single-file checkpoint into a model: the format check, building a model
whose every weight then comes from a file without drawing random numbers first, and the
strict load that names what is missing or unexpected."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from vqtool.checkpoints import read_safetensors
from vqtool.errors import CheckpointError


def read_checkpoint(path: Path, fmt: str, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a vqtool single-file checkpoint of format `fmt`."""
    meta, tensors = read_safetensors(path)
    if meta.get("vqtool.format") != fmt:
        found = meta.get("vqtool.format", "no vqtool.format")
        raise CheckpointError(f"{path}: not a vqtool {what} checkpoint ({found})")
    return meta, tensors


#: torch.nn.init's in-place initializers (what modules call in reset_parameters)
_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
          "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
          "orthogonal_")  # fmt: skip


@contextmanager
def weights_to_load() -> Iterator[None]:
    """Modules built inside skip torch.nn.init's random initialization, for a model whose
    every weight is then loaded (strictly) from a file: a 455M-parameter tokenizer spent
    seconds drawing numbers it threw away. Not thread-safe (torch.nn.init is patched for
    the duration); used while building a model only."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(torch.nn.init, name, _unchanged)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _unchanged(tensor, *args, **kwargs):
    return tensor


def check_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Load `weights` into `model` (the tensors themselves become its parameters: no second
    copy), refusing any missing or unexpected name."""
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match its config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
