"""`vqtool` itself: help and version."""

from typer.testing import CliRunner

from vqtool import __version__
from vqtool.cli.main import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"vqtool {__version__}"


def test_help_describes_the_tool():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Parquet token shards" in result.stdout
