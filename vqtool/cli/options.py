"""Options several commands share: one declaration and one help text each, checked
at parse time. Nothing here imports torch."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from vqtool.assets import DEFAULT_TOKENIZER
from vqtool.utils import DEVICE_NAMES, DEVICE_PATTERN, ENCODE_PRECISIONS, TRAIN_PRECISIONS

DEVICE_CHOICES = DEVICE_NAMES


def _check_device(value: str | None) -> str | None:
    if value is not None and not DEVICE_PATTERN.fullmatch(value):
        raise typer.BadParameter(f"{value!r}: use {DEVICE_CHOICES}")
    return value


#: encode precision (bf16 runs the network under bf16 autocast; distances stay fp32) and
#: training precision, as typer choices from the one list in `vqtool.utils`
Precision = Enum("Precision", {p: p for p in ENCODE_PRECISIONS}, type=str)
TrainPrecision = Enum("TrainPrecision", {p: p for p in TRAIN_PRECISIONS}, type=str)


# fmt: off
Device = Annotated[str, typer.Option(
    "--device", help=f"{DEVICE_CHOICES} (auto: CUDA when present).", callback=_check_device)]
RecipeDevice = Annotated[str | None, typer.Option(
    "--device", help=f"{DEVICE_CHOICES}; default: the recipe's train.device.",
    callback=_check_device)]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Tokenizer = Annotated[str, typer.Option("--tokenizer", help=(
    "A bundled name (vqtool:fsq-f4-64), a vqtool .safetensors checkpoint, or a public "
    "checkpoint file (LlamaGen, taming, Open-MAGVIT2, MaskGIT)."))]
DEFAULT = DEFAULT_TOKENIZER
RecordedTokenizer = Annotated[str | None, typer.Option(
    "--tokenizer", show_default="the one the tokens recorded, by its path, then beside the "
    "tokens; sha256 checked", help=("The tokenizer to decode with: a bundled name, a vqtool "
                                    ".safetensors checkpoint or a public checkpoint file."))]
Tf32 = Annotated[bool, typer.Option(
    "--tf32/--no-tf32", help="CUDA TF32 matmuls (faster; --no-tf32 keeps fp32 tokens).")]
ImageSize = Annotated[int | None, typer.Option("--image-size", min=1, help=(
    "Input size for a public tokenizer file (default: its family's native size); a vqtool "
    "tokenizer runs at its training size."))]
DecodeImageSize = Annotated[int | None, typer.Option("--image-size", min=1, help=(
    "Size a public tokenizer file decodes at (default: the size the tokens were encoded "
    "at); a vqtool tokenizer runs at its training size."))]
LogEvery = Annotated[float, typer.Option("--log-every", min=0, help=(
    "Not on a terminal: seconds between plain progress lines on stderr (0: none)."))]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help=(
    "Print nothing on success: no progress, notes or summary (errors and unfinished tasks "
    "still say so)."))]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help=(
    "torch CPU threads for the model. Default: OMP_NUM_THREADS when set, else the usable "
    "cores less the decode workers (more would spin-wait beside them)."))]
# fmt: on


def with_stdin(entries: list[str]) -> list[str]:
    """SRC entries with `-` replaced by the paths read from standard input, one per line."""
    out = [s for s in entries if s != "-"]
    if "-" in entries:
        out += [line.strip() for line in sys.stdin if line.strip()]
    return out
