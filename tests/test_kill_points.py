"""SIGKILL between writing a file and renaming it, at every kind of write vqtool does: the
temporary `NAME.<pid>.tmp` stays behind, and the next run into the same place removes it and
finishes the job."""

import json
from pathlib import Path

import pytest
from support.processes import Forks
from typer.testing import CliRunner

from vqtool.cli.main import app

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_TRAIN = [
    "data.image_size=32", "data.batch_size=2", "data.workers=0", "data.cache_mb=0",
    "train.steps=2", "train.warmup=1", "eval.every=0",
]  # fmt: skip

# patches os.replace and os.link in a run: the rename (or the link of a conditional
# create, as encode.json is written) onto a file named like PATTERN never happens, the
# process is killed with its temporary file written
KILLED_AT = """
import fnmatch, os, signal
def killing(real):
    def patched(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(str(dst)), PATTERN):
            assert os.path.exists(src), src
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return patched
os.replace, os.link = killing(os.replace), killing(os.link)
"""


def killed_at_each(cases: list[tuple[str, list[str]]], tmp_path: Path) -> None:
    """Run each (pattern, argv), each killed at its rename (forks of one warm process)."""
    forks, err = Forks.shared(), tmp_path / "killed-err.txt"
    for pattern, argv in cases:
        forks.start(argv, err, prelude=f"PATTERN = {pattern!r}\n" + KILLED_AT)
        code = forks.exit_code(300)
        assert code == -9, f"never reached a rename onto {pattern}: {err.read_text()}"


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


@pytest.mark.slow
def test_encode_killed_at_each_rename(tmp_path):
    points = ["encode.json", "part-*.parquet", "part-*.done.json"]

    def argv(i: int) -> list[str]:
        return ["encode", "vqtool:sample", "--out", str(tmp_path / f"t{i}"), "--workers", "0"]

    killed_at_each([(point, argv(i)) for i, point in enumerate(points)], tmp_path)
    for i, point in enumerate(points):
        assert leftovers(tmp_path / f"t{i}"), f"the kill at {point} left a temporary file"
        result = ok(argv(i))
        assert leftovers(tmp_path / f"t{i}") == [], point
        assert result["tasks_done"] == 1 and result["images"] > 0


@pytest.mark.slow
def test_export_killed_at_each_rename(tokens, tmp_path):
    (tmp_path / "codes.toml").write_text('name = "codes"\nimage_offset = 0\n')
    points = ["export.json", "*.bin", "*.docs.parquet", "*.done.json", "embeddings.safetensors"]

    def argv(i: int) -> list[str]:
        out = tmp_path / f"ex{i}"
        return ["export", str(tokens), "--layout", str(tmp_path / "codes.toml"), "--format",
                "megatron", "--out", str(out),
                "--embeddings", str(out / "embeddings.safetensors")]  # fmt: skip

    killed_at_each([(point, argv(i)) for i, point in enumerate(points)], tmp_path)
    for i, point in enumerate(points):
        assert leftovers(tmp_path / f"ex{i}"), point
        result = ok(argv(i))
        assert leftovers(tmp_path / f"ex{i}") == [] and result["documents"] > 0, point


@pytest.mark.slow
def test_train_killed_at_each_rename(tmp_path):
    points = ["recipe.json", "tokenizer.safetensors", "state.next.safetensors", "state.json"]

    def argv(i: int) -> list[str]:
        sets = [a for s in TINY_TRAIN for a in ("--set", s)]
        return ["train", str(RECIPES / "fsq.toml"), "--data", "vqtool:sample", "--out",
                str(tmp_path / f"r{i}"), *sets]  # fmt: skip

    killed_at_each([(point, argv(i)) for i, point in enumerate(points)], tmp_path)
    for i, point in enumerate(points):
        run = tmp_path / f"r{i}"
        assert leftovers(run), point
        resume = ["--resume"] if (run / "state.json").exists() else []
        result = ok([*argv(i), *resume])
        assert leftovers(run) == [] and result["steps"] == 2, point
        assert result["swept"] and all(name.endswith(".tmp") for name in result["swept"])


@pytest.mark.slow
def test_decode_killed_at_a_rename(tokens, tmp_path):
    pictures = tmp_path / "pictures"
    argv = ["decode", str(tokens), "--out", str(pictures), "--limit", "2"]
    killed_at_each([("*.png", argv)], tmp_path)
    assert leftovers(pictures)
    ok(argv)
    assert leftovers(pictures) == [] and len(list(pictures.glob("*.png"))) == 2
