"""What every command shares: consoles, and turning library errors into one
line on stderr and a non-zero exit (never a traceback)."""

from __future__ import annotations

import contextlib
import json
import sys

import typer
from rich.console import Console

from vqtool.data.sources import SourceError
from vqtool.losses.perceptual import PerceptualError
from vqtool.models.tokenizer import CheckpointError
from vqtool.training.loop import RunError
from vqtool.utils import ConfigError

console = Console()
err_console = Console(stderr=True)

#: errors that mean "the user asked for something that cannot work as given"
USER_ERRORS = (
    ConfigError,
    SourceError,
    CheckpointError,
    PerceptualError,
    RunError,
    FileNotFoundError,
    ValueError,
)


@contextlib.contextmanager
def user_errors():
    """Library errors -> `vqtool: error: ...` and exit status 2."""
    try:
        yield
    except USER_ERRORS as exc:
        err_console.print(f"[bold red]vqtool: error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("vqtool: interrupted")
        raise typer.Exit(130) from None


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
