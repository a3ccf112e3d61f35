"""The `vqtool` command line: a thin Typer shell over the library."""
