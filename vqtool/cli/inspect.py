"""`vqtool inspect PATH`: a checkpoint, a token dataset or image shards -> report."""

from __future__ import annotations

from typing import Annotated

import typer
from typer import Argument, Option

from vqtool.cli.common import console, print_json, user_errors
from vqtool.cli.options import ImageSize, Json

app = typer.Typer()
PATH = ("A .safetensors checkpoint (or a public tokenizer file), a token dataset (encode folder "
        "or Parquet file) or image shards (tar, folder, Parquet, vqtool:sample).")  # fmt: skip


@app.command(epilog="Example: vqtool inspect tokens/")
def inspect(
    path: Annotated[str, Argument(help=PATH)],
    top: Annotated[int, Option("--top", min=1, help="How many top codes to list.")] = 10,
    plot: Annotated[str | None, Option("--plot", help="Also write the usage curve as a PNG.")] = (
        None
    ),
    image_size: ImageSize = None,
    as_json: Json = False,
) -> None:
    """Codebook health, token-dataset statistics, or image-shard facts."""
    from vqtool.report.inspect import inspect_path
    from vqtool.report.terminal import render

    with user_errors():
        report = inspect_path(path, top, image_size, plot)
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(render(report))
