"""`vqtool probe`: iGPT's linear probe on a prior's frozen features."""

import json

import numpy as np
import pytest
from support.data import write_tokens
from typer.testing import CliRunner

from vqtool.cli.main import app

runner = CliRunner()


def labelled(folder, n, seed):
    """The label is written in a few positions: class c puts code c + 1 at positions 0-2;
    the other nine positions are noise from codes 3..15."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = rng.integers(3, 16, (n, 12))
    rows[:, :3] = labels[:, None] + 1
    return write_tokens(folder, rows, 16, [(3, 4)], labels=labels.tolist())


def test_probe_beats_the_majority_class_by_a_wide_margin(tmp_path):
    train, held = labelled(tmp_path / "train", 160, 0), labelled(tmp_path / "eval", 80, 1)
    args = ["train", "recipes/prior-ar.toml", "--data", str(train), "--out", str(tmp_path / "ar"),
            "--steps", "30", "--set", "prior.num_classes=0"]  # fmt: skip
    for item in ["prior.width=32", "prior.layers=2", "prior.heads=2", "data.workers=0"]:
        args += ["--set", item]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["probe", "--prior", str(tmp_path / "ar" / "prior.safetensors"),
                                 "--train", str(train), "--eval", str(held), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["classes"] == 2 and len(r["layer_accuracy"]) == 2 and r["eval_rows"] == 80
    assert r["accuracy"] > r["majority_accuracy"] + 0.3
    assert 0.4 < r["majority_accuracy"] < 0.6 and 0 <= r["unigram_accuracy"] <= 1
    text = runner.invoke(app, ["probe", "--prior", str(tmp_path / "ar" / "prior.safetensors"),
                               "--train", str(train), "--eval", str(held)])  # fmt: skip
    assert "majority class" in text.output and "unigram features" in text.output


def test_probe_needs_two_classes(tmp_path):
    rows = np.random.default_rng(0).integers(0, 16, (8, 12))
    one = write_tokens(tmp_path / "one", rows, 16, [(3, 4)], labels=[0] * 8)
    args = ["train", "recipes/prior-ar.toml", "--data", str(one), "--out", str(tmp_path / "ar"),
            "--steps", "1", "--set", "prior.width=32", "--set", "prior.heads=2",
            "--set", "data.workers=0"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["probe", "--prior", str(tmp_path / "ar" / "prior.safetensors"),
                                 "--train", str(one), "--eval", str(one)])  # fmt: skip
    assert result.exit_code == 2 and "at least two classes" in " ".join(result.output.split())


def test_one_flag_takes_a_quoted_pattern_of_token_files(tmp_path):
    """`--train 'tokens/part-*.parquet'` (or braces): every matching file, in order, as
    repeating the flag would give; a pattern matching nothing is one clear error."""
    from vqtool.tokens.reader import TokenDataError, TokenDataset

    rows = np.random.default_rng(0).integers(0, 16, (4, 12))
    for i in range(3):
        write_tokens(tmp_path / "tokens", rows + 0, 16, [(3, 4)], name=f"part-{i:06d}")
    by_glob = TokenDataset.open([str(tmp_path / "tokens" / "part-*.parquet")])
    by_braces = TokenDataset.open(str(tmp_path / "tokens" / "part-{000000..000002}.parquet"))
    by_flags = TokenDataset.open(sorted(str(p) for p in (tmp_path / "tokens").glob("*.parquet")))
    assert [f.path for f in by_glob.files] == [f.path for f in by_flags.files]
    assert [f.path for f in by_braces.files] == [f.path for f in by_flags.files]
    assert len(by_glob.files) == 3
    with pytest.raises(TokenDataError, match="matches no token file"):
        TokenDataset.open(str(tmp_path / "nothing-*.parquet"))
