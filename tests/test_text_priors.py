"""Text-conditioned priors: DALL-E's one stream of caption and image tokens (with its
1/8-7/8 loss), Muse-style masked prior with the caption as prefix, and
`vqtool sample --prompt`."""

import math

import numpy as np
import pytest
import torch
from support.data import write_text_tokenizer, write_tokens
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.priors.checkpoint import load_prior
from vqtool.priors.models import PriorConfig, build_prior
from vqtool.priors.recipe import load_recipe
from vqtool.priors.sampling import SamplingConfig, generate
from vqtool.priors.task import train_prior
from vqtool.priors.text import CaptionEncoder, TextConfig

runner = CliRunner()
WORDS = ["[UNK]", "a", "red", "fish", "blue", "sky", "green", "tree"]
CAPTIONS = ["a red fish", "blue sky", "a blue fish", "red sky"]
TINY = ["prior.width=64", "prior.layers=2", "prior.heads=2", "data.workers=0"]


@pytest.fixture
def captioned(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 16, (4, 12))
    folder = write_tokens(tmp_path / "tok", rows, 16, [(3, 4)], captions=CAPTIONS)
    text = write_text_tokenizer(tmp_path / "text.json", WORDS)
    return folder, rows, text


def test_dalle_loss_is_the_weighted_mean_of_each_modality():
    cfg = PriorConfig(kind="dalle", width=16, layers=1, heads=2, vocab_size=5,
                      tokens_per_image=3, text_vocab=4, text_length=3)  # fmt: skip
    model = build_prior(cfg)
    g = torch.Generator().manual_seed(0)
    text_logits = torch.randn(2, 3, 4, generator=g)
    image_logits = torch.randn(2, 3, 5, generator=g)
    text = torch.tensor([[1, 2, 4], [3, 4, 4]])  # 4 is the pad: 3 real text tokens in all
    tokens = torch.tensor([[0, 1, 2], [4, 3, 2]])
    loss, _ = model.loss_from((text_logits, image_logits), tokens, None, text)

    def nll(logits, target):  # -log softmax(logits)[target], by hand
        return math.log(sum(math.exp(v) for v in logits)) - logits[target]

    text_terms = [nll(text_logits[b, i].tolist(), int(text[b, i]))
                  for b in range(2) for i in range(3) if text[b, i] != 4]  # fmt: skip
    image_terms = [nll(image_logits[b, i].tolist(), int(tokens[b, i]))
                   for b in range(2) for i in range(3)]  # fmt: skip
    expected = sum(text_terms) / 3 / 8 + sum(image_terms) / 6 * 7 / 8
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_captions_become_padded_text_ids(tmp_path):
    text = write_text_tokenizer(tmp_path / "t.json", WORDS)
    enc = CaptionEncoder(TextConfig(tokenizer=text, max_length=4))
    ids = enc(["a red fish", None, "a red fish a blue sky"])
    assert ids.tolist() == [[1, 2, 3, 8], [8, 8, 8, 8], [1, 2, 3, 1]]
    strict = CaptionEncoder(TextConfig(tokenizer=text, max_length=4, truncation=False))
    with pytest.raises(ValueError, match="over text.max_length 4"):
        strict(["a red fish a blue sky"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dalle", "muse"])
def test_text_priors_overfit_captioned_grids_and_follow_the_prompt(captioned, tmp_path, kind):
    folder, rows, text = captioned
    r = load_recipe(
        f"recipes/prior-{kind}.toml",
        TINY + [f"text.tokenizer={text}", "text.max_length=4", "train.steps=250",
                "train.warmup=10", "data.batch_size=8", "train.lr=3e-3",
                "prior.caption_dropout=0.25", "eval.every=0"],
    )  # fmt: skip
    result = train_prior(r, [str(folder)], tmp_path / "run", eval_data=[str(folder)])
    e = result.eval
    # with its caption each grid is certain; without, which of the 4 grids it is (2 bits)
    # is left to guess: about 2 bits over 12 tokens
    assert e["bits_per_token"] < 0.05 and e["unconditioned_bits_per_token"] > 0.12
    # the caption-averaged prior (the four training captions, 2 bits of entropy) is worse
    # than the true caption by at most that entropy per image: 2 bits over 12 tokens
    gap = e["caption_averaged_bits_per_token"] - e["bits_per_token"]
    assert e["caption_mixture"] == 4 and abs(e["caption_entropy_bits"] - 2.0) < 1e-9
    assert -1e-9 <= gap <= e["caption_entropy_bits"] / 12 + 1e-9
    loaded = load_prior(tmp_path / "run" / "prior.safetensors")
    enc = CaptionEncoder(TextConfig(tokenizer=text, max_length=4))
    s = SamplingConfig(top_k=1, steps=4)
    out = generate(loaded.model, 4, None, s, torch.Generator().manual_seed(0), "cpu",
                   text=enc(CAPTIONS))  # fmt: skip
    assert np.array_equal(out.numpy(), rows)  # each caption gives its grid
    g = torch.Generator().manual_seed(1)
    unseen = generate(loaded.model, 2, None, SamplingConfig(steps=4), g, "cpu",
                      text=enc(["green tree"] * 2))  # fmt: skip
    assert unseen.shape == (2, 12) and 0 <= int(unseen.min()) and int(unseen.max()) < 16
    # guidance scale 0 is the unconditional model
    plain = generate(loaded.model, 2, None, SamplingConfig(top_k=1, steps=4),
                     torch.Generator().manual_seed(2), "cpu")  # fmt: skip
    guided = generate(loaded.model, 2, None, SamplingConfig(top_k=1, steps=4, cfg_scale=0.0),
                      torch.Generator().manual_seed(2), "cpu", text=enc(CAPTIONS[:2]))  # fmt: skip
    assert torch.equal(plain, guided)


@pytest.mark.slow
def test_sample_with_prompts_and_the_mistakes(tmp_path):
    tokens = tmp_path / "tokens"  # the bundled sample's captions: fishes, monuments, others
    assert runner.invoke(app, ["encode", "vqtool:sample", "--out", str(tokens), "--workers", "0",
                               "-q"]).exit_code == 0  # fmt: skip
    text = write_text_tokenizer(tmp_path / "t.json", ["[UNK]", "fishes", "monuments", "others"])
    args = ["train", "recipes/prior-muse.toml", "--data", str(tokens), "--out",
            str(tmp_path / "run"), "--steps", "3", "--set", f"text.tokenizer={text}"]  # fmt: skip
    for item in TINY:
        args += ["--set", item]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    prior = str(tmp_path / "run" / "prior.safetensors")
    report = runner.invoke(app, ["inspect", prior, "--json"])
    assert report.exit_code == 0 and '"max_length": 16' in report.stdout  # the recorded text
    base = ["sample", "--prior", prior, "-n", "2", "--seed", "5", "-q"]
    first = runner.invoke(app, [*base, "--prompt", "fishes", "--out", str(tmp_path / "a.png")])
    again = runner.invoke(app, [*base, "--prompt", "fishes", "--out", str(tmp_path / "b.png")])
    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    (tmp_path / "prompts.txt").write_text("fishes\nothers\n")
    listed = runner.invoke(app, [*base, "--prompts", str(tmp_path / "prompts.txt"),
                                 "--cfg-scale", "2", "--out", str(tmp_path / "c.png")])  # fmt: skip
    assert listed.exit_code == 0, listed.output
    (tmp_path / "empty.txt").write_text("\n\n")
    other = write_text_tokenizer(tmp_path / "other.json", ["[UNK]", "fishes", "x"])
    nope = tmp_path / "nope.json"
    missing = ["train", "recipes/prior-dalle.toml", "--data", str(tokens), "--out",
               str(tmp_path / "r2"), "--set", f"text.tokenizer={nope}"]  # fmt: skip
    for argv, says in [
        ([*base, "--prompts", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "d.png")],
         "holds no captions"),
        ([*base, "--prompt", "x", "--text-tokenizer", other, "--out", str(tmp_path / "e.png")],
         "is not the text tokenizer"),
        (missing, "the recipe's text.tokenizer = " + str(nope) + ": no such file"),
    ]:  # fmt: skip
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert says in " ".join(result.output.split()) and "Traceback" not in result.output


def test_caption_from_names_where_captions_are_and_is_checked_at_start(tmp_path):
    import json

    import pyarrow.parquet as pq
    from support.data import image_bytes, write_shard

    with_json = write_shard(tmp_path / "a.tar", [
        (f"k{i}", {"png": image_bytes(i), "txt": b"the txt caption",
                   "json": json.dumps({"category": "animals/fish", "x": {"y": "deep"}}).encode()})
        for i in range(3)
    ])  # fmt: skip
    without = write_shard(tmp_path / "b.tar", [("k9", {"png": image_bytes(9)})])
    for how, expected in [("auto", "the txt caption"), ("txt", "the txt caption"),
                          ("json:category", "animals/fish"), ("json:x.y", "deep")]:  # fmt: skip
        out = tmp_path / how.replace(":", "-")
        r = runner.invoke(app, ["encode", with_json, "--caption-from", how, "--out", str(out),
                                "--workers", "0", "-q"])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert pq.read_table(out / "part-000000.parquet")["caption"].to_pylist() == [expected] * 3
    r = runner.invoke(app, ["encode", with_json, without, "--caption-from", "json:category",
                            "--out", str(tmp_path / "bad"), "--workers", "0"])  # fmt: skip
    assert r.exit_code == 2 and "b.tar" in r.output and "no such caption" in r.output
    assert not (tmp_path / "bad").exists()  # said before anything was written
    r = runner.invoke(app, ["encode", with_json, "--caption-from", "yaml:x", "--out",
                            str(tmp_path / "x")])  # fmt: skip
    assert r.exit_code == 2 and "--caption-from 'yaml:x'" in r.output
