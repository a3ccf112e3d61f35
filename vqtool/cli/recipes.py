"""`vqtool recipes`: the recipes shipped with vqtool, by name."""

from __future__ import annotations

from typing import Annotated

import typer

from vqtool.cli.common import console, print_json
from vqtool.cli.options import Json

app = typer.Typer()


@app.command()
def recipes(
    layouts: Annotated[bool, typer.Option("--layouts", help=(
        "List the export layout presets (`vqtool export --layout NAME`) instead."))] = False,
    as_json: Json = False,
) -> None:  # fmt: skip
    """List the shipped recipes (`vqtool train NAME` takes one by name)."""
    from rich.table import Table

    if layouts:
        from vqtool.tokens.lm_layout import PRESET_DIR as RECIPES
        from vqtool.tokens.lm_layout import list_layouts as list_recipes
    else:
        from vqtool.training.recipe import RECIPES, list_recipes

    found = list_recipes()
    if as_json:
        print_json([{"name": n, "about": about} for n, about in found])
        return
    title = "export layout presets" if layouts else "recipes"
    table = Table(title=f"{title} in {RECIPES}", title_justify="left")
    table.add_column("name")
    table.add_column("about", overflow="fold")
    for name, about in found:
        table.add_row(name, about)
    console.print(table)
