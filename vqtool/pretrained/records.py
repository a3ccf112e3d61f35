"""What identifies a tokenizer in a token folder, export or prior's record, and finding
that tokenizer again: torch-free, so that `export` and `inspect` of a token folder need no
network library.

    recorded_tokenizer(meta["tokenizer"], near=Path("tokens"), what="tokens")
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vqtool.errors import CheckpointError
from vqtool.utils import sha256_file


def files_sha256(files: list[Path]) -> str:
    """What identifies a tokenizer read from several files (a sharded model, a Cosmos
    release's encoder.jit + decoder.jit): the sha256 of their sha256s, in order; one
    file's own sha256."""
    shas = [sha256_file(f) for f in files]
    return shas[0] if len(shas) == 1 else hashlib.sha256(" ".join(shas).encode()).hexdigest()


def recorded_shas(record: dict) -> set[str]:
    """The sha256s a token folder or prior recorded for its tokenizer."""
    return {v for k in ("sha256", "source_sha256") if (v := record.get(k))}


def recorded_tokenizer(record: dict, near: Path | None, what: str) -> str:
    """The tokenizer a token folder, export or prior recorded (`record()`), for tools
    given no --tokenizer: the bundled name, the recorded absolute path, the path as it
    was given, then the file's name beside `near` (the tokens) and in its parent; each
    candidate's sha256 is checked. Missing: one line naming the file, its sha256 and how
    to pass it."""
    name, sha = record.get("path") or "", record.get("sha256") or ""
    if not sha:
        raise CheckpointError(f"{what} records no tokenizer; pass one with --tokenizer")
    if name.startswith("vqtool:"):
        return name
    file = record.get("file") or Path(name).name
    candidates = [record.get("abspath"), name]
    if near is not None:
        candidates += [str(near / file), str(near.parent / file)]
    wanted, parts = recorded_shas(record), record.get("read_from") or []
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if path.is_file() and sha256_file(path) in wanted:
            return str(path)
        if path.is_dir() and parts and all((path / p).is_file() for p in parts):
            if files_sha256([path / p for p in parts]) in wanted:
                return str(path)
    raise CheckpointError(
        f"{what} was encoded with tokenizer {file} (sha256 {sha[:12]}...), which is not at "
        f"{record.get('abspath') or name} nor beside the tokens; pass it with --tokenizer PATH"
    )
