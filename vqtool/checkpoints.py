"""Reading safetensors files: the one place that opens one, for metadata only or
with its tensors, turning unreadable files into a `CheckpointError` naming them."""

from __future__ import annotations

from pathlib import Path

from vqtool.errors import CheckpointError


def read_safetensors(path: str | Path, tensors=True) -> tuple[dict, dict]:
    """(metadata, tensors) of a safetensors file (tensors empty when not asked for;
    `tensors` may be a predicate on the name, to read only some of a large file)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            wanted = tensors if callable(tensors) else (lambda _: bool(tensors))
            found = {k: f.get_tensor(k) for k in f.keys() if wanted(k)}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file ({exc})") from exc
    return meta, found


def read_metadata(path: str | Path) -> dict:
    """A safetensors file's metadata; {} for a file of another format."""
    if Path(path).suffix != ".safetensors":
        return {}
    return read_safetensors(path, tensors=False)[0]


def vqtool_format(path: str | Path) -> str | None:
    """The `vqtool.format` a file declares (`tokenizer/1`, `prior/1`), or None for a
    file vqtool did not write. A .safetensors file that cannot be read counts as ours,
    so that loading it reports what is wrong."""
    try:
        return read_metadata(path).get("vqtool.format")
    except CheckpointError:
        return "unreadable"
