"""`vqtool decode TOKENS --tokenizer CKPT --out PATH`: token rows -> PNG images."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from vqtool.assets import DEFAULT_TOKENIZER
from vqtool.cli.common import console, err_console, print_json, user_errors

app = typer.Typer()


def _row_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give a row range as A:B, e.g. 0:16") from None
    return a, b


@app.command()
def decode(
    tokens: Annotated[
        str, typer.Argument(help="Token Parquet file or encode folder, or - for JSON on stdin.")
    ],
    out: Annotated[
        str, typer.Option("--out", help="A .png (one row, or --grid) or a folder (one per row).")
    ],
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="Tokenizer checkpoint or bundled name.")
    ] = DEFAULT_TOKENIZER,
    keys: Annotated[str | None, typer.Option("--keys", help="Comma-separated sample keys.")] = None,
    rows: Annotated[str | None, typer.Option("--rows", help="Row range A:B (0-based).")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="The first N rows (default 16).")
    ] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Write one grid PNG.")] = False,
    compare: Annotated[
        list[str] | None,
        typer.Option("--compare", help="Source shards: show each original beside its decode."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda ...")] = "auto",
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            min=1,
            help="Input size for a public tokenizer file (default: the size the tokens were "
            "encoded at).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Decode token rows back to pictures, optionally beside their source images."""
    from vqtool.tokens.decode import DecodeConfig
    from vqtool.tokens.decode import decode as run_decode

    cfg = DecodeConfig(
        tokens=tokens,
        tokenizer=tokenizer,
        out=out,
        keys=[k for k in keys.split(",") if k] if keys else None,
        rows=_row_range(rows),
        limit=limit,
        grid=grid,
        compare=compare or None,
        device=device,
        image_size=image_size,
        stdin_text=sys.stdin.read() if tokens == "-" else None,
    )
    with user_errors():
        result = run_decode(cfg)
    for note in result.notes:
        err_console.print(f"vqtool: {note}", highlight=False, soft_wrap=True)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(result.to_dict())
        return
    if result.grid:
        console.print(f"decoded {len(result.images)} row(s) into one grid: {result.out}")
        if result.mean_psnr is None:
            return
    table = Table(
        title=f"decoded {len(result.images)} row(s) -> {result.out}", title_justify="left"
    )
    table.add_column("key")
    table.add_column("file", overflow="fold")
    if result.mean_psnr is not None:
        table.add_column("PSNR dB", justify="right")
    for img in result.images[:50]:
        cells = [img.key, img.path]
        if result.mean_psnr is not None:
            cells.append(f"{img.psnr:.2f}")
        table.add_row(*cells)
    console.print(table)
    if len(result.images) > 50:
        console.print(f"... and {len(result.images) - 50} more")
    if result.mean_psnr is not None:
        console.print(f"mean PSNR {result.mean_psnr:.2f} dB (source vs decoded)")
