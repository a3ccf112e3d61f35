"""How many tokens change under bf16, per public tokenizer family?

    python benchmarks/pretrained.py [--size 128] [--images 8] [--family llamagen=path.pt ...]

For each family, loads a checkpoint (a file you name with --family, or, with
no download available, random weights built from the published key lists in
tests/data/pretrained-keys), encodes the bundled sample photos in fp32 and
under bf16 autocast (tokens from float32 distances either way), and reports
the share of tokens that differ, plus fp32 images/s. Random weights are not
trained weights: their latents sit differently relative to the codebook, so
read the random-weight rows as an indication, and rerun with real files.
"""

from __future__ import annotations

import argparse
import platform
import re
import tempfile
import time
from pathlib import Path

import torch

from vqtool.assets import resolve
from vqtool.data.images import encode_pixels
from vqtool.data.sources import expand_sources, iter_samples
from vqtool.pretrained.convert import load_foreign

KEYS = Path(__file__).resolve().parents[1] / "tests" / "data" / "pretrained-keys"
DEFAULT = {
    "llamagen": ("llamagen_vq16", lambda sd: {"model": sd}),
    "taming": ("taming_f16_1024", lambda sd: {"state_dict": sd}),
    "taming-gumbel": ("taming_gumbel_f8_8192", lambda sd: {"state_dict": sd}),
    "open-magvit2": ("omv2_256_L", lambda sd: {"state_dict": sd}),
    "maskgit": ("maskgit_vqgan", lambda sd: sd),
    "chameleon": ("chameleon_vqgan", lambda sd: {"state_dict": sd}),
    "janus": ("janus_vq16", lambda sd: {f"gen_vision_model.{k}": v for k, v in sd.items()}),
    "emu3": ("emu3_vision", lambda sd: sd),
    "var": ("var_vae", lambda sd: sd),  # vae_ch160v4096z32.pth: a bare state_dict
}


def random_tensor(key: str, dims: tuple, g: torch.Generator) -> torch.Tensor:
    """A random value for a published weight: N(0, 0.02), except BatchNorm statistics
    (Emu3's temporal blocks), which must stay a variance (positive) and a step count."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(dims, dtype=torch.long)
    if key.endswith("running_var"):
        return 1 + torch.rand(dims, generator=g)
    return torch.randn(dims, generator=g) * 0.02


def random_file(name: str, wrap, folder: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in (KEYS / f"keys_{name}.txt").read_text().splitlines():
        key, shape = re.match(r"(\S+) \((.*)\)", line).groups()
        dims = tuple(int(x) for x in shape.split(",") if x.strip())
        sd[key] = random_tensor(key, dims, g)
    path = folder / f"{name}.pt"
    torch.save(wrap(sd), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--family", action="append", default=[], help="name=checkpoint file")
    args = ap.parse_args()
    files = dict(f.split("=", 1) for f in args.family)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    shard = expand_sources([resolve("vqtool:sample")])[0]
    raw = [s.data for s in iter_samples(shard)][: args.images]
    print("| family | weights | tokens/image | differing under bf16 | fp32 images/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family, (name, wrap) in DEFAULT.items():
            path = files.get(family) or random_file(name, wrap, Path(tmp))
            tok, info = load_foreign(path, image_size=args.size)
            images = torch.stack([encode_pixels(d, args.size, tok.config.resize)[0] for d in raw])
            t0 = time.perf_counter()
            fp32 = tok.encode(images)
            rate = len(images) / (time.perf_counter() - t0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = tok.encode(images)
            diff = float((fp32 != bf16).float().mean())
            which = "file" if family in files else "random (key lists)"
            print(f"| {family} | {which} | {fp32.shape[1]} | {diff:.1%} | {rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
