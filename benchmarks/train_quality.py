"""Train recipes for a fixed number of steps and report held-out quality.

    python benchmarks/train_quality.py --steps 200 \
        --data '../shared/data/devset/devset-{000000..000004}.tar' \
        --eval-data ../shared/data/devset/devset-000005.tar [--recipes vqgan,lfq,fsq,rqvae]

Each recipe runs through the real command line (`vqtool train ... --json`), so
this also checks that every recipe trains and writes a loadable checkpoint.
Prints a Markdown table: tokens and bits per image, steps, wall time, and on
the held-out images PSNR, SSIM, share of codes used and perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    every = ",".join(sorted(x.stem for x in (ROOT / "recipes").glob("*.toml")))
    p.add_argument("--recipes", default=every)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--data", default="../shared/data/devset/devset-{000000..000004}.tar")
    p.add_argument("--eval-data", default="../shared/data/devset/devset-000005.tar")
    p.add_argument("--out", default="runs/quality")
    args = p.parse_args()

    import torch

    from vqtool.models import Tokenizer

    print(f"# {args.steps} steps per recipe; held-out: {args.eval_data}")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    cols = [
        "recipe",
        "tokens/img",
        "bits/img",
        "steps",
        "wall s",
        "PSNR dB",
        "SSIM",
        "codes used",
        "perplexity",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name in args.recipes.split(","):
        run = Path(args.out) / name
        cmd = [
            sys.executable,
            "-m",
            "vqtool",
            "train",
            str(ROOT / "recipes" / f"{name}.toml"),
            "--data",
            args.data,
            "--eval-data",
            args.eval_data,
            "--out",
            str(run),
            "--steps",
            str(args.steps),
            "--json",
            "--set",
            f"eval.every={args.steps}",
        ]
        if (run / "state.json").exists():
            cmd.append("--resume")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {name} | failed: {proc.stderr.strip().splitlines()[-1][:80]} |", flush=True)
            continue
        result = json.loads(proc.stdout)
        layout = Tokenizer.load(result["checkpoint"]).layout  # the checkpoint loads
        bits = layout.tokens_per_image * math.log2(layout.vocab_size)
        e = result["eval"]
        print(
            f"| {name} | {layout.tokens_per_image} | {bits:,.0f} | {result['steps']} | "
            f"{result['wall_s']:.0f} | {e['psnr']:.2f} | {e['ssim']:.3f} | "
            f"{e['used_share']:.1%} | {e['perplexity']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
