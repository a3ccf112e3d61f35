"""`vqtool` entry point: composes one Typer app per command (added as they land)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Annotated

import typer
from rich.console import Console

from vqtool import __version__
from vqtool.cli.common import OneLineErrors
from vqtool.cli.convert import app as convert_app
from vqtool.cli.decode import app as decode_app
from vqtool.cli.encode import app as encode_app
from vqtool.cli.export import app as export_app
from vqtool.cli.inspect import app as inspect_app
from vqtool.cli.probe import app as probe_app
from vqtool.cli.recipes import app as recipes_app
from vqtool.cli.sample import app as sample_app
from vqtool.cli.train import app as train_app
from vqtool.signals import request_stop, stop_requested

app = typer.Typer(
    cls=OneLineErrors,
    name="vqtool",
    help="Vector-quantization image tokenizers: train them, and turn image corpora "
    "into Parquet token shards.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

app.add_typer(train_app)
app.add_typer(encode_app)
app.add_typer(inspect_app)
app.add_typer(decode_app)
app.add_typer(sample_app)
app.add_typer(convert_app)
app.add_typer(export_app)
app.add_typer(probe_app)
app.add_typer(recipes_app)


def _version(value: bool) -> None:
    if value:
        console.print(f"vqtool {__version__}", highlight=False)
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Vector-quantization image tokenizers for language-model pretraining."""
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())


def _stop(signum, frame) -> None:
    request_stop()  # recorded: loops stop at their next boundary even if this is swallowed
    raise KeyboardInterrupt  # SIGTERM (a scheduler, `kill`) stops a run as Ctrl-C does


def _unraisable(info) -> None:
    """A stop request raised inside a finalizer (`__del__`) cannot propagate; it is
    recorded (`signals`) and honoured at the next boundary, so it is not printed."""
    if isinstance(info.exc_value, KeyboardInterrupt) and stop_requested():
        return
    sys.__unraisablehook__(info)


def _thread_failed(info) -> None:
    """Once a stop was requested, a helper thread failing as the process winds down
    (multiprocessing's resource sharer losing its connection) is a consequence of the
    stop, not news: not printed."""
    if stop_requested():
        return
    threading.__excepthook__(info)


def _helper_failed(kind, value, tb) -> None:
    """The same for helpers that report through `sys.excepthook` themselves
    (multiprocessing's resource sharer does, from its own thread); the main thread's
    errors always print."""
    if stop_requested() and threading.current_thread() is not threading.main_thread():
        return
    sys.__excepthook__(kind, value, tb)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    sys.unraisablehook = _unraisable
    threading.excepthook = _thread_failed
    sys.excepthook = _helper_failed
    app()
