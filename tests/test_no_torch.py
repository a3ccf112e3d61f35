"""The commands that run no network import no torch (each a whole `vqtool` process in
which torch cannot be imported), so a user pays no seconds of torch start-up for them:
`inspect` of a token folder, of an export or of image shards, and `recipes`. (`export`:
tests/test_export.py.)"""

import json

import pytest
from support.processes import run_without_torch
from typer.testing import CliRunner

from vqtool.assets import list_recipes, recipe_sizes
from vqtool.cli.main import app
from vqtool.training.recipe import recipe_tokens

runner = CliRunner()


@pytest.mark.slow
def test_inspect_of_a_token_folder_imports_no_torch_and_reports_the_same(sample_tokens):
    done = run_without_torch("inspect", str(sample_tokens), "--json")
    assert done.returncode == 0, done.stderr
    alone = json.loads(done.stdout)
    here = json.loads(runner.invoke(app, ["inspect", str(sample_tokens), "--json"]).stdout)
    assert alone == here and alone["usage"]["used"] > 0 and alone["top_codes"]
    shown = run_without_torch("inspect", str(sample_tokens))
    assert shown.returncode == 0 and "codebook usage" in shown.stdout


@pytest.mark.slow
def test_inspect_of_image_shards_and_recipes_import_no_torch():
    for args in (["inspect", "vqtool:sample", "--json"], ["recipes", "--json"],
                 ["recipes", "--layouts"]):  # fmt: skip
        done = run_without_torch(*args)
        assert done.returncode == 0, (args, done.stderr)


def test_each_tokenizer_recipe_states_the_tokens_its_model_gives():
    """`vqtool recipes` reads tokens per image from each recipe's `# Tokens:` line; the
    line must be what the recipe's model builds."""
    sizes = recipe_sizes()
    for name, _ in list_recipes():
        built = recipe_tokens(name)
        if built is None:  # a prior: its layout comes from its data
            assert name not in sizes
            continue
        assert sizes[name] == (built[0], round(built[1])), name
