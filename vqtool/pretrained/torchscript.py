"""The tensors of a TorchScript archive (`encoder.jit`, `decoder.jit`: NVIDIA's Cosmos
tokenizers), read without running anything from the file.

A TorchScript archive is a zip: `code/` (the model's TorchScript source, which
`torch.jit.load` compiles and runs; never read here), `data.pkl` (the module tree: each
module a `__torch__.*` object whose attributes are its submodules, parameters and
buffers) and `data/N` (the raw bytes of each tensor storage). `torch.load` hands such a
file to `torch.jit.load`, so it cannot be used. This reader runs torch's own weights-only
unpickler on `data.pkl`: module classes are allowed as inert stand-ins that only hold their
attributes, TorchScript's list builders as plain lists, tensors come from the storage
bytes, and any other global refuses the file in one line.

    tensors = read_torchscript("Cosmos-1.0-Tokenizer-DV8x16x16/encoder.jit")
    tensors["encoder.conv_in.0.conv3d.weight"].shape
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import _weights_only_unpickler as weights_only

from vqtool.errors import CheckpointError


class ScriptObject:
    """A module of the archive: its attributes, nothing else (no method runs)."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


def _as_list(*args):
    return list(args[0]) if len(args) == 1 else list(args)


#: TorchScript's own pickle helpers, as what they build
_HELPERS = {
    **{f"torch.jit._pickle.build_{k}list": _as_list
       for k in ("int", "double", "bool", "tensor", "generic", "float")},
    "torch.jit._pickle.restore_type_tag": lambda value, _tag: value,
}  # fmt: skip


def _allowed(data: bytes, path: Path) -> list[tuple]:
    """Every global `data.pkl` names, as (object, name) for torch's safe_globals: module
    classes as inert stand-ins, the helpers as theirs; any other global is refused."""
    allowed = []
    for name in sorted(weights_only.get_globals_in_pkl(io.BytesIO(data))):
        if name.startswith("__torch__."):
            stand_in = type(name.rsplit(".", 1)[-1], (ScriptObject,), {"script_class": name})
            allowed.append((stand_in, name))
        elif name in _HELPERS:
            allowed.append((_HELPERS[name], name))
    return allowed


def _unpickle(data: bytes, archive: zipfile.ZipFile, root: str, path: Path):
    storages: dict[str, torch.Tensor] = {}

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"{path}: unknown TorchScript storage record {pid!r:.60}")
        kind, key = pid[1], str(pid[2])
        dtype = getattr(kind, "dtype", kind)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{path}: storage {key} of unknown type {kind!r:.60}")
        if key not in storages:
            raw = bytearray(archive.read(f"{root}/data/{key}"))
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            storages[key] = flat.untyped_storage()
        return torch.storage.TypedStorage(wrap_storage=storages[key], dtype=dtype, _internal=True)

    unpickler = weights_only.Unpickler(io.BytesIO(data), encoding="utf-8")
    unpickler.persistent_load = persistent_load
    with torch.serialization.safe_globals(_allowed(data, path)):
        try:
            return unpickler.load()
        except weights_only.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: the TorchScript archive's data holds what vqtool does not read (it "
                f"never runs code from a file): {str(exc).splitlines()[0][:160]}; export the "
                "module's tensors with torch.jit.load(p).state_dict() in an environment you "
                "trust"
            ) from exc


def is_torchscript(path: Path) -> bool:
    if not path.is_file() or not zipfile.is_zipfile(path):
        return path.suffix == ".jit"
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())


def read_torchscript(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the archive's module tree, by dotted attribute path (the names of
    the module's state_dict, non-persistent buffers included)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({exc})") from exc
    with archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not names:
            raise CheckpointError(f"{path}: a zip without a TorchScript data.pkl")
        root = names[0].split("/", 1)[0]
        try:
            module = _unpickle(archive.read(names[0]), archive, root, path)
        except CheckpointError:
            raise
        except Exception as exc:  # a truncated or foreign pickle
            raise CheckpointError(f"{path}: unreadable TorchScript data ({exc})") from exc
    tensors: dict[str, torch.Tensor] = {}
    _collect(module, "", tensors, set())
    if not tensors:
        raise CheckpointError(f"{path}: the TorchScript archive holds no tensors")
    return tensors


def _collect(obj, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj.clone()  # off the archive's shared storage
    elif isinstance(obj, ScriptObject) and id(obj) not in seen:
        seen.add(id(obj))
        for k, v in vars(obj).items():
            if k != "script_class":
                _collect(v, f"{prefix}{k}.", out, seen)
