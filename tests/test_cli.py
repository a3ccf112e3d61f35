"""`vqtool` itself: help and version."""

import json
from pathlib import Path

import pytest
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


def test_a_mistyped_path_or_recipe_is_answered_before_torch_loads(tmp_path):
    """A missing input, token folder, checkpoint or recipe is one line and exit 2 without
    importing torch (so it answers in a fraction of a second, not the 3-17 s torch takes
    on a loaded machine)."""
    import subprocess
    import sys

    t = str(tmp_path)
    cases = [["encode", f"{t}/missing.tar", "--out", f"{t}/o"],
             ["encode", "vqtool:sample", "--out", f"{t}/o", "--tokenizer", f"{t}/no.pt"],
             ["train", "fsqq", "--data", "vqtool:sample", "--out", f"{t}/r"],
             ["train", "fsq", "--data", f"{t}/nope/", "--out", f"{t}/r"],
             ["export", f"{t}/tokens", "--layout", "liquid", "--format", "megatron",
              "--out", f"{t}/e"],
             ["decode", f"{t}/part-*.parquet", "--out", f"{t}/x.png"]]  # fmt: skip
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from vqtool.cli.main import app\n"
        "out = []\n"
        f"for args in {cases!r}:\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    out.append([r.exit_code, r.output.strip().splitlines()])\n"
        "out.append(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *answers, loaded = json.loads(proc.stdout)
    assert loaded == [], "torch was imported before the mistake was reported"
    for args, (status, lines) in zip(cases, answers):
        assert status == 2 and len(lines) == 1 and "error" in lines[0], (args, lines)
    assert "did you mean fsq" in answers[2][1][0]


# Every user mistake, on every command: one line on stderr naming the problem, exit
# status 2, no traceback.
MISTAKES = [
    (["encode", "vqtool:sample", "--out", "{t}/t", "--device", "gpu"], "--device"),
    (["encode", "vqtool:sample", "--out", "{t}/t", "--precision", "fp8"], "--precision"),
    (["encode", "vqtool:sample", "--out", "{t}/t", "--tokenizer", "{t}/no.safetensors"],
     "no such checkpoint"),
    (["encode", "{t}/missing.tar", "--out", "{t}/t"], "missing.tar"),
    (["encode", "{t}/odd[/x]name.tar", "--out", "{t}/t"], "odd[/x]name.tar"),  # not markup
    (["encode", "vqtool:sample"], "--out"),
    (["decode", "-", "--out", "{t}/x.png", "--device", "cuda:x"], "--device"),
    (["decode", "-", "--out", "{t}/x.png", "--tokenizer", "{t}/no.safetensors"],
     "no such checkpoint"),
    (["decode", "{t}/missing", "--out", "{t}/x.png"], "missing"),
    (["sample", "--prior", "{t}/p.safetensors", "--out", "{t}/x.png", "--device", "tpu"],
     "--device"),
    (["sample", "--prior", "{t}/p.safetensors", "--out", "{t}/x.png"], "p.safetensors"),
    (["train", "recipes/fsq.toml", "--data", "vqtool:sample", "--out", "{t}/r", "--device",
      "gpu"], "--device"),
    (["train", "recipes/fsq.toml", "--data", "vqtool:sample", "--out", "{t}/r", "--precision",
      "fp8"], "--precision"),
    (["train", "{t}/none.toml", "--data", "vqtool:sample", "--out", "{t}/r"], "none.toml"),
    (["train", "recipes/fsq.toml", "--data", "vqtool:sample", "--out", "{t}/r", "--set",
      "quantizer.kind=nope"], "quantizer"),
    (["inspect", "{t}/missing"], "missing"),
    (["inspect", "vqtool:sample", "--image-size", "64"], "--image-size"),
    (["convert", "taming", "{t}/missing.ckpt", "--out", "{t}/x.safetensors"], "missing.ckpt"),
    (["convert", "nofamily", "{t}/missing.ckpt", "--out", "{t}/x.safetensors"], "nofamily"),
    (["nope"], "No such command"),
]  # fmt: skip


@pytest.mark.parametrize("args,named", MISTAKES, ids=[" ".join(a[:2]) for a, _ in MISTAKES])
def test_a_user_mistake_is_one_line_and_exit_2(tmp_path, args, named):
    args = [a.replace("{t}", str(tmp_path)) for a in args]
    result = runner.invoke(app, args, input="[0]")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqtool: error:"), result.stderr
    assert named in lines[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only UserError is a user's mistake; an internal ValueError is not hidden."""
    import vqtool.report.inspect as inspect_module

    def broken(*args, **kwargs):
        raise ValueError("internal bug")

    monkeypatch.setattr(inspect_module, "inspect_path", broken)
    result = runner.invoke(app, ["inspect", "vqtool:sample"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_every_command_and_option_has_help_and_a_readme_mention():
    from pathlib import Path

    import typer.main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    root = typer.main.get_command(app)
    undocumented = []
    for name, command in root.commands.items():
        if not command.help or f"vqtool {name}" not in readme:
            undocumented.append(name)
        for param in command.params:
            if param.name == "help":
                continue
            if not getattr(param, "help", None):
                undocumented.append(f"{name} {param.name}: no help")
            long = [o for o in getattr(param, "opts", []) if o.startswith("--")]
            if long and not any(o in readme for o in long):
                undocumented.append(f"{name} {long[0]}: not in the README")
    assert undocumented == []


def test_recipes_ship_with_the_package_and_are_taken_by_name():
    import json

    from vqtool.training.recipe import RECIPES, load_recipe

    listed = runner.invoke(app, ["recipes", "--json"])
    assert listed.exit_code == 0
    names = {r["name"] for r in json.loads(listed.stdout)}
    assert {"fsq", "vqvae-ema", "prior-ar"} <= names
    assert RECIPES.parent.name == "vqtool"  # inside the package, not only in a checkout
    assert load_recipe("fsq").tokenizer.quantizer.kind == "fsq"


def test_unknown_recipe_and_layout_names_suggest_the_closest(tmp_path):
    result = runner.invoke(app, ["train", "fsqq", "--data", "x", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "(did you mean fsq?)" in result.stderr
    from vqtool.errors import ConfigError
    from vqtool.lm.layout import load_layout

    try:
        load_layout("liquidd")
    except ConfigError as exc:
        assert "(did you mean liquid?)" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown preset was accepted")


def test_recipes_lists_the_export_presets_with_their_sources():
    result = runner.invoke(app, ["recipes", "--layouts", "--json"])
    assert result.exit_code == 0, result.output
    found = {r["name"]: r["about"] for r in json.loads(result.stdout)}
    assert set(found) >= {"liquid", "emu3", "lwm", "class-prefix", "chameleon", "janus", "emu3.5"}
    assert "Liquid" in found["liquid"]


def test_help_texts_speak_of_their_own_command():
    """--image-size on encode, inspect and convert says what it does there (not decode's
    default), and decode's says decode's."""
    import re

    def help_of(command: str) -> str:  # the words, whatever the wrapping and box lines
        return re.sub(r"[\s│]+", " ", runner.invoke(app, [command, "--help"]).output)

    for command in ("encode", "inspect", "convert"):
        text = help_of(command)
        assert "native size" in text and "encoded at" not in text, command
    assert "the size the tokens were encoded at" in help_of("decode")


WIDE = {"COLUMNS": "250"}  # one line per option


def test_help_shows_what_to_type_and_every_default():
    """The type column says what to type (TEXT, INTEGER, [a|b], KEY=VALUE), nothing beside a
    flag, and defaults written for people appear (rich markup must not eat them)."""
    import re

    for command in ("encode", "export", "train", "decode", "inspect", "sample", "convert"):
        text = runner.invoke(app, [command, "--help"], env=WIDE).output
        assert "<" not in text and "list[" not in text, (command, text)
        for line in text.splitlines():
            if re.search(r"--(json|quiet|strict)\b", line):
                assert "TEXT" not in line and "bool" not in line, line

    def help_of(command: str) -> str:
        return re.sub(r"[\s│]+", " ", runner.invoke(app, [command, "--help"], env=WIDE).output)

    text = help_of("encode")
    assert "[default: (268435456 = 2^28)]" in text and "smart:MIN_PIXELS:MAX_PIXELS[:AREA]" in text
    assert "KEY=VALUE" in help_of("export") and "sha256 checked" in help_of("decode")


def test_recipes_lists_whole_sentences_with_tokens_and_bits():
    result = runner.invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    found = {r["name"]: r for r in json.loads(result.stdout)}
    assert found["fsq"]["tokens_per_image"] == 256 and found["fsq"]["bits_per_image"] == 2551
    assert found["fsq"]["about"].endswith("no codebook and no auxiliary loss.")
    assert "tokens_per_image" not in found["prior-ar"]  # a prior's layout is its data's
    marked = {name for name, r in found.items() if "recommended" in r}
    assert marked == {"fsq", "vqvae-ema", "prior-ar"}, marked
    table = runner.invoke(app, ["recipes"], env={"COLUMNS": "250"}).output
    assert "vqvae-ema *" in table and "* recommended" in table


@pytest.mark.slow
def test_the_gpu_benchmark_dry_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh, prepared for a GPU machine, runs end to end on the CPU in its
    dry-run mode (tiny inputs), so a lent GPU's minutes are not spent on a broken script."""
    import subprocess

    out = tmp_path / "gpu.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu.sh"), "--dry-run", "--json-out",
                           str(out)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["bundled fsq-f4-64", "LlamaGen VQ-16 (random)"]
    assert all(r["a"] > 0 and r["b"] > 0 and r["c"] > 0 for r in rows)
    assert "| b/a | b/c |" in proc.stdout


@pytest.mark.slow
def test_every_command_help_ends_with_an_example(tmp_path, monkeypatch):
    """Each command's --help ends with one example of the command, as sqlite-utils does;
    the encode, inspect and decode examples run as written (the Quickstart's path)."""
    import re

    for command in ("encode", "decode", "inspect", "export", "train", "sample", "convert",
                    "probe", "recipes"):  # fmt: skip
        text = runner.invoke(app, [command, "--help"], env=WIDE).output
        last = [line.strip() for line in text.splitlines() if line.strip()][-1]
        assert last.startswith(f"Example: vqtool {command} "), (command, last)
    monkeypatch.chdir(tmp_path)
    for command in ("encode", "inspect", "decode"):
        text = runner.invoke(app, [command, "--help"], env=WIDE).output
        example = re.search(r"Example: vqtool (.+)", text).group(1).split()
        result = runner.invoke(app, example)
        assert result.exit_code == 0, (example, result.output)


def test_json_output_is_alone_on_stdout_whatever_the_job_prints():
    """With --json, what a job's libraries write to descriptor 1 while it runs (Ray's
    raylet lines, a C++ log, a stray print) goes to stderr: stdout parses as JSON."""
    import subprocess
    import sys

    code = (
        "import os\n"
        "from vqtool.cli.common import print_json, stdout_for_json\n"
        "with stdout_for_json(True):\n"
        "    os.write(1, b'(raylet) A worker died\\n')\n"
        "    print('a stray print')\n"
        "print_json({'images': 16})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"images": 16}
    assert "(raylet) A worker died" in out.stderr and "a stray print" in out.stderr


@pytest.mark.slow
def test_quiet_prints_nothing_when_the_run_succeeds(image_shards, tmp_path):
    from test_pretrained_2025 import small_emu35_folder  # a public folder: encode has notes

    folder = small_emu35_folder(tmp_path / "Emu3.5-VisionTokenizer")
    tokens, lm = str(tmp_path / "tokens"), str(tmp_path / "lm")
    layout = tmp_path / "layout.toml"
    layout.write_text("eoi = 131072\n")
    loud = runner.invoke(app, ["encode", image_shards[0], "--tokenizer", str(folder), "--out",
                               tokens, "--resize", "area:1024:16", "--workers", "0"])  # fmt: skip
    assert loud.exit_code == 0 and "detected a emu3.5" in loud.stderr and "tokens" in loud.stdout
    for args in (
        ["encode", image_shards[1], "--tokenizer", str(folder), "--out", tokens + "2",
         "--resize", "area:1024:16", "--workers", "0", "--quiet"],
        ["export", tokens, "--layout", str(layout), "--format", "stream", "--out", lm, "-q"],
    ):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert (result.stdout, result.stderr) == ("", "")
