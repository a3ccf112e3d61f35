"""Rate-distortion of vqtool's recipes against a minimal reference autoencoder.

    python benchmarks/rate_distortion.py                 # every conv recipe + its reference
    python benchmarks/rate_distortion.py --ablation      # one factor at a time
    python benchmarks/rate_distortion.py --pyramid       # var (VAR's pyramid) vs vqgan
    python benchmarks/rate_distortion.py --quick         # smoke: 20 steps, three entries
    python benchmarks/rate_distortion.py --checkpoint vqtool:fsq-f4-64   # a trained file
    python benchmarks/rate_distortion.py --step-time vqvae-ema   # one step vs the reference's

Every entry trains in its own process (one torch thread each, `--jobs`
processes at a time) for the same steps x batch on the devset training shards
and is evaluated the same way on held-out tiles of `devset-000005.tar`: short
side resized (Pillow bicubic) to 128, the centre 128x128, its four 64x64
tiles. Columns: bits per image, held-out PSNR / SSIM, share of codes used and
perplexity on the tiles, CPU seconds of the whole run (the process and its
DataLoader workers, data preparation included), seconds per step from step 10
on (the steady state, after the photos are decoded), and the PSNR difference to
the reference AE with the same quantizer trained in the same invocation.

The reference AE is the issue's "100-line autoencoder", written here from its
description: conv 3->32; [ResBlock(32), stride-2 conv 32->64]; [ResBlock(64),
stride-2 conv 64->64]; ResBlock(64); GroupNorm+SiLU+conv1x1 -> 32 code
channels; the decoder mirrored with nearest-neighbour upsampling. ResBlock =
x + conv(SiLU(GN(conv(SiLU(GN(x)))))), GN 8 groups. MSE + the quantizer's
loss, Adam lr 3e-4, betas (0.5, 0.9), constant lr, training images decoded
once at short side 128, random 64x64 crops + flips. Its quantizer is vqtool's,
configured as the recipe it is compared with.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVSET = ROOT.parent / "shared" / "data" / "devset"
TRAIN = [str(DEVSET / f"devset-{i:06d}.tar") for i in range(5)]
HELD_OUT = str(DEVSET / "devset-000005.tar")
IMAGE = 64  # tile / crop size
SHORT = 128  # short side the photos are resized to (reference training and the eval tiles)
WARM = 10  # s/step is timed from this step on (after data caching and first-step set-up)


@dataclass
class Entry:
    name: str
    recipe: str = ""  # recipes/NAME.toml; empty for the reference AE
    overrides: list[str] = field(default_factory=list)
    quantizer: dict = field(default_factory=dict)  # the reference AE's quantizer
    stages: int = 2  # the reference AE's halvings (2 -> 16x16 codes at 64 px)
    compare: str = ""  # the reference entry this one is compared with
    note: str = ""


# -- the comparison: each conv recipe at 2,560 bits per 64x64 image, and the reference AE
#    with the same quantizer ---------------------------------------------------------------
VQ1024 = {"kind": "vq", "codebook_size": 1024, "ema_decay": 0.99, "restart_after": 20}
MAIN = [
    Entry("ref+vq", quantizer=VQ1024),
    Entry("ref+fsq", quantizer={"kind": "fsq", "levels": [8, 5, 5, 5]}),
    Entry("ref+lfq", quantizer={"kind": "lfq", "codebook_size": 1024, "entropy_weight": 0.1}),
    Entry("ref+bsq", quantizer={"kind": "bsq", "codebook_size": 1024, "entropy_weight": 0.1}),
    Entry(
        "ref+rq",
        quantizer={"kind": "rq", "codebook_size": 1024, "depth": 4, "restart_after": 20},
        stages=3,
    ),
    Entry("vqvae-ema", "vqvae-ema", compare="ref+vq"),
    Entry("vqgan", "vqgan", compare="ref+vq"),
    Entry("vqvae2", "vqvae2", compare="ref+vq"),
    Entry("fsq", "fsq", compare="ref+fsq"),
    Entry("lfq", "lfq", compare="ref+lfq"),
    Entry("bsq", "bsq", compare="ref+bsq"),
    Entry("rqvae", "rqvae", compare="ref+rq"),
    Entry("dvae-gumbel", "dvae-gumbel", note="Gumbel, DALL-E network: no reference"),
    Entry("vit-vqgan", "vit-vqgan", note="8x8 tokens of 512 codes: not at 2,560 bits"),
]

# -- the pyramid: the `var` recipe (VAR's multi-scale residual VQ) against the single-scale
#    `vqgan` at equal tokens per image (var's schedule summing to 1,020 tokens against vqgan
#    at f2, 32x32 = 1,024) and as shipped (var's 680 against vqgan's 256), equal steps -----
PYRAMID = [
    Entry("vqgan", "vqgan"),
    Entry("var", "var", compare="vqgan"),
    Entry("vqgan-f2", "vqgan", ["model.channel_mult=[1, 2]"]),
    Entry("var-1020", "var", ["model.patch_nums=[1, 2, 3, 4, 5, 6, 8, 10, 12, 13, 14, 16]"],
          compare="vqgan-f2"),  # fmt: skip
]

# -- the ablation: vqtool's old defaults (v0.1.0's vqvae-ema recipe at 1,024 codes) and the
#    new recipe, each with one factor switched to the other side ------------------------------
OLD = [
    "quantizer.codebook_size=1024",
    "data.crop=random_resized",
    "data.crop_scale=[0.15,0.25]",
    "data.cache_mb=0",
    "data.workers=2",
    "model.norm_groups=32",
    "model.mid_blocks=2",
    "model.resample_channels=false",
    "model.code_kernel=3",
    "loss.reconstruction=l2",
    "train.lr=4e-4",
    "train.warmup=20",
    "train.min_lr_ratio=0.1",
    "train.grad_clip=1.0",
]
ABLATION = [
    Entry("ref+vq", quantizer=VQ1024),
    Entry("old", "vqvae-ema", OLD, compare="ref+vq", note="v0.1.0 recipe at 1,024 codes"),
]


def ablation_entries() -> list[Entry]:
    steps = [
        ("old + photos cached", ["data.cache_mb=2048"]),
        ("old + short-side-128 crops", ["data.crop=short_side", "data.short_side=128"]),
        (
            "old + reference blocks",
            [
                "model.norm_groups=8",
                "model.mid_blocks=0",
                "model.resample_channels=true",
                "model.code_kernel=1",
            ],
        ),
        ("old + no grad clip", ["train.grad_clip=0"]),
        (
            "old + all of the reference's settings",
            [
                "data.cache_mb=2048",
                "data.crop=short_side",
                "data.short_side=128",
                "model.norm_groups=8",
                "model.mid_blocks=0",
                "model.resample_channels=true",
                "model.code_kernel=1",
                "train.grad_clip=0",
                "train.lr=3e-4",
                "train.min_lr_ratio=1.0",
                "train.warmup=0",
            ],
        ),
    ]
    out = list(ABLATION)
    for name, extra in steps:
        out.append(Entry(name, "vqvae-ema", OLD + extra, compare="ref+vq"))
    out.append(Entry("new", "vqvae-ema", compare="ref+vq", note="the recipe as shipped"))
    # the "old" rows above keep the recipe's new SSIM term; this one is v0.1 exactly
    out.append(Entry("v0.1 recipe", "vqvae-ema", [*OLD, "loss.ssim_weight=0"], compare="ref+vq"))
    # which of the block switches: GroupNorm with 32 groups on 32-64 channels (1-2 channels
    # a group, close to instance norm) alone
    out.append(
        Entry("new with 32 norm groups", "vqvae-ema", ["model.norm_groups=32"], compare="ref+vq")
    )
    back = [
        ("new - cache (decode every step)", ["data.cache_mb=0", "data.workers=1"]),
        (
            "new - short side (crop_scale 0.15-0.25)",
            ["data.crop=random_resized", "data.crop_scale=[0.15,0.25]"],
        ),
        (
            "new - reference blocks (old conv)",
            [
                "model.norm_groups=32",
                "model.mid_blocks=2",
                "model.resample_channels=false",
                "model.code_kernel=3",
            ],
        ),
        ("new without the SSIM term", ["loss.ssim_weight=0"]),
        ("new with L1", ["loss.reconstruction=l1"]),
        ("new with constant lr", ["train.min_lr_ratio=1.0", "train.warmup=0"]),
        ("new with weight EMA 0.99", ["train.ema=0.99"]),
    ]
    for name, extra in back:
        out.append(Entry(name, "vqvae-ema", extra, compare="ref+vq"))
    return out


# -- data -----------------------------------------------------------------------------------
def _photos(path: str):
    from PIL import Image

    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile() and member.name.rsplit(".", 1)[-1].lower() in (
                "jpg",
                "jpeg",
                "png",
                "webp",
            ):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    yield img.convert("RGB")


def _short_side(img, short: int):
    from PIL import Image

    w, h = img.size
    s = short / min(w, h)
    return img.resize((max(short, round(w * s)), max(short, round(h * s))), Image.BICUBIC)


def held_out_tiles():
    """(N, 3, 64, 64) uint8: the four 64x64 tiles of each held-out photo's centre 128x128."""
    import numpy as np
    import torch

    tiles = []
    for img in _photos(HELD_OUT):
        img = _short_side(img, SHORT)
        w, h = img.size
        left, top = (w - SHORT) // 2, (h - SHORT) // 2
        arr = np.asarray(img.crop((left, top, left + SHORT, top + SHORT)), dtype=np.uint8)
        for y in (0, IMAGE):
            for x in (0, IMAGE):
                tiles.append(torch.from_numpy(arr[y : y + IMAGE, x : x + IMAGE].copy()))
    return torch.stack(tiles).permute(0, 3, 1, 2).contiguous()


# -- the reference autoencoder ------------------------------------------------------------------
def reference_model(quantizer: dict, stages: int, seed: int = 0):
    import torch
    from torch import nn

    from vqtool.quantizers import build_quantizer

    torch.manual_seed(seed)  # before any layer is built: the initial weights follow the seed

    def gn(c):
        return nn.GroupNorm(8, c, eps=1e-6)

    class Res(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(
                gn(c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                gn(c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
            )

        def forward(self, x):
            return x + self.body(x)

    widths = [32] + [64] * stages
    enc: list[nn.Module] = [nn.Conv2d(3, 32, 3, padding=1)]
    for a, b in zip(widths[:-1], widths[1:]):
        enc += [Res(a), nn.Conv2d(a, b, 3, stride=2, padding=1)]
    enc += [Res(64), gn(64), nn.SiLU(), nn.Conv2d(64, 32, 1)]
    dec: list[nn.Module] = [nn.Conv2d(32, 64, 1), Res(64)]
    for a, b in zip(widths[:0:-1], widths[-2::-1]):
        dec += [
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(a, b, 3, padding=1),
            Res(b),
        ]
    dec += [gn(32), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1)]

    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
            self.quantizer = build_quantizer(32, quantizer)

        def forward(self, x):  # x in [-1, 1]
            q = self.quantizer(self.encoder(x))
            return self.decoder(q.quantized), q

    return AE()


def train_reference(entry: Entry, steps: int, batch: int, seed: int = 0):
    import torch
    import torch.nn.functional as F

    photos = [_short_side(img, SHORT) for path in TRAIN for img in _photos(path)]
    import numpy as np

    arrays = [np.asarray(img, dtype=np.uint8) for img in photos]
    model = reference_model(entry.quantizer, entry.stages, seed)
    opt = torch.optim.Adam(model.parameters(), 3e-4, betas=(0.5, 0.9))
    rng = random.Random(seed)
    t10 = time.perf_counter()
    for step in range(steps):
        if step == WARM:
            t10 = time.perf_counter()
        crops = []
        for _ in range(batch):
            a = arrays[rng.randrange(len(arrays))]
            y, x = rng.randrange(a.shape[0] - IMAGE + 1), rng.randrange(a.shape[1] - IMAGE + 1)
            c = a[y : y + IMAGE, x : x + IMAGE]
            crops.append(c[:, ::-1] if rng.random() < 0.5 else c)
        x = torch.from_numpy(np.stack(crops).copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
        out, q = model(x)
        loss = F.mse_loss(out, x) + q.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.quantizer.anneal(step)
    step_s = (time.perf_counter() - t10) / max(1, steps - WARM)
    model.eval()

    def reconstruct(tiles):
        x = tiles.float() / 127.5 - 1
        out, q = model(x)
        return ((out.clamp(-1, 1) + 1) / 2), q.codes, model.quantizer.vocab_size

    return reconstruct, step_s


def train_recipe(entry: Entry, steps: int, batch: int, out: Path, seed: int = 0):
    import shutil

    from vqtool.training.recipe import load_recipe
    from vqtool.training.tokenizer import train_tokenizer

    overrides = [
        *entry.overrides,
        f"train.steps={steps}",
        f"data.batch_size={batch}",
        f"train.checkpoint_every={steps}",
        "train.threads=1",
        f"train.seed={seed}",
    ]
    recipe = load_recipe(ROOT / "recipes" / f"{entry.recipe}.toml", overrides)
    shutil.rmtree(out, ignore_errors=True)
    result = train_tokenizer(recipe, TRAIN, out)
    model = result.model.eval()
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    at = {x["step"]: x["elapsed_s"] for x in logs if x["kind"] == "train"}
    first = min((s for s in at if s >= WARM), default=0)  # after the cache and warm-up
    step_s = (at[steps] - at.get(first, 0.0)) / max(1, steps - first)

    def reconstruct(tiles):
        out_ = model(model.normalize(tiles))
        codes = out_.codes
        return model.to_unit(out_.output).clamp(0, 1), codes, model.vocab_size

    return reconstruct, step_s


def whole_photos():
    """(N, 3, 64, 64) uint8: each held-out photo as `vqtool encode` feeds a 64 px tokenizer
    (short side resized to 64, centre crop)."""
    import torch

    from vqtool.data.images import center_crop

    return torch.stack([center_crop(img, IMAGE) for img in _photos(HELD_OUT)])


def evaluate_checkpoint(name: str) -> None:
    """Held-out figures of a trained tokenizer file, on the tiles and on whole photos."""
    import torch

    from vqtool.assets import resolve
    from vqtool.models import Tokenizer

    torch.set_num_threads(1)
    model = Tokenizer.load(resolve(name)).eval()

    def reconstruct(images):
        out_ = model(model.normalize(images))
        return model.to_unit(out_.output).clamp(0, 1), out_.codes, model.vocab_size

    print(f"# {name}: held-out {Path(HELD_OUT).name}, {time.strftime('%Y-%m-%d')}")
    print("| images | count | bits/img | PSNR dB | SSIM | codes used | perplexity |")
    print("|---|---|---|---|---|---|---|")
    for label, images in (
        ("64x64 tiles (short side 128)", held_out_tiles()),
        ("whole photos at 64 px (as encode)", whole_photos()),
    ):
        r = score(reconstruct, images)
        print(
            f"| {label} | {len(images)} | {r['bits']:,.0f} | {r['psnr']:.2f} | "
            f"{r['ssim']:.3f} | {r['used']:.1%} | {r['perplexity']:.0f} |"
        )

    q = model.net.quantizers[0]
    if q.kind == "fsq":
        fsq_levels(model, held_out_tiles())


def fsq_levels(model, images) -> None:
    """Why FSQ leaves codes unused: how often each channel takes each level, and how many
    distinct codes independent channels with those level frequencies would show."""
    import torch

    q = model.net.quantizers[0]
    with torch.inference_mode():
        codes = torch.cat(
            [
                model(model.normalize(images[i : i + 32])).codes[0].flatten()
                for i in range(0, len(images), 32)
            ]
        )
    digits = (codes.unsqueeze(-1) // q.basis) % q.levels  # (N, channels)
    n = len(codes)
    print(f"\nFSQ levels {q.config.levels}: share of {n:,} held-out tokens at each level")
    probs = []
    for ch, levels in enumerate(q.config.levels):
        p = torch.bincount(digits[:, ch], minlength=levels).double() / n
        probs.append(p)
        print(f"channel {ch}: " + " ".join(f"{x:.3f}" for x in p.tolist()))
    joint = probs[0]
    for p in probs[1:]:
        joint = (joint.unsqueeze(-1) * p).flatten()
    expected = float((1 - (1 - joint) ** n).sum())
    print(
        f"codes used: {codes.unique().numel()} of {q.vocab_size}; independent channels with "
        f"these level frequencies would use {expected:.0f}; codes with probability < 1/N "
        f"under independence: {int((joint < 1 / n).sum())}"
    )


def step_time(recipe_name: str, steps: int = 30) -> None:
    """Seconds per training step of a recipe's task (loss, backward, AdamW) and of the
    reference AE with the same VQ, on the same batch, alternating, in one process."""
    import torch
    import torch.nn.functional as F

    from vqtool.data import StreamPosition, expand_sources
    from vqtool.training.recipe import load_recipe
    from vqtool.training.tokenizer import TokenizerTask

    torch.set_num_threads(1)
    recipe = load_recipe(ROOT / "recipes" / f"{recipe_name}.toml", ["train.threads=1"])
    task = TokenizerTask(recipe, expand_sources(TRAIN), None)
    task.setup(torch.device("cpu"), None, recipe.train)
    batch = next(task.batches(StreamPosition()))
    opt = torch.optim.AdamW(task.model.parameters(), 1e-3, betas=(0.5, 0.9))
    ref = reference_model(VQ1024, 2)
    ref_opt = torch.optim.Adam(ref.parameters(), 3e-4, betas=(0.5, 0.9))
    x = task.model.normalize(batch.data)

    def ours(i):
        loss, _ = task.loss(task.model, batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def theirs(i):
        out, q = ref(x)
        loss = F.mse_loss(out, x) + q.loss
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()

    times = {"ours": 0.0, "reference": 0.0}
    for i in range(steps + 3):
        for name, fn in (("ours", ours), ("reference", theirs)):
            t = time.perf_counter()
            fn(i)
            if i >= 3:  # after warm-up
                times[name] += time.perf_counter() - t
    a, b = times["ours"] / steps, times["reference"] / steps
    print(
        f"# {recipe_name} vs the reference AE + VQ 1024, batch 16, 1 thread, {steps} steps "
        f"each, alternating; {platform.machine()}, torch {torch.__version__}"
    )
    print(
        f"| s/step {recipe_name} | s/step reference | ratio |\n|---|---|---|\n"
        f"| {a:.3f} | {b:.3f} | {a / b:.2f} |"
    )


def score(reconstruct, images) -> dict:
    import torch

    from vqtool.metrics import CodebookUsage, psnr, ssim

    scores = {"psnr": [], "ssim": []}
    usage = None
    tokens = 0
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            t = images[i : i + 32]
            recon, codes, vocab = reconstruct(t)
            codes = codes if isinstance(codes, list) else [codes]
            usage = usage or CodebookUsage(vocab)
            for c in codes:
                usage.update(c)
            tokens = sum(c[0].numel() for c in codes)
            target = t.float() / 255
            scores["psnr"].append(psnr(recon, target))
            scores["ssim"].append(ssim(recon, target))
    stats = usage.stats()
    return {
        "bits": tokens * math.log2(vocab),
        "psnr": float(torch.cat(scores["psnr"]).mean()),
        "ssim": float(torch.cat(scores["ssim"]).mean()),
        "used": stats.used_share,
        "perplexity": stats.perplexity,
    }


def run_entry(entry: Entry, steps: int, batch: int, out: Path, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    if entry.recipe:
        folder = out / f"{_folder(entry.name)}-seed{seed}"
        reconstruct, step_s = train_recipe(entry, steps, batch, folder, seed)
    else:
        reconstruct, step_s = train_reference(entry, steps, batch, seed)
    tiles = held_out_tiles()
    r = score(reconstruct, tiles)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {
        "name": entry.name,
        **r,
        "cpu_s": cpu,
        "s_per_step": step_s,
        "tiles": len(tiles),
    }


def _folder(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in name)


# -- driver -------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2, help="entries trained at once (1 thread each)")
    p.add_argument("--ablation", action="store_true", help="the one-factor-at-a-time table")
    p.add_argument("--pyramid", action="store_true", help="var against vqgan, equal tokens")
    p.add_argument("--quick", action="store_true", help="20 steps, three entries (smoke)")
    p.add_argument("--only", default="", help="comma-separated entry names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; the table shows means")
    p.add_argument("--out", default="runs/rate_distortion")
    p.add_argument("--checkpoint", help="evaluate this tokenizer file (or vqtool:NAME) only")
    p.add_argument("--step-time", metavar="RECIPE", help="time one training step vs the reference")
    p.add_argument("--entry", help=argparse.SUPPRESS)  # internal: run one entry, print JSON
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # with --entry
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # dev: try
    args = p.parse_args()
    if args.checkpoint:
        evaluate_checkpoint(args.checkpoint)
        return
    if args.step_time:
        step_time(args.step_time)
        return
    entries = ablation_entries() if args.ablation else PYRAMID if args.pyramid else MAIN
    if args.quick:
        args.steps = 20
        entries = [e for e in entries if e.name in ("ref+vq", "vqvae-ema", "fsq", "old", "new")]
    if args.only:
        names = set(args.only.split(","))
        entries = [e for e in entries if e.name in names or e.name == "ref+vq"]
    by_name = {e.name: e for e in entries}
    if args.entry:
        by_name[args.entry].overrides += args.set
        entry = by_name[args.entry]
        print(json.dumps(run_entry(entry, args.steps, args.batch, Path(args.out), args.seed)))
        return
    seeds = [int(x) for x in args.seeds.split(",")]

    def launch(job: tuple[Entry, int]) -> dict:
        entry, seed = job
        cmd = [
            sys.executable,
            __file__,
            "--entry",
            entry.name,
            "--seed",
            str(seed),
            "--steps",
            str(args.steps),
            "--batch",
            str(args.batch),
            "--out",
            args.out,
        ]
        if args.ablation:
            cmd.append("--ablation")
        if args.pyramid:
            cmd.append("--pyramid")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            return {"name": entry.name, "error": proc.stderr.strip().splitlines()[-1][:120]}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    import torch

    print(
        f"# {args.steps} steps x batch {args.batch} per entry; held-out: 4 tiles of each "
        f"photo of {Path(HELD_OUT).name}; {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU, "
        f"{args.jobs} entries at a time, 1 thread each; seeds {args.seeds} (means; PSNR "
        "+- half the range over seeds)"
    )
    cols = [
        "entry",
        "bits/img",
        "PSNR dB",
        "SSIM",
        "codes used",
        "perplexity",
        "CPU s",
        "s/step",
        "vs reference",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols), flush=True)
    results: dict[str, dict] = {}
    # references first, so every comparison has its figure when the row is printed
    refs = [e for e in entries if not e.recipe]
    rest = [e for e in entries if e.recipe]
    with ThreadPoolExecutor(args.jobs) as pool:
        for group in (refs, rest):
            jobs = [(e, seed) for e in group for seed in seeds]
            runs = list(pool.map(launch, jobs))
            for i, entry in enumerate(group):
                per_seed = runs[i * len(seeds) : (i + 1) * len(seeds)]
                failed = [r for r in per_seed if "error" in r]
                if failed:
                    results[entry.name] = failed[0]
                    print(f"| {entry.name} | failed: {failed[0]['error']} |", flush=True)
                    continue
                r = {
                    k: sum(x[k] for x in per_seed) / len(seeds) for k in per_seed[0] if k != "name"
                }
                psnrs = [x["psnr"] for x in per_seed]
                r.update(name=entry.name, seeds=per_seed, psnr_spread=(max(psnrs) - min(psnrs)) / 2)
                results[entry.name] = r
                ref = results.get(entry.compare, {})
                delta = f"{r['psnr'] - ref['psnr']:+.2f} dB" if "psnr" in ref else ""
                if entry.compare:
                    delta += f" ({entry.compare})"
                spread = f" +- {r['psnr_spread']:.2f}" if len(seeds) > 1 else ""
                print(
                    f"| {entry.name} | {r['bits']:,.0f} | {r['psnr']:.2f}{spread} | "
                    f"{r['ssim']:.3f} | {r['used']:.1%} | {r['perplexity']:.0f} | "
                    f"{r['cpu_s']:.0f} | {r['s_per_step']:.2f} | {delta} |",
                    flush=True,
                )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "ablation" if args.ablation else "pyramid" if args.pyramid else "results"
    (Path(args.out) / f"{name}.json").write_text(
        json.dumps(results, indent=1)
    )


if __name__ == "__main__":
    main()
