"""`vqtool convert FAMILY SRC --out DST.safetensors`: a public tokenizer checkpoint
-> vqtool's single-file format."""

from __future__ import annotations

from typing import Annotated

import typer
from typer import Argument, Option

from vqtool.cli.common import console, print_json, user_errors
from vqtool.cli.options import ImageSize, Json

app = typer.Typer()


# fmt: off
@app.command(
    epilog=(
        "Example: vqtool convert "
        "llamagen vq_ds16_c2i.pt --out llamagen-vq16.safetensors"
    )
)
def convert(
    family: Annotated[str, Argument(
        help="llamagen, taming, open-magvit2, maskgit, chameleon, emu3, emu3.5, show-o, "
        "movqgan, cosmos, infinity, var or janus (auto: detect).")],
    src: Annotated[str, Argument(help="The downloaded checkpoint (.pt, .ckpt, .bin, .jit, ...) "
                                      "or the folder holding it.")],
    out: Annotated[str, Option("--out", help="Output .safetensors file.")],
    weights: Annotated[str | None, Option(
        "--weights", help="ema or raw, for files holding both (Open-MAGVIT2 default: ema; "
        "LlamaGen: the model entry).")] = None,
    image_size: ImageSize = None,
    as_json: Json = False,
) -> None:
    """Convert a public pretrained tokenizer once; every command then uses it like any other."""
    from vqtool.pretrained.convert import convert as run_convert
    from vqtool.report.jobs import convert_summary

    with user_errors():
        result = run_convert(None if family == "auto" else family, src, out, weights, image_size)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(convert_summary(result))
# fmt: on
