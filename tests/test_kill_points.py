"""SIGKILL between writing a file and renaming it, at every kind of write vqtool does: the
temporary `NAME.<pid>.tmp` stays behind, and the next run into the same place removes it and
finishes the job."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vqtool.cli.main import app

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_TRAIN = [
    "data.image_size=32", "data.batch_size=2", "data.workers=0", "data.cache_mb=0",
    "train.steps=2", "train.warmup=1", "eval.every=0",
]  # fmt: skip

# runs vqtool with os.replace patched: the rename onto a file named like argv[1] never happens,
# the process is killed with its temporary file written
KILLED_AT = """
import fnmatch, os, signal, sys
real, pattern = os.replace, sys.argv[1]
def replace(src, dst, *args, **kwargs):
    if fnmatch.fnmatch(os.path.basename(str(dst)), pattern):
        assert os.path.exists(src), src
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from vqtool.cli.main import app
sys.argv = ["vqtool", *sys.argv[2:]]
app()
"""


def killed_at(pattern: str, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_AT, pattern, *argv],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, f"never reached a rename onto {pattern}: {proc.stderr}"


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


def ok(argv: list[str]) -> dict:
    result = runner.invoke(app, [*argv, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "tokens"
    ok(["encode", "vqtool:sample", "--out", str(out), "--workers", "0"])
    return out


@pytest.mark.parametrize("point", ["encode.json", "part-*.parquet", "part-*.done.json"])
def test_encode_killed_at_a_rename(point, tmp_path):
    out = tmp_path / "tokens"
    argv = ["encode", "vqtool:sample", "--out", str(out), "--workers", "0"]
    killed_at(point, argv)
    assert leftovers(out), "the kill left a temporary file"
    result = ok(argv)
    assert leftovers(out) == []
    assert result["tasks_done"] == 1 and result["images"] > 0


@pytest.mark.parametrize(
    "point", ["export.json", "*.bin", "*.docs.parquet", "*.done.json", "embeddings.safetensors"]
)
def test_export_killed_at_a_rename(point, tokens, tmp_path):
    (tmp_path / "codes.toml").write_text('name = "codes"\nimage_offset = 0\n')
    out = tmp_path / "ex"
    argv = ["export", str(tokens), "--layout", str(tmp_path / "codes.toml"), "--format",
            "megatron", "--out", str(out),
            "--embeddings", str(out / "embeddings.safetensors")]  # fmt: skip
    killed_at(point, argv)
    assert leftovers(out)
    result = ok(argv)
    assert leftovers(out) == [] and result["documents"] > 0


@pytest.mark.parametrize(
    "point", ["recipe.json", "tokenizer.safetensors", "state.next.safetensors", "state.json"]
)
def test_train_killed_at_a_rename(point, tmp_path):
    run = tmp_path / "run"
    argv = ["train", str(RECIPES / "fsq.toml"), "--data", "vqtool:sample", "--out", str(run),
            *[a for s in TINY_TRAIN for a in ("--set", s)]]  # fmt: skip
    killed_at(point, argv)
    assert leftovers(run)
    resume = ["--resume"] if (run / "state.json").exists() else []
    result = ok([*argv, *resume])
    assert leftovers(run) == [] and result["steps"] == 2
    assert result["swept"] and all(name.endswith(".tmp") for name in result["swept"])


def test_decode_killed_at_a_rename(tokens, tmp_path):
    pictures = tmp_path / "pictures"
    argv = ["decode", str(tokens), "--out", str(pictures), "--limit", "2"]
    killed_at("*.png", argv)
    assert leftovers(pictures)
    ok(argv)
    assert leftovers(pictures) == [] and len(list(pictures.glob("*.png"))) == 2
