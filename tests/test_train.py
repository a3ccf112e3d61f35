"""`vqtool train`: every recipe trains, runs resume, bad setups fail at start-up."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.processes import free_port
from typer.testing import CliRunner

from vqtool.cli.main import app
from vqtool.models import Tokenizer
from vqtool.training import RunError, load_recipe, train_tokenizer
from vqtool.utils import ConfigError

ALL_RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))
RECIPES = [p for p in ALL_RECIPES if not p.stem.startswith("prior-")]  # tokenizers
runner = CliRunner()

# shrink any recipe to tiny images and two steps (the recipe's own shape is kept)
TINY = [
    "data.image_size=32",
    "data.batch_size=2",
    "data.workers=0",
    "train.steps=2",
    "train.warmup=1",
    "train.log_every=1",
    "eval.images=4",
    "eval.every=0",
]


def test_all_eleven_families_and_seven_priors_have_a_recipe():
    assert {p.stem for p in ALL_RECIPES} - {p.stem for p in RECIPES} == {
        "prior-ar",
        "prior-var",
        "prior-maskgit",
        "prior-rq",
        "prior-dalle",
        "prior-muse",
        "prior-contextual-rq",
    }
    names = {p.stem for p in RECIPES}
    assert names == {
        "vqvae-ema",
        "vqgan",
        "vit-vqgan",
        "rqvae",
        "vqvae2",
        "dvae-gumbel",
        "lfq",
        "fsq",
        "bsq",
        "palette",
        "var",
    }


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_trains_two_steps_and_writes_a_loadable_checkpoint(
    recipe, image_shards, tmp_path
):
    extra = ["loss.gan_start=1"] if "gan_weight" in recipe.read_text() else []
    if recipe.stem == "var":  # the pyramid ends at the f4 grid of a 32-px image
        extra.append("model.patch_nums=[1, 2, 4, 8]")
    r = load_recipe(recipe, TINY + extra)
    result = train_tokenizer(r, image_shards[:2], tmp_path / "run", eval_data=image_shards[2:])
    assert result.steps == 2 and result.images == 4 and result.skipped == 0
    tok = Tokenizer.load(result.checkpoint)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    tokens = tok.encode(images)
    assert tokens.shape == (2, tok.layout.tokens_per_image)
    assert tok.decode(tokens).shape == (2, 3, 32, 32)
    assert 0 <= result.eval["used_share"] <= 1 and result.eval["psnr"] > 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["train", "train", "eval"]


@pytest.mark.slow
def test_training_improves_reconstruction(image_shards, tmp_path):
    r = load_recipe(
        RECIPES[0].parent / "fsq.toml",
        [
            "data.image_size=32",
            "data.batch_size=4",
            "data.workers=0",
            "train.steps=30",
            "train.warmup=2",
            "train.lr=2e-3",
            "train.log_every=1",
        ],
    )
    train_tokenizer(r, image_shards[:2], tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([x["psnr"] for x in lines[:3]])
    last = np.mean([x["psnr"] for x in lines[-3:]])
    assert last > first + 2.0, (first, last)


def test_resume_continues_from_the_last_checkpoint(image_shards, tmp_path):
    run = tmp_path / "run"
    r = load_recipe(RECIPES[0].parent / "vqgan.toml", TINY + ["loss.gan_start=0"])
    train_tokenizer(r, image_shards[:2], run)
    with pytest.raises(RunError, match="pass --resume"):
        train_tokenizer(r, image_shards[:2], run)
    r4 = load_recipe(RECIPES[0].parent / "vqgan.toml", TINY + ["loss.gan_start=0", "train.steps=4"])
    result = train_tokenizer(r4, image_shards[:2], run, resume=True)
    assert (result.start_step, result.steps) == (2, 4)
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 4
    from safetensors.torch import load_file

    tensors = load_file(str(run / "state.safetensors"))
    adam_steps = {
        float(v) for k, v in tensors.items() if k.startswith("opt.") and k.endswith(".step")
    }
    assert adam_steps == {4.0}, "the optimizer state carried over"
    assert float(tensors["dopt.0.step"]) == 4.0


def test_resume_without_state_is_a_clear_error(image_shards, tmp_path):
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY)
    with pytest.raises(RunError, match="no training state to resume"):
        train_tokenizer(r, image_shards[:1], tmp_path / "empty", resume=True)


def test_cli_train_json_and_errors(image_shards, tmp_path):
    args = [
        "train",
        str(RECIPES[0].parent / "fsq.toml"),
        "--data",
        image_shards[0],
        "--out",
        str(tmp_path / "run"),
        "--json",
    ] + [a for s in TINY for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["steps"] == 2 and Path(data["checkpoint"]).is_file()

    bad = runner.invoke(app, args[: -2 * len(TINY)] + ["--set", "quantizer.levls=[8,8]"])
    assert bad.exit_code == 2
    assert "unknown key quantizer.levls" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["train", "nope.toml", "--data", "x", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "no such recipe file" in missing.output


def test_perceptual_loss_needs_weights_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match="perceptual_weights"):
        load_recipe(RECIPES[0].parent / "vqgan.toml", ["loss.perceptual_weight=1.0"])


def test_perceptual_loss_loads_weights_from_a_named_file(image_shards, tmp_path):
    from safetensors.torch import save_file

    from vqtool.losses.perceptual import LPIPS

    weights = tmp_path / "lpips_vgg.safetensors"
    save_file({k: v.contiguous() for k, v in LPIPS().state_dict().items()}, str(weights))
    one = ["train.steps=1", "train.log_every=1"]
    r = load_recipe(
        RECIPES[0].parent / "fsq.toml",
        TINY + one + ["loss.perceptual_weight=0.5", f'loss.perceptual_weights=["{weights}"]'],
    )
    with_term = train_tokenizer(r, image_shards[:1], tmp_path / "run").train
    plain = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + one)
    without = train_tokenizer(plain, image_shards[:1], tmp_path / "plain").train
    # the same first step, plus 0.5 x the perceptual distance
    assert with_term["perceptual"] != 0  # (the stand-in heads are random, so any sign)
    expected = without["loss"] + 0.5 * with_term["perceptual"]
    assert with_term["loss"] == pytest.approx(expected, rel=1e-4)


def _ddp_worker(rank, port, shards, out):
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    try:
        r = load_recipe(RECIPES[0].parent / "vqvae-ema.toml", TINY + ["train.steps=3"])
        result = train_tokenizer(r, shards, out)
        for k, v in result.model.state_dict().items():
            np.save(f"{out}/rank{rank}-{k}.npy", v.float().cpu().numpy())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_weights(image_shards, tmp_path):
    mp.spawn(_ddp_worker, args=(free_port(), image_shards[:2], str(tmp_path)), nprocs=2, join=True)
    names = sorted(p.name[len("rank0-") :] for p in tmp_path.glob("rank0-*.npy"))
    assert any("embed" in n for n in names)
    for n in names:
        np.testing.assert_array_equal(
            np.load(tmp_path / f"rank0-{n}"), np.load(tmp_path / f"rank1-{n}"), err_msg=n
        )


def test_weight_ema_and_gradient_accumulation(image_shards, tmp_path):
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + ["train.ema=0.9", "train.grad_accum=2"])
    result = train_tokenizer(r, image_shards[:2], tmp_path / "run")
    assert result.images == 2 * 2 * 2  # steps x micro-batches x batch size
    saved = Tokenizer.load(result.checkpoint).state_dict()
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "run" / "state.safetensors"))
    name = next(k for k in saved if k.endswith("conv_in.weight"))
    assert torch.equal(saved[name], raw[f"ema.{name}"])
    assert not torch.equal(saved[name], raw[f"model.{name}"]), "the checkpoint holds the EMA"


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(image_shards, tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    sets = [a for s in TINY[:-3] for a in ("--set", s)]
    cmd = [
        sys.executable,
        "-m",
        "vqtool",
        "train",
        str(RECIPES[0].parent / "fsq.toml"),
        "--data",
        image_shards[0],
        "--out",
        str(run),
        "--steps",
        "500",
        "--set",
        "train.checkpoint_every=3",
        *sets,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            state = run / "state.json"
            if state.exists() and json.loads(state.read_text())["step"] >= 6:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
    saved = json.loads((run / "state.json").read_text())["step"]
    assert saved >= 6 and saved % 3 == 0
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + [f"train.steps={saved + 2}"])
    result = train_tokenizer(r, image_shards[:1], run, resume=True)
    assert (result.start_step, result.steps) == (saved, saved + 2)
    Tokenizer.load(result.checkpoint)


def test_data_and_thread_settings_are_checked_and_applied(image_shards, tmp_path):
    with pytest.raises(ConfigError, match="data.short_side 16 is below data.image_size 32"):
        load_recipe(RECIPES[0].parent / "fsq.toml", TINY + ["data.short_side=16"])
    with pytest.raises(ConfigError, match="crop_scale"):
        load_recipe(RECIPES[0].parent / "fsq.toml", TINY + ["data.crop_scale=[0.5]"])
    before = torch.get_num_threads()
    try:
        r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + ["train.threads=1"])
        train_tokenizer(r, image_shards[:1], tmp_path / "run")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_training_on_data_without_a_single_image_fails_instead_of_waiting(tmp_path):
    from support.data import write_shard

    shard = write_shard(tmp_path / "text.tar", [("a", {"txt": b"no image"}), ("b", {"png": b"x"})])
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY)
    with pytest.raises(RunError, match="no decodable image"):
        train_tokenizer(r, [shard], tmp_path / "run")


@pytest.mark.parametrize(
    "crop", [["data.short_side=48"], ["data.crop=random_resized", "data.crop_scale=[0.3,0.6]"]]
)
@pytest.mark.parametrize("cache", ["data.cache_mb=0", "data.cache_mb=64"])
def test_every_crop_mode_trains_cached_or_streamed(image_shards, tmp_path, crop, cache):
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + crop + [cache])
    result = train_tokenizer(r, image_shards[:2], tmp_path / "run")
    assert result.steps == 2 and result.images == 4


def test_the_log_shows_codebook_collapse(image_shards, tmp_path):
    r = load_recipe(RECIPES[0].parent / "vqvae-ema.toml", TINY + ["train.steps=3"])
    train_tokenizer(r, image_shards[:2], tmp_path / "run")
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = logs[-1]
    # the batch's own share of codes, and the effective share (perplexity / vocabulary) over
    # the recent window: 2 images of 8x8 tokens can use at most 128 of 1024 codes
    assert 0 < last["used"] <= 128 / 1024
    assert 0 < last["effective_share"] <= last["window_used_share"] <= 1


def test_perceptual_weights_from_the_lpips_package_and_torchvision_file(tmp_path, monkeypatch):
    import hashlib
    import sys

    from vqtool.losses import perceptual
    from vqtool.losses.perceptual import LPIPS, PerceptualError, load_perceptual

    state = LPIPS().state_dict()
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    trunk = {k: v for k, v in state.items() if k.startswith("features.")}
    # an installed `lpips` package: found by its location, never imported
    pkg = tmp_path / "site" / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    torch.save(heads, pkg / "weights" / "v0.1" / "vgg.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("lpips", None)
    # a torchvision-named VGG-16 file whose sha256 starts as its name says
    trunk_file = tmp_path / "trunk.pth"
    torch.save(trunk, trunk_file)
    digest = hashlib.sha256(trunk_file.read_bytes()).hexdigest()
    good = trunk_file.rename(tmp_path / f"vgg16-{digest[:8]}.pth")
    with pytest.raises(PerceptualError, match="is not the LPIPS v0.1 VGG file"):
        load_perceptual(["lpips:vgg", str(good)])  # our stand-in heads are not the release
    heads_sha = hashlib.sha256((pkg / "weights" / "v0.1" / "vgg.pth").read_bytes()).hexdigest()
    monkeypatch.setattr(perceptual, "LPIPS_VGG_SHA256", heads_sha)
    model = load_perceptual(["lpips:vgg", str(good)])
    assert torch.equal(model.lin0.model[1].weight, heads["lin0.model.1.weight"])
    bad = good.rename(tmp_path / "vgg16-00000000.pth")
    with pytest.raises(PerceptualError, match="does not start with 00000000"):
        load_perceptual(["lpips:vgg", str(bad)])
    with pytest.raises(PerceptualError, match="only 'lpips:vgg'"):
        load_perceptual(["lpips:alex"])


@pytest.mark.parametrize("name", ["vqvae2", "dvae-gumbel"])
def test_cli_progress_line_for_multi_level_and_gumbel_recipes(name, image_shards, tmp_path):
    args = ["train", str(RECIPES[0].parent / f"{name}.toml"), "--data", image_shards[0]]
    args += ["--out", str(tmp_path / "run")] + [a for s in TINY for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained" in result.output.lower() or "checkpoint" in result.output.lower()


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["data.cache_mb=0", "data.cache_mb=64"])
def test_training_on_data_without_images_stops_with_one_line(tmp_path, cache):
    """No decodable image (a text-only folder) must end the run with the reason,
    streamed or cached, not spin forever; the subprocess timeout is the hang check."""
    import subprocess
    import sys

    data = tmp_path / "notes"
    data.mkdir()
    (data / "a.txt").write_text("no pictures here")
    cmd = [sys.executable, "-m", "vqtool", "train", str(RECIPES[0].parent / "fsq.toml"),
           "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2",
           "--set", "data.workers=1", "--set", cache]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vqtool: error:")]
    assert len(errors) == 1 and "no decodable image" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "setting,named",
    [("data.image_size=-8", "data.image_size"), ("train.lr=-1", "train.lr"),
     ("train.min_lr_ratio=2", "train.min_lr_ratio"), ("train.betas=[0.5]", "train.betas")],
)  # fmt: skip
def test_bad_numbers_are_refused_at_start_naming_the_key(tmp_path, setting, named):
    with pytest.raises(ConfigError, match=named):
        load_recipe(RECIPES[0].parent / "fsq.toml", TINY + [setting])


def test_resume_with_another_model_is_one_clear_error(image_shards, tmp_path):
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY)
    train_tokenizer(r, image_shards[:1], tmp_path / "run")
    other = load_recipe(RECIPES[0].parent / "vqvae-ema.toml", TINY + ["train.steps=4"])
    with pytest.raises(RunError, match="another model configuration"):
        train_tokenizer(other, image_shards[:1], tmp_path / "run", resume=True)


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_and_it_resumes(tmp_path):
    """A scheduler's SIGTERM: one line, exit 130, no worker left behind, resumable."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vqtool", "train", str(RECIPES[0].parent / "fsq.toml"),
           "--data", "vqtool:sample", "--out", str(run), "--steps", "100000",
           *[a for s in TINY + ["data.workers=2", "data.cache_mb=0", "train.checkpoint_every=2"]
             for a in ("--set", s)]]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    assert children.stdout.split(), "the DataLoader workers should be running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert "vqtool: interrupted" in stderr and "Traceback" not in stderr
    for pid in children.stdout.split():  # the workers are gone too
        deadline = time.time() + 30
        while subprocess.run(["kill", "-0", pid], capture_output=True).returncode == 0:
            assert time.time() < deadline, f"worker {pid} outlived the run"
            time.sleep(0.2)
    saved = json.loads((run / "state.json").read_text())["step"]
    r = load_recipe(RECIPES[0].parent / "fsq.toml", TINY + [f"train.steps={saved + 2}"])
    assert train_tokenizer(r, ["vqtool:sample"], run, resume=True).steps == saved + 2


def test_a_save_killed_between_its_writes_still_resumes(tmp_path, monkeypatch):
    """The tensors and the JSON of a state are two files; a kill between their writes
    must leave a state that loads (the one the JSON names)."""
    import os

    from vqtool.training import state

    run = tmp_path / "run"
    run.mkdir()
    state.save_state(run, 3, {"w": torch.zeros(2)}, {"position": {}})
    real = os.replace

    def killed_before_final_rename(src, dst):
        if str(src).endswith(state.STATE_NEXT):
            raise KeyboardInterrupt  # stands for SIGKILL after the JSON committed step 6
        real(src, dst)

    monkeypatch.setattr(state.os, "replace", killed_before_final_rename)
    with pytest.raises(KeyboardInterrupt):
        state.save_state(run, 6, {"w": torch.ones(2)}, {"position": {}})
    monkeypatch.setattr(state.os, "replace", real)
    tensors, info = state.load_state(run)
    assert info["step"] == 6 and torch.equal(tensors["w"], torch.ones(2))

    def killed_before_the_json(src, dst):
        if str(dst).endswith(state.STATE_JSON):
            raise KeyboardInterrupt  # the new tensors are written, the JSON still says 6
        real(src, dst)

    monkeypatch.setattr(state.os, "replace", killed_before_the_json)
    with pytest.raises(KeyboardInterrupt):
        state.save_state(run, 9, {"w": torch.full((2,), 9.0)}, {"position": {}})
    monkeypatch.setattr(state.os, "replace", real)
    tensors, info = state.load_state(run)
    assert info["step"] == 6 and torch.equal(tensors["w"], torch.ones(2))


def test_threads_flag_then_omp_num_threads_set_torch_threads(tmp_path):
    """`--threads N` on train and encode, else OMP_NUM_THREADS, else cores less workers."""
    before = torch.get_num_threads()
    sets = [a for s in TINY for a in ("--set", s)]
    train = ["train", "fsq", "--data", "vqtool:sample", *sets]
    try:
        for argv, env, want in [
            ([*train, "--out", str(tmp_path / "a"), "--threads", "3"], {}, 3),
            ([*train, "--out", str(tmp_path / "b")], {"OMP_NUM_THREADS": "1"}, 1),
            (
                [
                    "encode",
                    "vqtool:sample",
                    "--out",
                    str(tmp_path / "c"),
                    "--workers",
                    "0",
                    "--threads",
                    "3",
                ],
                {},
                3,
            ),  # fmt: skip
            (
                ["encode", "vqtool:sample", "--out", str(tmp_path / "d"), "--workers", "0"],
                {"OMP_NUM_THREADS": "1"},
                1,
            ),  # fmt: skip
        ]:
            torch.set_num_threads(2)
            result = runner.invoke(app, argv, env=env)
            assert result.exit_code == 0, result.output
            assert torch.get_num_threads() == want, argv
    finally:
        torch.set_num_threads(before)


def test_photo_caching_shows_progress(tmp_path, monkeypatch):
    """Reading the training photos into memory (tens of seconds on a real corpus) reports
    progress: a line at once, then at --log-every, and one when it is done."""
    from vqtool.data import cache as photo_cache
    from vqtool.data import expand_sources

    clock = iter(range(0, 10**6))
    monkeypatch.setattr(photo_cache.time, "monotonic", lambda: float(next(clock)))
    seen = []
    photo_cache.cache_photos(expand_sources(["vqtool:sample"]), 32, 1 << 30, 0,
                             progress=lambda n, b, done: seen.append((n, done)))  # fmt: skip
    assert seen[-1] == (16, True) and [n for n, _ in seen[:-1]] == list(range(1, 17))
    monkeypatch.undo()
    sets = [a for s in TINY for a in ("--set", s)]
    result = runner.invoke(app, ["train", "fsq", "--data", "vqtool:sample", "--out",
                                 str(tmp_path / "r"), *sets, "--log-every", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "caching photos: 16" in result.stderr and "done; training starts" in result.stderr
