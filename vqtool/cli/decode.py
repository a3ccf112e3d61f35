"""`vqtool decode TOKENS --tokenizer CKPT --out PATH`: token rows -> PNG images."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from typer import Argument, Option

from vqtool.cli.common import console, err_console, print_json, user_errors
from vqtool.cli.options import DecodeImageSize, Device, Json, RecordedTokenizer

app = typer.Typer()


def _row_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give a row range as A:B, e.g. 0:16") from None
    return a, b


# fmt: off
@app.command(epilog="Example: vqtool decode tokens/ --out pictures/ --limit 4")
def decode(
    tokens: Annotated[str, Argument(
        help="Token Parquet file, encode folder, export folder, or - for JSON on stdin.")],
    out: Annotated[str, Option(
        "--out", help="A .png (one row, or --grid) or a folder (one PNG per row).")],
    tokenizer: RecordedTokenizer = None,
    keys: Annotated[str | None, Option("--keys", help="Comma-separated sample keys.")] = None,
    rows: Annotated[str | None, Option("--rows", help=(
        "Row range A:B (0-based; an export's documents)."))] = None,
    limit: Annotated[int | None, Option("--limit", min=1,
                                        help="The first N rows (default 16).")] = None,
    grid: Annotated[bool, Option("--grid", help="Write one grid PNG.")] = False,
    scales: Annotated[bool, Option("--scales", help=(
        "Pyramid tokens (VAR): each row as the pictures after each scale, side by "
        "side."))] = False,
    compare: Annotated[list[str] | None, Option(
        "--compare", help="Source shards: show each original beside its decode.")] = None,
    text_tokenizer: Annotated[str | None, Option("--text-tokenizer", help=(
        "An export's caption tokenizer.json (default: the one it recorded)."))] = None,
    device: Device = "auto",
    image_size: DecodeImageSize = None,
    force: Annotated[bool, Option("--force", help=(
        "Decode tokens another tokenizer wrote anyway (a warning instead of an error)."))] = False,
    as_json: Json = False,
) -> None:
    """Decode token rows back to pictures, optionally beside their source images."""
    from vqtool.cli import preflight

    with user_errors():  # before torch loads: a mistyped path is answered at once
        preflight.token_inputs([tokens])
        preflight.checkpoint(tokenizer)
    from vqtool.report.jobs import decode_summary
    from vqtool.tokens.decode import DecodeConfig
    from vqtool.tokens.decode import decode as run_decode

    cfg = DecodeConfig(tokens=tokens, tokenizer=tokenizer, out=out,
                       keys=[k for k in keys.split(",") if k] if keys else None,
                       rows=_row_range(rows), limit=limit, grid=grid, compare=compare or None,
                       scales=scales,
                       device=device, image_size=image_size, force=force,
                       text_tokenizer=text_tokenizer,
                       stdin_text=sys.stdin.read() if tokens == "-" else None)
    with user_errors():
        result = run_decode(cfg)
    for note in result.notes:
        err_console.print(f"vqtool: {escape(note)}", highlight=False, soft_wrap=True)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(decode_summary(result))
# fmt: on
