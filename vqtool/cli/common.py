"""What every command shares: consoles, and turning library errors into one
line on stderr and a non-zero exit (never a traceback)."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException

from vqtool.errors import UserError
from vqtool.signals import stop_requested

console = Console()
err_console = Console(stderr=True)


@contextlib.contextmanager
def user_errors():
    """A user's mistake (`vqtool.errors.UserError`) -> `vqtool: error: ...` and exit
    status 2; anything else is a bug and keeps its traceback."""
    try:
        yield
        if stop_requested():  # the interrupt was swallowed somewhere: still a stop
            raise KeyboardInterrupt
    except UserError as exc:
        # the message is text, not console markup: `pip install 'vqtool[cloud]'` and a
        # path with `[/` in it print as they are
        err_console.print(f"[bold red]vqtool: error:[/] {escape(str(exc))}", highlight=False,
                          soft_wrap=True)  # fmt: skip
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt:
        # written past the console: the stop may have landed inside one of its prints,
        # leaving it buffering until that print ends, which it no longer will
        sys.stderr.write("vqtool: interrupted\n")
        sys.stderr.flush()
        raise typer.Exit(130) from None


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")


@contextlib.contextmanager
def stdout_for_json(on: bool):
    """With `--json`, everything written to file descriptor 1 while the job runs (Ray's
    worker and raylet lines, a library's print, a C++ log) goes to stderr, so stdout
    carries the JSON result alone; the descriptor is restored for `print_json`."""
    if not on:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real descriptor 1 (a test runner's buffer)
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class OneLineErrors(TyperGroup):
    """The root command: a usage mistake (an unknown option, a bad value, a missing
    argument) is one line on stderr and exit status 2, like a library UserError."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if not standalone_mode:
                raise
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "vqtool"
            err_console.print(
                f"[bold red]vqtool: error:[/] {escape(where)}: "
                f"{escape(exc.format_message())} (see --help)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("vqtool: aborted")
            sys.exit(1)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


# --help's type column: typer shows Python types (`<str>`, `<list[str]>`, `<bool>` beside
# every flag); vqtool shows what to type, as click does (TEXT, INTEGER, [a|b]), and nothing
# beside a flag. An option's own `metavar=` still wins.
_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "int range": "INTEGER",
          "float range": "FLOAT", "path": "PATH", "file": "FILE", "directory": "DIR"}  # fmt: skip


def _what_to_type(self, ctx) -> str | None:
    if self.metavar is not None:
        return self.metavar or None
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    label = _TYPED(self, ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    word = _WORDS.get(label) or (f"[{label}]" if "|" in label else label.upper())
    return word + ("..." if self.nargs != 1 else "")


try:  # typer >= 0.25 (the display_type API); older typer prints click's words already
    from typer.core import TyperArgument, TyperOption

    _TYPED = TyperOption.display_type
    TyperOption.display_type_rich = _what_to_type
    TyperArgument.display_type_rich = _what_to_type
except (ImportError, AttributeError):  # pragma: no cover
    pass
