"""Checks of the command line that need no torch, run before a command imports its
library: a mistyped path, recipe or bundled name is answered in a fraction of a second
(the library checks everything again; these only answer sooner)."""

from __future__ import annotations

import glob
from pathlib import Path

from vqtool.assets import recipe_path, resolve
from vqtool.data.remote import is_url
from vqtool.data.sources import brace_expand
from vqtool.errors import CheckpointError, SourceError, TokenDataError


def _local(entry: str) -> bool:
    return bool(entry) and entry != "-" and not entry.startswith("pipe:") and not is_url(entry)


def sources(entries: list[str]) -> None:
    """Image (or, for a prior, token) inputs: every local path exists."""
    _exist(entries, lambda path: SourceError(f"{path}: no such file or folder"))


def token_inputs(entries: list[str]) -> None:
    """Token folders or files."""
    _exist(entries, lambda path: TokenDataError(f"{path}: no such token file or folder"))


def _exist(entries: list[str], error) -> None:
    """Every local entry, bundled names resolved and braces expanded, names something (a
    quoted glob pattern: matches something)."""
    for entry in filter(_local, (e.strip() for e in entries)):
        for path in brace_expand(resolve(entry)):
            if not (glob.glob(path) if glob.has_magic(path) else Path(path).exists()):
                raise error(path)


def checkpoint(name: str | None, flag: str = "--tokenizer") -> None:
    """A checkpoint named on the command line: a bundled name, a URL, or a local path
    that exists."""
    if name and _local(name) and not Path(resolve(name)).exists():
        raise CheckpointError(f"{flag} {name}: no such checkpoint file")


def recipe(name: str) -> None:
    recipe_path(name)
