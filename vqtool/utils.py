"""Helpers shared across vqtool: typed configs from plain dicts and `--set` overrides,
the spellings of devices and precisions, shipped TOML listings, names that suggest the
closest, file hashes. Standard library only (no torch)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from vqtool.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

#: how `--device` is written, and the words that say so
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_NAMES = "auto, cpu, cuda, cuda:N or mps"
#: the precision spellings: training takes all four, encode the first three (auto: bf16
#: autocast on CUDA, fp32 on CPU)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
TRAIN_PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
ENCODE_PRECISIONS: tuple[str, ...] = TRAIN_PRECISIONS[:3]


def parse_override(item: str) -> tuple[list[str], object]:
    """`--set KEY.PATH=VALUE` -> (key path, value): VALUE read as TOML (a number, a bool,
    a quoted string, a list), else kept as the plain string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. quantizer.codebook_size=4096")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


# --------------------------------------------------------------------------- configs


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently coerce) one config value against its annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        if value == "none" and type(None) in args and str not in args:
            return None  # TOML has no null: "none" unsets an optional number or table
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return config_from_dict(tp, value, prefix=f"{key}.")
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types (evaluating the annotations costs ~2 ms a class)."""
    return typing.get_type_hints(cls)


def config_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, refusing unknown keys and wrong types.

    Errors name the full dotted key (`quantizer.codebook_size`) so a recipe
    author can find the line.
    """
    hints = _type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; known keys here: {known}")
    values = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


def shipped_tomls(folder: Path, sentence: bool = False) -> list[tuple[str, str]]:
    """(name, about) of every TOML file shipped in `folder`: the first comment line
    (layouts), or with `sentence` the first sentence of the leading comment (recipes,
    whose lines wrap mid-sentence)."""
    out = []
    for path in sorted(folder.glob("*.toml")):
        lines = path.read_text().splitlines()
        comments = []
        for ln in lines:
            if not ln.startswith("#") or (comments and ln.startswith("#  ")):
                break
            comments.append(ln.lstrip("# ").strip())
        about = first_sentence(" ".join(comments)) if sentence else (comments or [""])[0]
        out.append((path.stem, about))
    return out


def first_sentence(text: str) -> str:
    """Up to the first full stop outside brackets ("et al." in a citation is not one)."""
    depth = 0
    for i, c in enumerate(text):
        depth += c in "([" and 1 or (c in ")]" and -1 or 0)
        if c == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[: i + 1]
    return text


def did_you_mean(name: str, known: list[str]) -> str:
    """ " (did you mean X?)" for the closest known name, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def sha256_file(path: str | Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def key_unit(key: str) -> float:
    """A sample key's place in [0, 1): the first 8 bytes of its sha256. Hold-outs and
    export splits take the keys under a fraction, the same rows on every run."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64
