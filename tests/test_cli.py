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


def test_version_and_help_do_not_import_torch():
    """`vqtool --version` / `--help` answer in a fraction of a second: the entry point
    and every command module import nothing heavy until a command runs."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vqtool.cli.main import app\n"
        "for args in (['--version'], ['--help'], ['encode', '--help'], ['train', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
