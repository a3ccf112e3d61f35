"""Priors over token rows: AR (KV cache), MaskGIT (schedule, decoding), RQ-transformer;
training them with the one loop, and `vqtool sample`."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import make_tokenizer, write_tokens
from support.processes import Forks
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models.transformer import Transformer
from vqtool.priors.checkpoint import load_prior
from vqtool.priors.models import PriorConfig, build_prior
from vqtool.priors.recipe import load_recipe
from vqtool.priors.sampling import (
    SamplingConfig,
    filter_logits,
    generate,
    mask_schedule,
)
from vqtool.priors.task import train_prior
from vqtool.training.loop import RunError
from vqtool.utils import ConfigError

runner = CliRunner()
RECIPES = "recipes"
TINY = ["prior.width=32", "prior.layers=2", "prior.heads=2", "data.workers=0"]


def tiny_prior(kind="ar", vocab=16, tokens=12, depth=1, classes=0, attention="sdpa"):
    cfg = PriorConfig(
        kind=kind, width=32, layers=2, heads=2, depth_layers=1, num_classes=classes,
        vocab_size=vocab, tokens_per_image=tokens, depth=depth, attention=attention,
    )  # fmt: skip
    return build_prior(cfg).eval()


# ----------------------------------------------------------------------------- MaskGIT


def test_mask_schedule_gives_exact_cosine_counts():
    # floor(16 cos(pi/2 s/4)) for s = 1..4: 14.78 -> 14, 11.31 -> 11, 6.12 -> 6, 0
    assert mask_schedule(16, 4) == [14, 11, 6, 0]
    assert mask_schedule(256, 8) == [
        math.floor(256 * math.cos(math.pi / 2 * s / 8) + 1e-9) for s in range(1, 9)
    ]
    # at least one new token per step even when the cosine is flat
    assert mask_schedule(4, 4) == [3, 2, 1, 0]
    with pytest.raises(ConfigError):
        mask_schedule(4, 5)


def test_maskgit_decoding_fills_every_position_in_t_steps():
    model = tiny_prior("maskgit", tokens=16)
    history: list = []
    g = torch.Generator().manual_seed(0)
    out = model.sample(3, None, SamplingConfig(steps=4), g, torch.device("cpu"), history)
    assert out.shape == (3, 16)
    assert int((out == model.mask_id).sum()) == 0 and int(out.max()) < 16
    assert history == [[c] * 3 for c in [14, 11, 6, 0]]  # exactly the schedule, per row


@pytest.mark.parametrize("steps", [4, 2])
def test_maskgit_parallel_decoding_likelihood_is_normalized(steps):
    """Summed over every possible row, 2^-nll is 1: a real likelihood, comparable to AR."""
    torch.manual_seed(0)
    model = tiny_prior("maskgit", vocab=3, tokens=4)
    rows = torch.cartesian_prod(*[torch.arange(3)] * 4)  # all 81 rows
    total = 0.0
    for row in rows:
        g = torch.Generator().manual_seed(5)  # the same decoding order for every row
        total += float(2.0 ** -model.nll_bits(row[None], None, g, steps=steps))
    assert total == pytest.approx(1.0, abs=1e-4)


def test_maskgit_training_mask_follows_the_cosine_ratio():
    model = tiny_prior("maskgit", tokens=100)
    g = torch.Generator().manual_seed(0)
    mask = model.random_mask(torch.zeros(4000, 100, dtype=torch.long), g)
    ratio = mask.float().mean(1)
    assert mask.sum(1).min() >= 1
    # E[cos(pi/2 r)] for r ~ U(0,1) is 2/pi
    assert float(ratio.mean()) == pytest.approx(2 / math.pi, abs=0.02)


# ----------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("attention", ["sdpa", "manual"])
def test_kv_cache_gives_the_logits_of_a_full_forward(attention):
    torch.manual_seed(0)
    model = tiny_prior("ar", vocab=16, tokens=12, classes=3, attention=attention)
    tokens = torch.randint(0, 16, (2, 12))
    labels = torch.tensor([1, 2])
    full = model(tokens, labels)
    start = model.cond(model.cond_index(labels, 2, "cpu"))[:, None] + model.pos[:, :1]
    cache = model.net.new_cache(2, 12, start)
    steps = [model.head(model.net(start, causal=True, cache=cache))]
    # a 3-token chunk (prefill with an offset mask), then one token at a time
    steps.append(model.head(model.net(model.embed(tokens[:, :3], 1), causal=True, cache=cache)))
    for i in range(3, 11):
        steps.append(model.head(model.net(model.embed(tokens[:, i : i + 1], i + 1), True, cache)))
    incremental = torch.cat(steps, dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_manual_and_sdpa_attention_agree():
    torch.manual_seed(0)
    a = Transformer(32, 2, 4, attention="sdpa")
    b = Transformer(32, 2, 4, attention="manual")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(a(x, causal=True), b(x, causal=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["ar", "rq"])
def test_sampling_with_and_without_cache_is_identical(kind):
    torch.manual_seed(0)
    model = tiny_prior(kind, vocab=16, tokens=12, depth=3 if kind == "rq" else 1)
    rows = []
    for cache in (True, False):
        g = torch.Generator().manual_seed(7)
        rows.append(generate(model, 2, None, SamplingConfig(use_cache=cache), g, "cpu"))
    assert torch.equal(rows[0], rows[1])


def test_contextual_rq_is_bidirectional_over_positions_and_causal_over_depth():
    model = tiny_prior("contextual_rq", tokens=12, depth=3)  # 4 positions x depth 3
    tokens = torch.randint(0, 16, (1, 12), generator=torch.Generator().manual_seed(0))
    masked = tokens.clone()
    masked[0, :3] += 16  # position 0 masked (ids shifted by V), as in training
    base = model(masked)
    later = masked.clone()
    later[0, 9] = (later[0, 9] + 1) % 16  # position 3 (visible), depth 0
    # position 0's logits change: the spatial attention sees later positions
    assert not torch.allclose(model(later)[0, :3], base[0, :3])
    deeper = masked.clone()
    deeper[0, 2] = 16 + (tokens[0, 2] + 1) % 16  # position 0, depth 2: another true code
    out = model(deeper)
    # its depths 0 and 1 do not see depth 2 (the depth transformer is causal) ...
    assert torch.allclose(out[0, :2], base[0, :2], atol=1e-6)
    # ... while depth 2's own prediction is unchanged too, and nothing leaks through the
    # spatial input of a masked position to the others
    assert torch.allclose(out[0, 3:], base[0, 3:], atol=1e-6)
    visible = tokens.clone()
    visible[0, 2] = (visible[0, 2] + 1) % 16  # position 0 visible: others see its codes
    assert not torch.allclose(model(visible)[0, 3:], model(tokens)[0, 3:])


def test_draft_and_revise_fills_every_position_and_depth():
    model = tiny_prior("contextual_rq", tokens=12, depth=3)
    history: list = []
    s = SamplingConfig(steps=3, revise_rounds=2, revise_groups=2)
    out = generate(model, 2, None, s, torch.Generator().manual_seed(0), "cpu", history)
    assert out.shape == (2, 12) and int(out.min()) >= 0 and int(out.max()) < 16
    assert [h[0] for h in history] == mask_schedule(4, 3)  # positions still masked per step
    again = generate(model, 2, None, s, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(out, again)


def test_rq_prior_predicts_depth_codes_from_the_spatial_context():
    torch.manual_seed(0)
    model = tiny_prior("rq", vocab=16, tokens=12, depth=3)
    tokens = torch.randint(0, 16, (2, 12))
    logits = model(tokens)
    assert logits.shape == (2, 12, 16)
    # changing position 2's codes changes nothing at positions 0..2, only later ones
    other = tokens.clone()
    other[:, 6:9] = (other[:, 6:9] + 1) % 16
    changed = (model(other) - logits).abs().amax(dim=(0, 2)) > 1e-6
    assert not changed[:7].any()  # depth 0 of position 2 does not see position 2's codes
    assert changed[7:].any()


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, 2, None)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, None, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, None, 0.85)).tolist() == [[False, False, False, True]]


# ----------------------------------------------------------------------------- training


def handful(tmp_path, depth=1, labels=None):
    """Four random 12-token rows: a 3x4 grid, or a 2x2 grid of depth 3."""
    rows = np.random.default_rng(0).integers(0, 16, size=(4, 12))
    grids = [(2, 2)] if depth == 3 else [(3, 4)]
    return write_tokens(tmp_path / "tok", rows, 16, grids, depth=depth, labels=labels), rows


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ar", "maskgit", "rq", "contextual_rq"])
def test_tiny_prior_overfits_a_handful_of_grids(tmp_path, kind):
    # one label per row: given its label, each row is fully determined
    residual = kind in ("rq", "contextual_rq")
    folder, rows = handful(tmp_path, depth=3 if residual else 1, labels=[0, 1, 2, 3])
    r = load_recipe(
        f"{RECIPES}/prior-{kind.replace('_', '-')}.toml",
        TINY + ["prior.width=64", "train.steps=200", "train.warmup=10", "data.batch_size=8",
                "data.shuffle_buffer=4", "train.lr=3e-3", "prior.class_dropout=0.0"],
    )  # fmt: skip
    result = train_prior(r, [str(folder)], tmp_path / "run", eval_data=[str(folder)])
    assert result.train["bits_per_token"] < 0.1, result.train  # one (randomly masked) batch
    e = result.eval
    assert e["unigram_bits"] == pytest.approx(
        float(-(p := np.bincount(rows.ravel()) / rows.size)[p > 0] @ np.log2(p[p > 0]))
    )
    assert e["bits_per_token"] < 0.05 < e["unigram_bits"]  # likelihood of memorized rows
    loaded = load_prior(tmp_path / "run" / "prior.safetensors")
    assert loaded.config.kind == kind and loaded.config.vocab_size == 16
    # sampling with a label reproduces that label's memorized grid
    g = torch.Generator().manual_seed(0)
    s = SamplingConfig(top_k=1, steps=4)
    out = generate(loaded.model, 4, torch.arange(4), s, g, "cpu")
    assert np.array_equal(out.numpy(), rows)


def test_class_conditional_prior_reads_labels_and_guides(tmp_path):
    folder, _ = handful(tmp_path, labels=[0, 1, 0, 1])
    r = load_recipe(f"{RECIPES}/prior-ar.toml", TINY + ["train.steps=2"])
    result = train_prior(r, [str(folder)], tmp_path / "run")
    loaded = load_prior(result.checkpoint)
    assert loaded.config.num_classes == 2
    g = torch.Generator().manual_seed(0)
    s = SamplingConfig(cfg_scale=3.0)
    out = generate(loaded.model, 2, torch.tensor([0, 1]), s, g, "cpu")
    assert out.shape == (2, 12)


def test_prior_training_resumes(tmp_path):
    folder, _ = handful(tmp_path)
    flat = ["train.min_lr_ratio=1.0"]  # a schedule that does not depend on train.steps
    r = load_recipe(f"{RECIPES}/prior-maskgit.toml", TINY + flat + ["train.steps=3"])
    train_prior(r, [str(folder)], tmp_path / "run")
    r6 = load_recipe(f"{RECIPES}/prior-maskgit.toml", TINY + flat + ["train.steps=6"])
    result = train_prior(r6, [str(folder)], tmp_path / "run", resume=True)
    assert (result.start_step, result.steps) == (3, 6)
    # the resumed run ends where an uninterrupted 6-step run ends
    whole = train_prior(r6, [str(folder)], tmp_path / "whole")
    resumed = dict(result.model.state_dict())
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed[name], value), name


def test_eval_holdout_keeps_a_fixed_share_of_rows_out_of_training(tmp_path):
    """`eval.holdout = F` splits --data by a hash of each key: training (cached or
    streamed) never sees the held rows, evaluation sees only them, and the figure is
    called held out. With --eval-data too it is refused."""
    from vqtool.priors.data import TokenStream, cache_rows, held_out

    rows = np.random.default_rng(0).integers(0, 16, size=(40, 12))
    folder = write_tokens(tmp_path / "tok", rows, 16, [(3, 4)])
    keys = [f"part-000000-{i}" for i in range(40)]
    held = held_out(keys, 0.25)
    assert 4 <= held.sum() <= 16 and np.array_equal(held, held_out(keys[::-1], 0.25)[::-1])
    cached, _, _ = cache_rows([str(folder)], False, 1 << 20, holdout=0.25)
    assert {tuple(r) for r in cached} == {tuple(r) for r in rows[~held]}
    stream = iter(TokenStream([str(folder)], shuffle_buffer=1, holdout=0.25))
    streamed = {tuple(next(stream)["tokens"]) for _ in range(int((~held).sum()))}
    assert streamed == {tuple(r) for r in rows[~held]}
    r = load_recipe(f"{RECIPES}/prior-ar.toml", TINY + ["train.steps=2", "eval.holdout=0.25"])
    result = train_prior(r, [str(folder)], tmp_path / "run")
    assert result.eval["held_out"] is True and result.eval["rows"] == held.sum()
    with pytest.raises(RunError, match="give one"):
        train_prior(r, [str(folder)], tmp_path / "both", eval_data=[str(folder)])
    with pytest.raises(ConfigError, match="eval.holdout"):
        load_recipe(f"{RECIPES}/prior-ar.toml", ["eval.holdout=1.5"])


def test_rq_prior_refuses_tokens_without_depth(tmp_path):
    folder, _ = handful(tmp_path)
    r = load_recipe(f"{RECIPES}/prior-rq.toml", TINY)
    with pytest.raises(ConfigError, match="depth >= 2"):
        train_prior(r, [str(folder)], tmp_path / "run")


# ----------------------------------------------------------------------------- vqtool sample


def readme_prior_example() -> list[list[str]]:
    """The README's "Train then sample" commands, as argument lists."""
    import re
    import shlex

    from test_readme import README

    block = re.search(r"```bash\n(vqtool encode vqtool:sample --out tokens/\n.*?)```",
                      README.read_text(), flags=re.S).group(1)  # fmt: skip
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's prior example run as written in a fresh folder, with a tiny model and
    4 steps: tokens of the bundled sample, an AR prior evaluated on a held-out quarter."""
    import os

    root = tmp_path_factory.mktemp("prior")
    commands = readme_prior_example()
    assert [c[0] for c in commands] == ["encode", "train", "sample", "inspect"]
    tiny = ["--steps", "4", *[a for s in TINY for a in ("--set", s)]]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for argv in commands[:2]:
            if argv[0] == "train":
                argv = [a if a != "200" else "4" for a in argv] + tiny[2:]
                argv[1] = str(Path(__file__).resolve().parents[1] / argv[1])
            if argv[0] == "encode":
                argv += ["--workers", "0"]
            result = runner.invoke(app, argv)
            assert result.exit_code == 0, (argv, result.output)
        result = runner.invoke(app, commands[2])  # sample, as written
        assert result.exit_code == 0 and (root / "samples.png").is_file(), result.output
    finally:
        os.chdir(cwd)
    return root, root / "tokens", root / "runs" / "ar" / "prior.safetensors"


@pytest.mark.slow
def test_vqtool_sample_writes_pngs_and_tokens(trained, tmp_path):
    root, tokens, prior = trained
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["sample", "--prior", str(prior), "-n", "4", "--out", str(out), "--json",
              "--tokens-out", str(tmp_path / "sampled.parquet"), "--top-k", "50"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert Image.open(out).size == (2 * 64 + 2, 2 * 64 + 2)
    assert r["n"] == 4 and r["tokens_per_s"] > 0
    shard = runner.invoke(app, ["inspect", str(tmp_path / "sampled.parquet"), "--json"])
    assert json.loads(shard.stdout)["rows"] == 4
    decoded = runner.invoke(app, ["decode", str(tmp_path / "sampled.parquet"), "--out",
                                  str(tmp_path / "again")])  # fmt: skip
    assert decoded.exit_code == 0, decoded.output
    folder = runner.invoke(app, ["sample", "--prior", str(prior), "-n", "2",
                                 "--out", str(tmp_path / "each")])  # fmt: skip
    assert folder.exit_code == 0, folder.output
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [
        "sample-0000.png", "sample-0001.png"
    ]  # fmt: skip


@pytest.mark.slow
def test_same_seed_same_images(trained, tmp_path):
    _, _, prior = trained
    outs = []
    for i, seed in enumerate([3, 3, 4]):
        out = tmp_path / f"s{i}.png"
        result = runner.invoke(
            app,
            ["sample", "--prior", str(prior), "-n", "2", "--seed", str(seed), "--out", str(out)],
        )
        assert result.exit_code == 0, result.output
        outs.append(np.array(Image.open(out)))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_sample_refuses_a_tokenizer_the_prior_was_not_trained_on(trained, tmp_path):
    _, _, prior = trained
    other = make_tokenizer(tmp_path / "other.safetensors")
    result = runner.invoke(
        app, ["sample", "--prior", str(prior), "--tokenizer", other, "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2
    assert "was trained on tokens encoded with tokenizer" in result.stderr
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["sample", "--prior", str(prior), "--label", "3", "--out", "x.png"])
    assert bad.exit_code == 2 and "no classes" in bad.stderr


def test_inspect_shows_the_prior_and_its_held_out_bits(trained):
    _, _, prior = trained
    r = json.loads(runner.invoke(app, ["inspect", str(prior), "--json"]).stdout)
    assert r["kind"] == "prior" and r["prior_kind"] == "ar"
    assert r["eval"]["max_bits"] == pytest.approx(math.log2(1000))
    assert r["tokens"]["layout"]["grids"] == [[16, 16]]
    assert r["eval"]["held_out"] is True and r["eval"]["rows"] == 2  # the README's quarter
    assert "held-out" in runner.invoke(app, ["inspect", str(prior)]).output


def test_evaluating_on_the_training_rows_is_never_called_held_out(trained, tmp_path):
    root, tokens, _ = trained
    args = ["train", f"{RECIPES}/prior-ar.toml", "--data", str(tokens), "--out",
            str(tmp_path / "ar"), "--eval-data", str(tokens), "--steps", "1"]  # fmt: skip
    assert runner.invoke(app, [*args, *[a for s in TINY for a in ("--set", s)]]).exit_code == 0
    prior = tmp_path / "ar" / "prior.safetensors"
    r = json.loads(runner.invoke(app, ["inspect", str(prior), "--json"]).stdout)
    assert r["eval"]["held_out"] is False
    text = runner.invoke(app, ["inspect", str(prior)]).output
    assert "on training rows" in text and "held-out" not in text


def _ddp_prior_worker(rank, port, folder, out):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    try:
        r = load_recipe(f"{RECIPES}/prior-ar.toml", TINY + ["train.steps=3", "data.batch_size=2"])
        result = train_prior(r, [folder], out)
        for k, v in result.model.state_dict().items():
            np.save(f"{out}/rank{rank}-{k}.npy", v.float().cpu().numpy())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_prior_training_ends_with_identical_weights(tmp_path):
    import torch.multiprocessing as mp
    from support.processes import free_port

    folder, _ = handful(tmp_path)
    mp.spawn(_ddp_prior_worker, args=(free_port(), str(folder), str(tmp_path / "run")),
             nprocs=2, join=True)  # fmt: skip
    names = sorted(p.name[len("rank0-") :] for p in (tmp_path / "run").glob("rank0-*.npy"))
    assert "head.weight.npy" in names
    for n in names:
        np.testing.assert_array_equal(
            np.load(tmp_path / "run" / f"rank0-{n}"), np.load(tmp_path / "run" / f"rank1-{n}")
        )
    torch.manual_seed(0)
    first = build_prior(load_prior(tmp_path / "run" / "prior.safetensors").config)
    assert not np.allclose(np.load(tmp_path / "run" / "rank0-head.weight.npy"),
                           first.head.weight.detach().numpy())  # fmt: skip


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    cfg = PriorConfig(kind="ar", width=32, layers=2, heads=2, dropout=0.5, vocab_size=16,
                      tokens_per_image=12)  # fmt: skip
    model = build_prior(cfg)
    tokens = torch.randint(0, 16, (2, 12))
    model.train()
    assert not torch.equal(model(tokens), model(tokens))
    model.eval()
    assert torch.equal(model(tokens), model(tokens))
    with pytest.raises(ConfigError, match="dropout"):
        build_prior(PriorConfig(dropout=1.0, vocab_size=16, tokens_per_image=12))


@pytest.mark.slow
def test_batch_logs_show_progress_of_train_encode_and_sample(trained, tmp_path):
    """Not on a terminal (a batch log, tee, Slurm), each long command writes plain
    progress lines to stderr: a slow run and a hung one look different."""
    root, tokens, prior = trained
    forks, err = Forks.shared(), tmp_path / "err.txt"  # `vqtool` runs, stderr to a file

    def log_of(*args) -> str:
        forks.start(list(args), err)
        code, said = forks.exit_code(300), err.read_text()
        assert code == 0, said
        return said

    encode_log = log_of("encode", "vqtool:sample", "--out", str(tmp_path / "t"), "--workers", "0")
    assert "vqtool encode: 0/1 tasks" in encode_log and "vqtool encode: 1/1 tasks" in encode_log
    assert "16 images" in encode_log and "0 errors" in encode_log
    sets = [a for s in TINY for a in ("--set", s)]
    train_log = log_of("train", f"{RECIPES}/prior-ar.toml", "--data", str(tokens), "--out",
                       str(tmp_path / "ar"), "--steps", "3", *sets)  # fmt: skip
    assert "vqtool train: 0/3 steps" in train_log and "vqtool train: 3/3 steps" in train_log
    assert "bits/token" in train_log  # the task's own log line
    sample_log = log_of("sample", "--prior", str(prior), "--out", str(tmp_path / "s.png"),
                        "-n", "4", "--batch-size", "2")  # fmt: skip
    # between the first and the last line, one every 30 s at most (and at each milestone)
    assert "vqtool sample: 0/4 images" in sample_log and "vqtool sample: 4/4 images" in sample_log


def test_guidance_on_an_unconditional_prior_is_refused_before_any_progress(trained, tmp_path):
    _, _, prior = trained
    result = runner.invoke(app, ["sample", "--prior", str(prior), "--cfg-scale", "3",
                                 "--out", str(tmp_path / "x.png")])  # fmt: skip
    assert result.exit_code == 2 and "--cfg-scale needs a class- or text-conditional" in (
        result.stderr)  # fmt: skip
    assert result.stderr.count("\n") == 1  # the one line, no progress line before it


@pytest.mark.parametrize("kind", ["ar", "maskgit", "muse", "rq", "contextual_rq"])
def test_sampled_tokens_record_steps_for_every_prior_that_samples_in_steps(tmp_path, kind):
    """A token shard written by `vqtool sample --tokens-out` records `steps` for the
    priors whose sampling they shape (MaskGIT, Muse, contextual RQ), null for the rest."""
    import pyarrow.parquet as pq

    from vqtool.priors.checkpoint import LoadedPrior
    from vqtool.priors.sample import SampleConfig, _write_tokens
    from vqtool.tokens.schema import read_vqtool_metadata

    depth = 2 if kind in ("rq", "contextual_rq") else 1
    text = {"text_vocab": 10, "text_length": 4} if kind == "muse" else {}
    cfg = PriorConfig(kind=kind, width=32, layers=1, heads=2, vocab_size=16,
                      tokens_per_image=8, depth=depth, **text)  # fmt: skip
    model = build_prior(cfg).eval()
    s = SamplingConfig(steps=3)
    rows = generate(model, 2, None, s, torch.Generator().manual_seed(0), torch.device("cpu"),
                    text=None)  # fmt: skip
    sample_cfg = SampleConfig(prior=str(tmp_path / "p.safetensors"), tokenizer=None, n=2,
                              out=str(tmp_path), sampling=s,
                              tokens_out=str(tmp_path / "s.parquet"))  # fmt: skip
    path = _write_tokens(sample_cfg, LoadedPrior(model, cfg, "", {}, {}), rows.numpy())
    sampled = read_vqtool_metadata(pq.read_schema(path))["sampled"]
    assert sampled["prior_kind"] == kind
    assert sampled["steps"] == (3 if kind in ("maskgit", "muse", "contextual_rq") else None)
