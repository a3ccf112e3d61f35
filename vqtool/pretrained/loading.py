"""Reading foreign checkpoint files without executing code.

- `.safetensors`: read directly.
- Pickled files (`.pt`, `.pth`, `.ckpt`, `.bin`): `torch.load(weights_only=True)`.
  When a file also holds non-tensor objects that the safe unpickler refuses
  (a Lightning callback, an argparse Namespace), they are rebuilt as inert
  placeholder objects (our own empty class; no code from the file runs), only
  the tensors are kept, and the caller is told what was ignored.
- TorchScript archives (`.jit`: Cosmos' `encoder.jit` / `decoder.jit`): their tensors,
  unpickled with an allow-list by `pretrained.torchscript` (the archive's code never
  runs). A folder holding a release's `encoder.jit` and `decoder.jit` reads those two (not
  its `autoencoder.jit`, which repeats them).
- Pickled `nn.Module`s (DALL-E's `encoder.pkl`) are refused with the reason: they cannot
  be read without running their code.
- A folder or a sharded checkpoint's `*.index.json` (a whole multimodal LM such as
  Janus-Pro): only the shards holding tokenizer weights are opened, and only the
  tokenizer's tensors are read from them (safetensors lazily, pickles memory-mapped).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vqtool.checkpoints import read_safetensors
from vqtool.errors import CheckpointError
from vqtool.pretrained.families import TOKENIZER_PARTS, WEIGHT_ROOTS
from vqtool.pretrained.torchscript import is_torchscript, read_torchscript

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".jit")


def tokenizer_weight(name: str) -> bool:
    """Whether a tensor's name is a tokenizer weight in some family's layout (the rest of
    a multimodal LM's file is never read)."""
    return any(name.startswith(r + p) for r in WEIGHT_ROOTS for p in (*TOKENIZER_PARTS, "loss."))


@dataclass
class ForeignFile:
    tensors: dict[str, torch.Tensor]  # every tensor, by dotted path inside the file
    notes: list[str] = field(default_factory=list)  # what was ignored, in words
    files: list[Path] = field(default_factory=list)  # the shards read, for a sharded model


class _Inert:
    """Stands in for a non-tensor object found in a pickle; holds nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def read_foreign(path: str | Path) -> ForeignFile:
    path = Path(path)
    if path.is_dir() or path.name.endswith(".index.json"):
        return _read_shards(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        found = read_safetensors(path, tokenizer_weight)[1]
        # a file without any tokenizer-like name is read whole, for detection to name it
        return ForeignFile(found or read_safetensors(path, lambda _: _small(path))[1])
    if path.suffix in (".pkl", ".pickle"):
        raise CheckpointError(
            f"{path}: a pickled Python module (such as DALL-E's encoder.pkl) can only be read by "
            "running its code, which vqtool never does; export its state_dict with "
            "torch.save(model.state_dict(), 'weights.pt') in an environment you trust"
        )
    if is_torchscript(path):
        return ForeignFile(read_torchscript(path))
    return _read_pickle(path)


def _small(path: Path) -> bool:
    return path.stat().st_size < 1 << 30


def _read_shards(path: Path) -> ForeignFile:
    """The tokenizer tensors of a sharded checkpoint: the shards its index names for
    them, or (a folder without an index) every checkpoint file in the folder."""
    folder = path if path.is_dir() else path.parent
    indexes = [path] if path.is_file() else sorted(folder.glob("*.index.json"))
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{indexes[0]}: not a checkpoint index ({exc})") from exc
        files = sorted({f for name, f in weight_map.items() if tokenizer_weight(name)})
        shards = [folder / f for f in files]
    else:
        shards = _weight_files(folder)
        if not shards:  # taming's release folders: checkpoints/last.ckpt beside configs/
            shards = [f for sub in sorted(folder.iterdir()) if sub.is_dir()
                      for f in _weight_files(sub)]  # fmt: skip
        if {"encoder.jit", "decoder.jit"} <= {p.name for p in shards}:  # a Cosmos release
            shards = sorted((p for p in shards if p.name in ("encoder.jit", "decoder.jit")),
                            key=lambda p: p.name != "encoder.jit")  # fmt: skip
    if not shards:
        raise CheckpointError(f"{path}: no checkpoint file holds tokenizer weights")
    merged = ForeignFile({})
    for shard in shards:
        one = read_foreign(shard)
        if not any(tokenizer_weight(k) for k in one.tensors):
            continue  # another part of the model (the index-less folder case)
        again = sorted(set(one.tensors) & set(merged.tensors))
        if again:  # two whole tokenizers (MoVQGAN's 67M / 102M / 270M), not shards of one
            files = ", ".join(p.name for p in (*merged.files, shard))
            raise CheckpointError(
                f"{path}: holds more than one tokenizer ({files} each hold e.g. {again[0]}); "
                "name the file to use"
            )
        merged.tensors.update(one.tensors)
        merged.notes += one.notes
        merged.files.append(shard)
    if not merged.tensors:
        raise CheckpointError(f"{path}: no file in it holds tokenizer weights")
    return merged


def _weight_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and _may_hold_tokenizer(p)
    )  # fmt: skip


def _may_hold_tokenizer(path: Path) -> bool:
    """A safetensors file's names are read without its tensors; other files may."""
    if path.suffix != ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return any(map(tokenizer_weight, f.keys()))
    except Exception:  # unreadable: reading it reports why
        return True


def _is_text(path: Path) -> bool:
    """Whether a file starts as UTF-8 text (a config, notes, a YAML) rather than bytes."""
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(text) >= 16 and all(c.isprintable() or c in "\n\r\t" for c in text)


def _read_pickle(path: Path) -> ForeignFile:
    notes: list[str] = []
    try:
        obj = _torch_load(path)
    except Exception as exc:  # the safe unpickler refused, or the file is not a checkpoint
        names = _unsafe_globals(path)
        if not names:
            if _is_text(path):
                raise CheckpointError(
                    f"{path}: a text file, not a checkpoint; name the tokenizer's weights "
                    "(.safetensors, .pt, .ckpt, .bin)"
                ) from exc
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})"
            ) from exc
        stubs = [(type(n.rsplit(".", 1)[-1], (_Inert,), {}), n) for n in names]
        try:
            with torch.serialization.safe_globals(stubs):
                obj = _torch_load(path)
        except Exception as exc2:
            raise CheckpointError(
                f"{path}: holds objects {', '.join(names)} that cannot be read without running "
                f"code ({_first_line(exc2)}); re-save only its tensors (its state_dict) with "
                "torch.save or safetensors in an environment you trust"
            ) from exc2
        notes.append(f"ignored non-tensor objects in the file: {', '.join(names)}")
    tensors: dict[str, torch.Tensor] = {}
    _collect(obj, "", tensors)
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    kept = {k: v for k, v in tensors.items() if tokenizer_weight(k)}
    return ForeignFile(kept or tensors, notes)


def _torch_load(path: Path):
    """A pickle read safely; zip-format files memory-mapped, so that a multi-GB LM file
    costs only the tensors kept."""
    mmap = zipfile.is_zipfile(path)
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)


def _unsafe_globals(path: Path) -> list[str]:
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return []
    try:
        return sorted(finder(str(path)))
    except Exception:
        return []


def _collect(obj, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Flatten nested dicts/lists of tensors to dotted names."""
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _collect(v, f"{prefix}{k}.", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _collect(v, f"{prefix}{i}.", out)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
