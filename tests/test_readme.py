"""The README's Quickstart and Python examples run as written."""

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from vqtool.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_then_python_blocks_run(tmp_path, monkeypatch):
    text = README.read_text()
    quickstart = re.search(r"pip install -e \. && (vqtool encode [^\n]+)", text).group(1)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, shlex.split(quickstart)[1:])
    assert result.exit_code == 0, result.output
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README should show the Python API"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in README.read_text()
    assert ci.strip().splitlines()[-1] == command
