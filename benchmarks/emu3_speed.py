"""Emu3's tokenizer at its default resolution on a CPU: seconds per image of `vqtool
encode` beside Emu3's own pipeline (`emu3/train/prepare_data.py`: its area resize to 720^2
pixels, the image processor's smart_resize with min/max pixels, `Emu3VisionVQModel.encode`)
on the same photos, the same network and the same thread count, one image at a time on
both sides; tokens compared.

    python benchmarks/emu3_speed.py --originals DIR [--images 2] [--channels 32]
        [--threads 1] [--profile]

DIR holds baaivision+Emu3 (its `emu3/` package; needs transformers). The network is
Emu3's VisionTokenizer architecture with random weights and `--channels` base channels
(the release: 256; the issue's report: 32), built with transformers' Emu3VQVAE and saved
in the release's names. `--profile` prints vqtool's top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pretrained_parity import ROOT, emu3_original

from vqtool.data.sources import expand_sources, iter_samples
from vqtool.pretrained.staged import EMU3_POLICY
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset


def release(channels: int) -> dict[str, torch.Tensor]:
    """Emu3's VisionTokenizer layout (f8, 32,768 codes of 4 dims, ch_mult 1,2,2,4, two
    blocks, attention at the lowest stage) with `channels` base channels, random weights,
    in the release's names."""
    import transformers
    from transformers.models.emu3.modeling_emu3 import Emu3VQVAE

    from vqtool.pretrained.renames import emu3_original_names

    torch.manual_seed(0)
    config = transformers.Emu3VQVAEConfig(
        codebook_size=32768, embed_dim=4, latent_channels=4, base_channels=channels,
        channel_multiplier=[1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[3],
        temporal_downsample_factor=4, hidden_size=channels * 4,
        num_attention_heads=1,
    )  # fmt: skip
    sd = emu3_original_names(Emu3VQVAE(config).eval().state_dict())
    projections = (".q.weight", ".k.weight", ".v.weight", ".proj_out.weight")
    return {k: (v.reshape(*v.shape, 1, 1) if k.endswith(projections) and v.ndim == 2
                else v).contiguous() for k, v in sd.items()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    from safetensors.torch import save_file

    from vqtool.data.policies import parse_policy
    from vqtool.pretrained.convert import load_foreign

    torch.set_num_threads(args.threads)
    policy = parse_policy(EMU3_POLICY)
    samples = [s for s in iter_samples(expand_sources([args.shard])[0]) if not s.error]
    samples = samples[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sd = release(args.channels)
        save_file(sd, str(work / "model.safetensors"))
        (work / "config.json").write_text("{}")
        tok, _ = load_foreign(work / "model.safetensors")
        part = work / "photos.tar"
        with tarfile.open(args.shard) as src, tarfile.open(part, "w") as dst:
            keys = {s.key for s in samples}
            for m in src.getmembers():
                if m.isfile() and m.name.split(".", 1)[0] in keys:
                    dst.addfile(m, src.extractfile(m))
        cfg = EncodeConfig(sources=[str(part)], tokenizer=str(work / "model.safetensors"),
                           out=str(work / "tokens"), workers=0, device="cpu", precision="fp32",
                           threads=args.threads, batch_size=1)  # fmt: skip
        profiler = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        encode(cfg)
        if profiler:
            profiler.disable()
        ours_s = (time.perf_counter() - t0) / len(samples)
        from vqtool.pretrained.staged import emu3_config

        o = emu3_original(args.originals / "baaivision+Emu3", sd,
                          emu3_config(sd, 512), policy)  # fmt: skip
        found, rows, grids = TokenDataset.open(str(work / "tokens")).select_native(
            [s.key for s in samples])  # fmt: skip
        order = {k: i for i, k in enumerate(found)}
        theirs_s, differ, total = 0.0, 0, 0
        with torch.no_grad():
            for s in samples:
                t = time.perf_counter()
                codes = o.encode(o.preprocess(s.data)[None])
                theirs_s += time.perf_counter() - t
                row = rows[order[s.key]].astype(np.int64)
                ours = torch.as_tensor(row).reshape(codes.shape)
                differ += int((ours != codes).sum())
                total += ours.numel()
        theirs_s /= len(samples)
    sizes = [image_size_of(s.data) for s in samples]
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.channels} base channels, policy {EMU3_POLICY}, photos {sizes}")
    print("| pipeline | s/image | ratio | tokens differing |\n|---|---|---|---|")
    print(f"| Emu3's prepare_data.py + image processor + encode | {theirs_s:.2f} | 1.00 | |")
    print(f"| vqtool encode (whole run / images) | {ours_s:.2f} | {ours_s / theirs_s:.2f} | "
          f"{differ} of {total} |")
    if profiler:
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


def image_size_of(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


if __name__ == "__main__":
    main()
