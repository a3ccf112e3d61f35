"""The next-scale prior (`prior-var`) over pyramid rows: block-causal, exact held-out
likelihood, scale-by-scale sampling with guidance, trained by the one training loop."""

import json

import numpy as np
import pytest
import torch
from support.data import write_tokens
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.errors import ConfigError
from vqtool.priors.models import PriorConfig, build_prior
from vqtool.priors.sampling import SamplingConfig, generate

runner = CliRunner()
SCALES = [1, 2, 3]  # 14 tokens a row


def tiny(classes=0):
    torch.manual_seed(0)
    cfg = PriorConfig(kind="var", width=32, layers=2, heads=2, num_classes=classes,
                      vocab_size=16, tokens_per_image=14, scales=SCALES)  # fmt: skip
    return build_prior(cfg).eval()


def test_a_scale_sees_the_coarser_scales_and_not_its_own_or_finer():
    model = tiny()
    tokens = torch.randint(0, 16, (1, 14), generator=torch.Generator().manual_seed(0))
    base = model(tokens)
    same_scale = tokens.clone()
    same_scale[0, 2] = (same_scale[0, 2] + 1) % 16  # scale 1 (2x2: ids 1..4), its 2nd
    out = model(same_scale)
    assert torch.allclose(out[0, :5], base[0, :5], atol=1e-6)  # scales 0 and 1: unchanged
    assert not torch.allclose(out[0, 5:], base[0, 5:])  # scale 2 reads scale 1
    last = tokens.clone()
    last[0, 13] = (last[0, 13] + 1) % 16  # the finest scale is never an input
    assert torch.allclose(model(last), base, atol=1e-6)


def test_held_out_bits_are_the_exact_likelihood_of_the_scales():
    model = tiny()
    tokens = torch.randint(0, 16, (3, 14), generator=torch.Generator().manual_seed(1))
    logp = torch.log_softmax(model(tokens).double(), -1)
    want = -logp.gather(2, tokens[..., None]).squeeze(2).sum(1) / np.log(2)
    assert torch.allclose(model.nll_bits(tokens).double(), want, atol=1e-4)


def test_sampling_goes_scale_by_scale_with_guidance():
    model = tiny(classes=3)
    g = torch.Generator().manual_seed(0)
    rows = generate(model, 4, torch.tensor([0, 1, 2, 0]), SamplingConfig(cfg_scale=2.0), g, "cpu")
    assert rows.shape == (4, 14) and int(rows.max()) < 16
    with pytest.raises(ConfigError, match="needs pyramid tokens"):
        build_prior(PriorConfig(kind="var", width=32, layers=1, heads=2, vocab_size=16,
                                tokens_per_image=16, scales=None))  # fmt: skip


@pytest.mark.slow
def test_prior_var_trains_on_pyramid_rows_and_reports_held_out_bits(tmp_path):
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 4, (64, 1))  # finer scales follow the coarse token: learnable
    rows = np.concatenate([coarse, np.repeat(coarse, 4, 1), np.repeat(coarse, 9, 1)], 1)
    data = write_tokens(tmp_path / "pyr", rows, 16, [(1, 1), (2, 2), (3, 3)])
    sets = ["prior.width=32", "prior.layers=2", "prior.heads=2", "data.workers=0",
            "train.steps=60", "eval.every=60", "eval.holdout=0.25"]  # fmt: skip
    args = ["train", "prior-var", "--data", str(data), "--out", str(tmp_path / "run"), "--json"]
    res = runner.invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["kind"] == "prior" and report["eval"]["held_out"]
    # the finer scales repeat the coarse token: far below the uniform 4 bits per token
    assert report["eval"]["bits_per_token"] < 1.5
