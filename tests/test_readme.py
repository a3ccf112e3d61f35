"""The README's Quickstart and Python examples run as written."""

import ast
import re
import shlex
from pathlib import Path

from support.processes import in_megatron
from typer.testing import CliRunner

from vqtool.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_then_python_blocks_run(tmp_path, monkeypatch):
    text = README.read_text()
    quickstart = re.search(r"pip install -e \. && (vqtool encode [^\n]+)", text).group(1)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, shlex.split(quickstart)[1:])
    assert result.exit_code == 0, result.output
    outputs = re.findall(r"```text\n\$ (vqtool [^\n]+)\n(.*?)```", text, re.S)
    assert outputs, "the README shows what inspect prints"
    for command, shown in outputs:
        # every output the README shows is what the command prints now (80 columns)
        out = CliRunner().invoke(app, shlex.split(command)[1:], env={"COLUMNS": "80"}).output
        printed = "\n".join(line.rstrip() for line in out.splitlines()).strip("\n")
        assert timeless(printed) == timeless(shown.strip("\n")), (
            f"README's `{command}` output is stale:\n{printed}"
        )
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README should show the Python API"
    checked = 0
    for block in blocks:
        source, claims = with_claims_checked(block)
        checked += claims
        exec(compile(source, str(README), "exec"), {})
    assert checked >= 4  # the shapes, grids and True the comments promise were compared


def timeless(text: str) -> str:
    """The output without its measured figures: the table of the last encode run against
    its limits (images/s, the GEMM probe) differs from run to run."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith("the last encode run against its limits"):
            skipping = True
        elif skipping and line.startswith("└"):
            skipping = False
            continue
        if not skipping:
            out.append(line)
    return "\n".join(out)


CLAIM = re.compile(r"^(?P<code>\S.*?)\s+# (?P<claim>.+)$")


def _checkable(claim: str) -> str | None:
    """The part of a comment that states a value: a literal, torch.Size(...), True/False."""
    head = claim.split()[0].rstrip(":,") if claim.startswith(("True", "False")) else claim
    if head.startswith("torch.Size(") and head.endswith(")"):
        return head
    try:
        ast.literal_eval(head)
    except (ValueError, SyntaxError):
        return None
    return head


def with_claims_checked(block: str) -> tuple[str, int]:
    """`expr  # value` lines become `assert (expr) == (value)`."""
    out, count = [], 0
    for line in block.splitlines():
        m = CLAIM.match(line)
        claim = m and _checkable(m["claim"])
        if claim:
            try:
                is_expr = isinstance(ast.parse(m["code"]).body[0], ast.Expr)
            except SyntaxError:
                is_expr = False
            if is_expr:
                line = f"assert ({m['code']}) == ({claim}), {line!r}"
                count += 1
        out.append(line)
    return "\n".join(out), count


def run_python_blocks(section: str) -> int:
    """Run every ```py block of a README section, its `expr  # value` claims checked, each
    with fresh globals in the current folder, in the session's Megatron-Core child process
    (megatron.core changes torch.load's safe globals on import, so never in this one);
    returns how many claims were checked."""
    import re

    checked = 0
    for block in re.findall(r"```py\n(.*?)```", section, flags=re.S):
        source, claims = with_claims_checked(block)
        checked += claims
        in_megatron(source)
    return checked


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    command = "pip install -e '.[dev]' && python -m pytest -q"
    assert command in README.read_text()
    assert ci.strip().splitlines()[-1] == command
