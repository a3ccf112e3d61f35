"""The one way to open a tokenizer: a bundled name (`vqtool:fsq-f4-64`), a vqtool
checkpoint, or a public checkpoint file converted on the fly, with what identifies
it (its sha256, and the original file's when `vqtool convert` made it).

    opened = open_tokenizer("vqtool:fsq-f4-64", device)
    opened.tokenizer.encode(images)
    opened.wrote(meta["tokenizer"])   # were these tokens written by this tokenizer?
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vqtool.assets import resolve
from vqtool.checkpoints import read_metadata, vqtool_format
from vqtool.errors import CheckpointError
from vqtool.models.tokenizer import Tokenizer
from vqtool.pretrained.convert import ForeignInfo, load_foreign
from vqtool.pretrained.records import recorded_shas
from vqtool.utils import sha256_file


@dataclass
class OpenedTokenizer:
    tokenizer: Tokenizer
    name: str  # as the user gave it
    path: Path  # the file
    sha256: str
    source_sha256: str | None = None  # the public file a converted checkpoint came from
    foreign: ForeignInfo | None = None  # set when a public file was opened directly
    notes: list[str] = field(default_factory=list)

    @property
    def shas(self) -> set[str]:
        """Every sha256 that identifies this tokenizer."""
        return {self.sha256} | ({self.source_sha256} if self.source_sha256 else set())

    def record(self) -> dict:
        """What a token folder or prior records about the tokenizer: the name as given,
        the file's absolute path and name (so tools find it from elsewhere) and sha256."""
        out = {"file": self.path.name, "path": self.name, "sha256": self.sha256}
        if not self.name.startswith("vqtool:"):
            out["abspath"] = str(self.path.resolve())
        if self.source_sha256:
            out["source_sha256"] = self.source_sha256
        if self.foreign is not None:
            out["family"] = self.foreign.family
            out["weights"] = self.foreign.weights
            if self.path.is_dir():  # found again by these files' sha256s
                out["read_from"] = self.foreign.read_from
        return out

    def wrote(self, record: dict) -> bool | None:
        """Whether tokens whose metadata records `record` (a `record()` of the tokenizer
        that wrote them) came from this tokenizer; None when nothing was recorded."""
        recorded = recorded_shas(record)
        return bool(recorded & self.shas) if recorded else None

    def other_writer(self, record: dict, subject: str) -> str | None:
        """None when tokens recording `record` came from this tokenizer (or nothing was
        recorded); else the sentence naming the one that wrote them: "`subject` encoded
        with tokenizer NAME (sha256 ...), not THIS (sha256 ...)". Every tool that reads
        tokens with a tokenizer (decode, sample, export --embeddings) refuses with it."""
        if self.wrote(record) is not False:
            return None
        where = record.get("path") or record.get("file") or "?"
        theirs = (record.get("sha256") or "?")[:12]
        return (
            f"{subject} encoded with tokenizer {where} (sha256 {theirs}...), not {self.name} "
            f"(sha256 {self.sha256[:12]}...)"
        )


def is_vqtool_file(name: str) -> bool:
    """A vqtool checkpoint (or an unreadable .safetensors, which loading then reports)
    rather than a public file to convert on the fly."""
    return vqtool_format(resolve(name)) is not None


def refuse_other_size(tok: Tokenizer, path: Path, image_size: int | None) -> None:
    """A vqtool checkpoint's token layout is fixed to its training size."""
    if image_size not in (None, tok.config.image_size):
        raise CheckpointError(
            f"--image-size {image_size}: {path.name} was trained at "
            f"{tok.config.image_size} px and its token layout is fixed to that size; "
            "leave --image-size out"
        )


def open_tokenizer(
    name: str, device: str | torch.device = "cpu", image_size: int | None = None
) -> OpenedTokenizer:
    """Open `name` on `device`. `image_size` sets a public file's input size (default:
    its family's native size); a vqtool checkpoint's layout is fixed to its training
    size, so any other size is refused."""
    path = Path(resolve(name))
    if path.is_dir() and (path / "tokenizer.safetensors").is_file():  # a training run folder
        path = path / "tokenizer.safetensors"
    elif path.is_dir():  # a public model's folder (Emu3.5-VisionTokenizer, Janus-Pro-7B)
        return _open_foreign(name, path, device, image_size)
    if not path.is_file():
        raise CheckpointError(f"--tokenizer {name}: no such checkpoint file")
    if vqtool_format(path) is not None:
        tok = Tokenizer.load(path, device)
        refuse_other_size(tok, path, image_size)
        provenance = read_metadata(path).get("vqtool.provenance")
        source = json.loads(provenance)["sha256"] if provenance else None
        return OpenedTokenizer(tok, name, path, sha256_file(path), source)
    return _open_foreign(name, path, device, image_size)


def _open_foreign(
    name: str, path: Path, device: str | torch.device, image_size: int | None
) -> OpenedTokenizer:
    """A public checkpoint file or folder, converted on the fly. A folder whose tokenizer
    sits in one file is recorded as that file (tools find it again by its sha256)."""
    try:
        tok, info = load_foreign(path, image_size=image_size)
    except CheckpointError as exc:
        if not path.is_dir():
            raise
        raise CheckpointError(
            f"--tokenizer {name}: a folder that is neither a training run (no "
            f"tokenizer.safetensors) nor a public tokenizer's ({exc})"
        ) from exc
    if path.is_dir() and len(info.read_from) == 1:
        path = path / info.read_from[0]
    notes = [f"--tokenizer {name}: detected a {info.family} checkpoint"]
    return OpenedTokenizer(tok.to(device), name, path, info.sha256, None, info, notes)
