"""Training state for `--resume`, without pickle: tensors in
`RUN/state.safetensors`, everything else in `RUN/state.json`.

A save writes the new tensors to `state.next.safetensors`, then the JSON (the commit
point), then renames the tensors into place; a run killed between any two of these
steps leaves a JSON whose step one of the two tensor files holds, and loading takes
that one."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch

from vqtool.atomic import replacing
from vqtool.errors import RunError

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
STATE_NEXT = "state.next.safetensors"  # the tensors of a save not yet moved into place


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, list]:
    """Flatten an optimizer's state into named tensors plus JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{name}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list, prefix: str) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_state(run: Path, step: int, tensors: dict[str, torch.Tensor], info: dict) -> None:
    from safetensors.torch import save_file

    tensors = dict(tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with replacing(run / STATE_NEXT) as tmp:
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        save_file(tensors, str(tmp), metadata={"step": str(step)})
    info = {**info, "step": step, "python_rng": _py_rng()}
    with replacing(run / STATE_JSON) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    os.replace(run / STATE_NEXT, run / STATE_TENSORS)


def load_state(run: Path) -> tuple[dict[str, torch.Tensor], dict]:
    info_path = run / STATE_JSON
    if not info_path.is_file():
        raise RunError(f"{run}: no training state to resume ({STATE_JSON} missing)")
    info = json.loads(info_path.read_text())
    tensors = _tensors_at(run / STATE_TENSORS, info["step"])
    if tensors is None:  # killed after the JSON, before the final rename: finish it
        tensors = _tensors_at(run / STATE_NEXT, info["step"])
        if tensors is not None:
            os.replace(run / STATE_NEXT, run / STATE_TENSORS)
    if tensors is None:
        raise RunError(f"{run}: {STATE_TENSORS} and {STATE_JSON} disagree on the step")
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = info["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return tensors, info


def _py_rng() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _tensors_at(path: Path, step: int) -> dict[str, torch.Tensor] | None:
    """The tensors of `path` when the file holds `step`'s state, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        if (f.metadata() or {}).get("step") != str(step):
            return None
        return {k: f.get_tensor(k) for k in f.keys()}
