"""`vqtool recipes`: the recipes shipped with vqtool, by name."""

from __future__ import annotations

from typing import Annotated

import typer

from vqtool.cli.common import console, print_json
from vqtool.cli.options import Json

app = typer.Typer()


@app.command(epilog="Example: vqtool recipes --layouts")
def recipes(
    layouts: Annotated[bool, typer.Option("--layouts", help=(
        "List the export layout presets (`vqtool export --layout NAME`) instead."))] = False,
    as_json: Json = False,
) -> None:  # fmt: skip
    """List the shipped recipes (`vqtool train NAME` takes one by name)."""
    from rich.markup import escape
    from rich.table import Table

    if layouts:
        from vqtool.lm.layout import PRESET_DIR as RECIPES
        from vqtool.lm.layout import list_layouts as list_recipes
    else:
        from vqtool.assets import RECIPES, list_recipes

    found = list_recipes()
    sizes, picks = {}, {}
    if not layouts:
        from vqtool.assets import recipe_sizes, recommended_recipes

        sizes, picks = recipe_sizes(), recommended_recipes()
    if as_json:
        print_json([{"name": n, "about": about,
                     **({"tokens_per_image": sizes[n][0], "bits_per_image": sizes[n][1]}
                        if sizes.get(n) else {}),
                     **({"recommended": picks[n]} if n in picks else {})}
                    for n, about in found])  # fmt: skip
        return
    title = "export layout presets" if layouts else "recipes"
    table = Table(title=f"{title} in {RECIPES}", title_justify="left")
    table.add_column("name")
    if not layouts:
        table.add_column("tokens", justify="right")
        table.add_column("bits/image", justify="right")
    table.add_column("about", overflow="fold")
    for name, about in found:
        if layouts:
            table.add_row(name, about)
        else:
            size = sizes.get(name)
            cells = (f"{size[0]:,}", f"{size[1]:,.0f}") if size else ("prior", "-")
            why = f" [bold green]Recommended:[/] {escape(picks[name])}" if name in picks else ""
            table.add_row(f"{name} [bold green]*[/]" if why else name, *cells, escape(about) + why)
    console.print(table)
    if picks:
        console.print("[bold green]*[/] recommended")
