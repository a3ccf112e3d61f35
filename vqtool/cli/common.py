"""What every command shares: consoles, and turning library errors into one
line on stderr and a non-zero exit (never a traceback)."""

from __future__ import annotations

import contextlib
import json
import sys

import typer
from rich.console import Console

from vqtool.errors import UserError

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors():
    """A user's mistake (`vqtool.errors.UserError`) -> `vqtool: error: ...` and exit
    status 2; anything else is a bug and keeps its traceback."""
    try:
        yield
    except UserError as exc:
        err_console.print(f"[bold red]vqtool: error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("vqtool: interrupted")
        raise typer.Exit(130) from None


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
