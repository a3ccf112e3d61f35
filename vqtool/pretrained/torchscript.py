"""The tensors of a TorchScript archive (`encoder.jit`, `decoder.jit`: NVIDIA's Cosmos
tokenizers), read without running anything from the file.

A TorchScript archive is a zip: `code/` (the model's TorchScript source, which
`torch.jit.load` compiles and runs; never read here), `data.pkl` (the module tree: each
module a `__torch__.*` object whose attributes are its submodules, parameters and
buffers) and `data/N` (the raw bytes of each tensor storage). `torch.load` hands such a
file to `torch.jit.load`, so it cannot be used. This reader unpickles `data.pkl` with an
allow-list: module classes become inert stand-ins that only hold their attributes, tensors
are rebuilt from the storage bytes, and any other global refuses the file in one line.

    tensors = read_torchscript("Cosmos-1.0-Tokenizer-DV8x16x16/encoder.jit")
    tensors["encoder.conv_in.0.conv3d.weight"].shape
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import torch

from vqtool.errors import CheckpointError

#: storage class names in data.pkl -> dtypes
_STORAGES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class ScriptObject:
    """A module of the archive: its attributes, nothing else (no method runs)."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


def _rebuild_tensor(storage, offset, size, stride, *_):
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _as_list(*args):
    return list(args[0]) if len(args) == 1 else list(args)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch.jit._pickle", f"build_{k}list"): _as_list for k in
       ("int", "double", "bool", "tensor", "generic", "float")},
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _tag: value,
}  # fmt: skip


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, path: Path):
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.path = archive, root, path
        self.storages: dict[str, torch.Tensor] = {}
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            if key not in self.classes:
                self.classes[key] = type(name, (ScriptObject,), {"script_class": key})
            return self.classes[key]
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise CheckpointError(
            f"{self.path}: the TorchScript archive's data holds {module}.{name}, which vqtool "
            "does not read (it never runs code from a file); export the module's tensors "
            "with torch.jit.load(p).state_dict() in an environment you trust"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unknown TorchScript storage record {pid!r:.60}")
        dtype, key = pid[1], str(pid[2])
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.path}: storage {key} of unknown type {dtype!r:.60}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = (
                torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            )
        return self.storages[key]


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
            module = _Unpickler(archive.read(names[0]), archive, root, path).load()
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
