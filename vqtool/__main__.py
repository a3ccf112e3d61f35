"""`python -m vqtool` runs the command line."""

from vqtool.cli.main import main

main()
