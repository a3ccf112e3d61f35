"""`vqtool convert FAMILY SRC --out DST.safetensors`: a public tokenizer checkpoint
-> vqtool's single-file format."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from vqtool.cli.common import console, print_json, user_errors

app = typer.Typer()


@app.command()
def convert(
    family: Annotated[
        str, typer.Argument(help="llamagen, taming, open-magvit2 or maskgit (auto: detect).")
    ],
    src: Annotated[str, typer.Argument(help="The downloaded checkpoint (.pt, .ckpt, .bin, ...).")],
    out: Annotated[str, typer.Option("--out", help="Output .safetensors file.")],
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="ema or raw (Open-MAGVIT2 default: ema; LlamaGen: raw)."),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option("--image-size", help="Resolution encode will use (default 256).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Convert a public pretrained tokenizer once; every command then uses it like any other."""
    from vqtool.pretrained.convert import convert as run_convert

    with user_errors():
        result = run_convert(None if family == "auto" else family, src, out, weights, image_size)
    if as_json:
        print_json(result.to_dict())
        return
    info = result.info
    grids = " + ".join(f"{h}x{w}" for h, w in result.layout["grids"])
    table = Table(title=f"converted -> {result.out}", show_header=False, title_justify="left")
    table.add_row("family", f"{info.family}: {info.description}")
    table.add_row("source", f"{info.source} (sha256 {info.sha256[:12]}...)")
    table.add_row("weights", info.weights)
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row(
        "tokens",
        f"{grids} at {info.image_size}px, vocabulary {result.layout['vocab_size']:,}",
    )
    table.add_row("preprocessing", info.preprocessing)
    for note in info.notes:
        table.add_row("note", note)
    console.print(table)
