"""`vqtool recipes`: the recipes shipped with vqtool, by name."""

from __future__ import annotations

import typer

from vqtool.cli.common import console, print_json
from vqtool.cli.options import Json

app = typer.Typer()


@app.command()
def recipes(as_json: Json = False) -> None:
    """List the shipped recipes (`vqtool train NAME` takes one by name)."""
    from rich.table import Table

    from vqtool.training.recipe import RECIPES, list_recipes

    found = list_recipes()
    if as_json:
        print_json([{"name": n, "about": about} for n, about in found])
        return
    table = Table(title=f"recipes in {RECIPES}", title_justify="left")
    table.add_column("name")
    table.add_column("about", overflow="fold")
    for name, about in found:
        table.add_row(name, about)
    console.print(table)
