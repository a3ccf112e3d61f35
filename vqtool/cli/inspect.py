"""`vqtool inspect PATH`: a checkpoint, a token dataset or image shards -> report."""

from __future__ import annotations

from typing import Annotated

import typer

from vqtool.cli.common import console, print_json, user_errors
from vqtool.errors import InspectError

app = typer.Typer()


@app.command()
def inspect(
    path: Annotated[
        str,
        typer.Argument(
            help="A .safetensors checkpoint, a token dataset (encode folder or Parquet file) "
            "or image shards (tar, folder, Parquet, vqtool:sample)."
        ),
    ],
    top: Annotated[int, typer.Option("--top", min=1, help="How many top codes to list.")] = 10,
    plot: Annotated[
        str | None, typer.Option("--plot", help="Also write the usage histogram as a PNG.")
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size", min=1, help="Input size for a public tokenizer file (default: native)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Codebook health, token-dataset statistics, or image-shard facts."""
    from vqtool.report.inspect import inspect_path
    from vqtool.report.plot import save_usage_plot
    from vqtool.report.terminal import render

    with user_errors():
        report = inspect_path(path, top, curve_points=400 if plot else 60, image_size=image_size)
        if plot:
            curve = getattr(report, "frequency_curve", None)
            if curve is None:
                raise InspectError(
                    f"--plot: {path} is {report.kind}; the usage histogram needs a token dataset"
                )
            save_usage_plot(
                curve, report.usage.vocab_size, f"code usage: {path}", report.top_codes, plot
            )
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(render(report))
