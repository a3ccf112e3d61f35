"""Encode on a GPU: the model alone, vqtool end to end, and a LlamaGen-style script.

    bash benchmarks/gpu.sh                 # on a GPU machine: <= 8 minutes
    bash benchmarks/gpu.sh --dry-run       # anywhere: tiny, on the CPU (CI runs this)

For the bundled tokenizer (64 px, 256 tokens) and a LlamaGen VQ-16 architecture at
256 px (random weights: nothing is downloaded; speed does not depend on the weights),
on the same images, in one run:
  (a) the forward pass alone on uint8 batches already on the device (bf16 autocast on
      CUDA): the compute bound;
  (b) `vqtool encode` end to end (decode workers, pinned memory, non-blocking copies,
      bf16 on CUDA, Parquet out);
  (c) LlamaGen's `extract_codes_c2i.py` way, rewritten here: a DataLoader with batch
      size 1, each image and its flip in one forward, one .npy per image;
and the peak GPU memory of each. Ratios b/a and b/c are printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

LLAMAGEN_VQ16 = {  # LlamaGen's VQ-16 as vqtool's conv model (pretrained/families.py)
    "model": {"architecture": "conv", "channels": 128, "channel_mult": [1, 1, 2, 2, 4],
              "num_res_blocks": 2, "decoder_res_blocks": 3, "attention": True,
              "attention_levels": [4], "z_channels": 256, "embed_dim": 8,
              "swish": "x_sigmoid", "attention_impl": "manual"},
    "quantizer": {"kind": "vq", "codebook_size": 16384, "cosine": True, "ema_decay": None,
                  "kmeans_init": False, "distance": "expanded"},
    "image_size": 256, "pixel_range": "-1,1", "resize": "adm",
    "pixel_arithmetic": "normalize_half",
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/devset/devset-{000000..000005}.tar")
    p.add_argument("--images", type=int, default=3000, help="images per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, a few images of the bundled sample, a narrow VQ-16")  # fmt: skip
    p.add_argument("--json-out", help="also write the figures here")
    args = p.parse_args()
    if args.dry_run:
        args.device, args.images, args.batch_size, args.workers = "cpu", 4, 2, 0
        args.data = "vqtool:sample"

    import torch

    from vqtool.assets import resolve
    from vqtool.data import expand_sources
    from vqtool.models import Tokenizer, TokenizerConfig
    from vqtool.runtime import pick_device

    device = pick_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="vqtool-gpu-"))
    shards = [s.name for s in expand_sources([resolve(args.data)])]
    vq16 = json.loads(json.dumps(LLAMAGEN_VQ16))
    if args.dry_run:
        vq16["model"]["channels"], vq16["model"]["num_res_blocks"] = 16, 1
    torch.manual_seed(0)
    Tokenizer(TokenizerConfig.from_dict(vq16)).save(work / "vq16.safetensors")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# {card or platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}, device {device}, {args.images} images per run, batch "
          f"{args.batch_size}, {args.workers} decode workers")  # fmt: skip
    rows = []
    tokenizers = [
        ("bundled fsq-f4-64", "vqtool:fsq-f4-64"),
        ("LlamaGen VQ-16 (random)", str(work / "vq16.safetensors")),
    ]
    for name, checkpoint in tokenizers:
        rows.append(measure(name, checkpoint, shards, args, device, work))
    print(
        "\n| tokenizer | (a) model alone img/s | (b) vqtool encode img/s | (c) LlamaGen-style "
        "img/s | b/a | b/c | peak GPU MiB (a / b / c) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['a']:.1f} | {r['b']:.1f} | {r['c']:.1f} | "
              f"{r['b'] / r['a']:.2f} | {r['b'] / r['c']:.2f} | "
              f"{r['mem_a']:.0f} / {r['mem_b']:.0f} / {r['mem_c']:.0f} |")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work)


def measure(name, checkpoint, shards, args, device, work: Path) -> dict:
    import torch

    from vqtool.data import ImageStream, expand_sources, iter_samples, make_loader
    from vqtool.data.images import encode_pixels
    from vqtool.pretrained.opener import open_tokenizer
    from vqtool.tokens.encode import EncodeConfig, encode

    tok = open_tokenizer(checkpoint, device, None).tokenizer
    size = tok.config.image_size
    cuda = device.type == "cuda"
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cuda)
    sources = expand_sources(shards)
    repeat = -(-args.images // max(1, sum(1 for s in sources for _ in iter_samples(s))))
    copies = []  # real copies: encode reads one path once
    for r in range(repeat):
        for shard in sources:
            copy = work / f"copy{r}-{Path(shard.path).name}"
            if not copy.exists():
                shutil.copyfile(shard.path, copy)
            copies.append(str(copy))
    sources = expand_sources(copies)

    def peak() -> float:
        if not cuda:
            return 0.0
        value = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return value

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    # (a) the forward pass alone, on batches already on the device
    stream = ImageStream(sources, size, train=False, resize=tok.config.resize)
    batches, n = [], 0
    for b in make_loader(stream, args.batch_size, args.workers):
        batches.append(b.images.to(device))
        n += len(b.images)
        if n >= args.images:
            break
    with torch.inference_mode(), torch.autocast(**amp):
        tok.encode(batches[0])  # warm-up
        peak()
        sync()
        t = time.perf_counter()
        for b in batches:
            tok.encode(b)
        sync()
    a = n / (time.perf_counter() - t)
    mem_a = peak()
    del batches

    # (b) vqtool encode end to end, as a user runs it
    out = str(work / f"enc-{len(name)}")
    cfg = EncodeConfig(sources=[s.name for s in sources], tokenizer=checkpoint, out=out,
                       batch_size=args.batch_size, workers=args.workers, device=str(device),
                       precision="bf16" if cuda else "fp32", shards_per_task=1)  # fmt: skip
    t = time.perf_counter()
    result = encode(cfg)
    b_rate = result.images / (time.perf_counter() - t)
    mem_b = peak()

    # (c) LlamaGen's extract_codes way: an indexed dataset decoded in DataLoader workers,
    # batch size 1, the image and its flip in one forward, one .npy per image
    raw = [s.data for shard in sources for s in iter_samples(shard) if s.data][: args.images]

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(raw)

        def __getitem__(self, i):
            return encode_pixels(raw[i], size, tok.config.resize)[0]

    codes = work / f"codes-{len(name)}"
    codes.mkdir()
    loader = torch.utils.data.DataLoader(Images(), batch_size=1, num_workers=args.workers,
                                         pin_memory=cuda)  # fmt: skip
    done = 0
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast(**amp):
        for x in loader:
            x = x.to(device)
            both = torch.cat([x, torch.flip(x, dims=[-1])])
            np.save(codes / f"{done}.npy", tok.encode(both).cpu().numpy()[None])
            done += 1
    sync()
    c = done / (time.perf_counter() - t)
    mem_c = peak()
    print(f"{name}: (a) {a:.1f} img/s, (b) {b_rate:.1f} img/s ({result.images} images), "
          f"(c) {c:.1f} img/s ({done} images)")  # fmt: skip
    return {"name": name, "a": a, "b": b_rate, "c": c, "mem_a": mem_a, "mem_b": mem_b,
            "mem_c": mem_c, "images": result.images}  # fmt: skip


if __name__ == "__main__":
    main()
