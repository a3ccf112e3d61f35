"""Encode throughput and on-disk size, against the compute bound and a naive script.

    python benchmarks/encode.py [--tokenizer vqtool:fsq-f4-64] \
        [--data '../shared/data/devset/devset-{000000..000005}.tar'] [--repeat 2]

On the same images and tokenizer, in one run:
  (a) the tokenizer's forward pass alone on pre-decoded uint8 tensors (the compute bound);
  (b) `vqtool encode` end to end (decode workers, batching, background Parquet writer);
  (c) a naive baseline: decode one image at a time in the main process, tokenize it
      alone, write one .npy per image.
  (d) with --scale-out: the Ray executor with 2 actors against (b) run locally on the
      same shards (one task per shard), and
  (e) reading the same shards from a local S3 endpoint (moto's server, started here)
      against local disk;
  (g) with --feed: the CPU feed at its limit: `vqtool encode` with a tokenizer whose
      forward costs ~nothing (a 4-colour palette at 1/8 resolution) against a bare
      multiprocessing loop over the same shards with the same number of processes (each
      reads its shards with tarfile, decodes with PIL - JPEG draft to the size -, resizes
      the short side bicubic and centre-crops, as vqtool's own tokenizers do), in
      interleaved rounds, medians;
  (h) with --decoders: `--decode draft` against `--decode pil` on the same photos: decode
      and resize time per image (one process), pixel differences (mean and max absolute, in
      levels of 255) and the share of tokens that differ, for vqtool's own tokenizer at
      its size and for a public family's preprocessing (ADM crop, 256 px);
  (f) with --small-tasks: 24+ small tasks (copies of the shards, one task each) against
      the same images as one task and against the Ray executor with 2 actors, and bytes
      per token on disk for the small files and at the default task size.
It prints images/s and the ratios b/a and b/c, then bytes per token on disk
against log2(vocabulary)/8 and the tokens' empirical entropy, and the size of
the same tokens under other Parquet settings (dictionary on/off, zstd level,
row-group size) so the writer's choice is a measured one.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default="vqtool:fsq-f4-64")
    p.add_argument("--data", default="../shared/data/devset/devset-{000000..000005}.tar")
    p.add_argument("--repeat", type=int, default=2, help="list the shards this many times")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--scale-out", action="store_true", help="also (d) Ray and (e) S3")
    p.add_argument("--only-scale-out", action="store_true", help="run (d) and (e) alone")
    p.add_argument("--copies", type=int, default=1, help="(d): copies of the shards (a longer job)")
    p.add_argument("--small-tasks", action="store_true", help="run (f) alone")
    p.add_argument("--rounds", type=int, default=2, help="(f), (g): interleaved rounds, median")
    p.add_argument("--feed", action="store_true", help="run (g) alone")
    p.add_argument("--decoders", action="store_true", help="run (h) alone")
    args = p.parse_args()
    if args.feed:
        feed(args)
        return
    if args.decoders:
        decoders(args)
        return
    if args.only_scale_out:
        scale_out(args)
        return
    if args.small_tasks:
        small_tasks(args)
        return

    import pyarrow.parquet as pq
    import torch

    from vqtool.assets import resolve
    from vqtool.data import (
        ImageStream,
        center_crop,
        decode_image,
        expand_sources,
        iter_samples,
        make_loader,
    )
    from vqtool.metrics import usage_stats
    from vqtool.models import Tokenizer
    from vqtool.runtime import pick_device
    from vqtool.tokens.encode import EncodeConfig, encode

    device = pick_device(args.device)
    tok = Tokenizer.load(resolve(args.tokenizer), device)
    size = tok.config.image_size
    shards = expand_sources([resolve(args.data)]) * args.repeat
    work = Path(tempfile.mkdtemp(prefix="vqtool-bench-"))
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"device {device}; tokenizer {args.tokenizer} ({size}x{size}, "
        f"{tok.layout.tokens_per_image} tokens, vocabulary {tok.vocab_size})"
    )

    # (a) compute bound: the forward pass on tensors decoded beforehand
    batches = [
        b.images
        for b in make_loader(ImageStream(shards, size, train=False), args.batch_size, args.workers)
    ]
    n_images = sum(len(b) for b in batches)
    tok.encode(batches[0].to(device))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches:
        tok.encode(b.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    a = n_images / (time.perf_counter() - t)

    # (b) vqtool encode end to end
    out = work / "tokens"
    cfg = EncodeConfig(
        [s.name for s in shards],
        args.tokenizer,
        str(out),
        args.batch_size,
        args.workers,
        args.device,
        shards_per_task=len(shards) // args.repeat,
    )
    result = encode(cfg)
    b = result.images / result.wall_s

    # (c) naive: one image at a time in the main process, one .npy per image
    npy = work / "npy"
    npy.mkdir()
    t = time.perf_counter()
    count = 0
    for shard in shards:
        for sample in iter_samples(shard):
            if sample.error:
                continue
            pixels = center_crop(decode_image(sample.data), size).unsqueeze(0).to(device)
            np.save(npy / f"{count:08d}.npy", tok.encode(pixels).cpu().numpy().astype(np.uint16))
            count += 1
    c = count / (time.perf_counter() - t)

    print("\n| path | images | images/s |")
    print("|---|---|---|")
    print(f"| (a) forward pass on pre-decoded tensors | {n_images} | {a:.1f} |")
    print(f"| (b) vqtool encode, end to end | {result.images} | {b:.1f} |")
    print(
        f"| (c) naive: decode + tokenize one image at a time, one .npy each | {count} | {c:.1f} |"
    )
    print(f"\nb/a = {b / a:.2f}, b/c = {b / c:.2f}")

    tables = [pq.read_table(f) for f in sorted(out.glob("*.parquet"))]
    tokens = np.concatenate([np.asarray(t["tokens"].combine_chunks().values) for t in tables])
    entropy = usage_stats(np.bincount(tokens, minlength=tok.vocab_size)).entropy_bits
    bound = math.log2(tok.vocab_size) / 8
    npy_bytes = sum(f.stat().st_size for f in npy.iterdir()) / max(count, 1)
    print(
        f"\non disk: {result.bytes_per_token:.3f} bytes/token = "
        f"{result.bytes_per_token / bound:.3f} x log2(vocab)/8 ({bound:.3f}); "
        f"empirical entropy {entropy / 8:.3f} bytes/token; .npy files "
        f"{npy_bytes / tok.layout.tokens_per_image:.2f}"
        " bytes/token"
    )

    # one task's file (each image once) rewritten under other Parquet settings
    table = tables[0]
    n_tokens = sum(len(t) for t in table["tokens"].to_pylist())
    print("\n| dictionary | compression | row group | bytes/token |")
    print("|---|---|---|---|")
    for dictionary in (True, False):
        for codec, level in (("zstd", 1), ("zstd", 3), ("zstd", 9), ("zstd", 19), ("snappy", None)):
            for rows in (128, 512, 2048):
                path = work / "variant.parquet"
                pq.write_table(
                    table,
                    path,
                    compression=codec,
                    compression_level=level,
                    use_dictionary=["tokens.list.element"] if dictionary else False,
                    row_group_size=rows,
                )
                per = path.stat().st_size / n_tokens
                name = f"{codec}-{level}" if level else codec
                print(f"| {'on' if dictionary else 'off'} | {name} | {rows} | {per:.3f} |")
    shutil.rmtree(work)
    if args.scale_out:
        scale_out(args)


def _bare_worker(job: tuple[list[str], int]) -> int:
    """One process of the bare loop: its shards, every image decoded and cropped."""
    import io
    import tarfile

    from PIL import Image

    paths, size = job
    done = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg",
                                                                            ".png", ".webp")):
                    continue
                img = Image.open(io.BytesIO(tar.extractfile(member).read()))
                img.draft("RGB", (size, size))
                img = img.convert("RGB")
                w, h = img.size
                s = size / min(w, h)
                img = img.resize((max(size, round(w * s)), max(size, round(h * s))),
                                 Image.Resampling.BICUBIC)  # fmt: skip
                left, top = (img.width - size) // 2, (img.height - size) // 2
                np.asarray(img.crop((left, top, left + size, top + size)))
                done += 1
    return done


def feed(args) -> None:
    """(g) vqtool's CPU feed against a bare multiprocessing PIL loop, same shards and
    processes, a tokenizer that costs ~nothing."""
    import multiprocessing as mp

    import torch

    from vqtool.assets import resolve
    from vqtool.data import expand_sources
    from vqtool.models import Tokenizer, TokenizerConfig
    from vqtool.tokens.encode import EncodeConfig, encode

    shards = [s.path for s in expand_sources([resolve(args.data)])] * args.repeat
    work = Path(tempfile.mkdtemp(prefix="vqtool-bench-feed-"))
    size = 64
    cheap = Tokenizer(TokenizerConfig.from_dict({
        "model": {"architecture": "palette", "downsample": 8},
        "quantizer": {"kind": "palette", "num_colors": 4}, "image_size": size,
    }))  # fmt: skip
    path = work / "cheap.safetensors"
    cheap.save(path)
    n = max(1, args.workers)

    def ours() -> tuple[float, int]:
        out = work / f"run-{time.monotonic_ns()}"
        t = time.perf_counter()
        r = encode(EncodeConfig(sources=shards, tokenizer=str(path), out=str(out),
                                workers=args.workers, batch_size=args.batch_size,
                                device="cpu", image_size=size))  # fmt: skip
        return time.perf_counter() - t, r.images

    def bare() -> tuple[float, int]:
        t = time.perf_counter()
        parts = [shards[i::n] for i in range(n)]
        with mp.get_context("fork").Pool(n) as pool:
            images = sum(pool.map(_bare_worker, [(p, size) for p in parts]))
        return time.perf_counter() - t, images

    times: dict[str, list[float]] = {"bare": [], "vqtool": []}
    counts = {}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("vqtool", ours)):
            seconds, images = fn()
            times[name].append(seconds)
            counts[name] = images
    med = {k: float(np.median(v)) for k, v in times.items()}
    rate = {k: counts[k] / med[k] for k in med}
    print(f"# (g) the CPU feed: {counts['vqtool']} images ({len(shards)} shards) at {size} px, "
          f"{n} decoding process(es), {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; median of {args.rounds} interleaved rounds")  # fmt: skip
    print("| pipeline | images | s | images/s | vs bare loop |\n|---|---|---|---|---|")
    for k, label in (("bare", "bare multiprocessing PIL loop"),
                     ("vqtool", "vqtool encode, palette tokenizer (forward ~0)")):  # fmt: skip
        print(f"| {label} | {counts[k]} | {med[k]:.2f} | {rate[k]:.1f} | "
              f"{rate[k] / rate['bare']:.2f}x |")


def decoders(args) -> None:
    """(h) draft against pil: time, pixels, tokens."""
    import io

    import torch

    from vqtool.assets import resolve
    from vqtool.data import expand_sources
    from vqtool.data.images import encode_pixels
    from vqtool.data.sources import iter_samples
    from vqtool.models import Tokenizer

    torch.set_num_threads(1)
    from PIL import Image

    samples = [s for sh in expand_sources([resolve(args.data)]) for s in iter_samples(sh)
               if not s.error]  # fmt: skip
    formats = sorted({Image.open(io.BytesIO(s.data)).format for s in samples})
    for s in samples:  # draft applies to JPEGs only: the photos as JPEGs (quality 95)
        buf = io.BytesIO()
        Image.open(io.BytesIO(s.data)).convert("RGB").save(buf, "JPEG", quality=95)
        s.data = buf.getvalue()
    tok = Tokenizer.load(resolve(args.tokenizer))
    print(f"# (h) --decode draft vs pil: {len(samples)} photos of {args.data} ({'/'.join(formats)}"
          f") saved as JPEG quality 95, one process, {platform.machine()}, torch "
          f"{torch.__version__}")  # fmt: skip
    print("| preprocessing | pil ms/image | draft ms/image | speed-up | mean abs pixel diff | "
          "max | tokens that differ |\n|---|---|---|---|---|---|---|")
    for resize, size, label in (("bicubic", tok.config.image_size, "vqtool's own"),
                                ("adm", 256, "ADM crop (LlamaGen, SimpleAR)")):  # fmt: skip
        out, seconds = {}, {}
        for draft in (False, True):
            t = time.perf_counter()
            out[draft] = [encode_pixels(s.data, size, resize, draft=draft).pixels
                          for s in samples]  # fmt: skip
            seconds[draft] = (time.perf_counter() - t) / len(samples)
        a, b = torch.stack(out[False]).float(), torch.stack(out[True]).float()
        gap = (a - b).abs()
        differ = "n/a"
        if resize == "bicubic":
            with torch.inference_mode():
                ta, tb = tok.encode(torch.stack(out[False])), tok.encode(torch.stack(out[True]))
            differ = f"{(ta != tb).float().mean().item():.2%} of {ta.numel():,}"
        print(f"| {label}, {size} px | {seconds[False] * 1e3:.2f} | {seconds[True] * 1e3:.2f} | "
              f"{seconds[False] / seconds[True]:.2f}x | {gap.mean():.2f} | {gap.max():.0f} | "
              f"{differ} |")


def scale_out(args) -> None:
    """(d) Ray executor vs local, (e) S3 endpoint vs local disk: same shards, tokenizer,
    settings; one task per shard."""
    import ray

    from vqtool.assets import resolve
    from vqtool.data import expand_sources
    from vqtool.tokens.encode import EncodeConfig, encode

    shards = [s.name for s in expand_sources([resolve(args.data)])]
    work = Path(tempfile.mkdtemp(prefix="vqtool-bench-scale-"))
    base = dict(tokenizer=args.tokenizer, batch_size=args.batch_size, device=args.device)

    def timed(**kw):
        out = work / f"run-{time.monotonic_ns()}"
        t = time.perf_counter()
        r = encode(EncodeConfig(out=kw.pop("out", str(out)), **base, **kw))
        return r, time.perf_counter() - t

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bench")
    urls = []
    for path in shards:
        fs.put_file(path, f"bench/shards/{Path(path).name}")
        urls.append(f"s3://bench/shards/{Path(path).name}")
    disk, t_disk = timed(sources=shards, workers=args.workers)
    s3, t_s3 = timed(sources=urls, workers=args.workers)
    one, t_one = timed(sources=urls, workers=args.workers, shards_per_task=len(urls))
    server.stop()
    print(f"\n(e) {disk.images} images read from")
    print("| source | wall s | images/s | ratio to disk |")
    print("|---|---|---|---|")
    print(f"| local disk | {t_disk:.1f} | {disk.images / t_disk:.1f} | 1 |")
    print(f"| S3 endpoint (moto, localhost), one task per shard | {t_s3:.1f} | "
          f"{s3.images / t_s3:.1f} | {t_disk / t_s3:.2f} |")  # fmt: skip
    print(f"| S3 endpoint, one task of {len(urls)} shards | {t_one:.1f} | "
          f"{one.images / t_one:.1f} | {t_disk / t_one:.2f} |")  # fmt: skip
    if args.copies > 1:  # real copies: the same file twice is read once
        many = []
        for c in range(args.copies):
            for path in shards:
                copy = work / f"copy{c}-{Path(path).name}"
                shutil.copyfile(path, copy)
                many.append(str(copy))
        shards = many
    local, t_local = timed(sources=shards, workers=args.workers)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    _, t_warm = timed(sources=shards[:1], workers=0, executor="ray", ray_actors=2)
    ray_r, t_ray = timed(sources=shards, workers=0, executor="ray", ray_actors=2)
    ray.shutdown()
    print(f"\n(d) {local.images} images, {len(shards)} tasks")
    print("| run | wall s | images/s | ratio to local |")
    print("|---|---|---|---|")
    print(
        f"| (b) local, {args.workers} decode workers | {t_local:.1f} | "
        f"{local.images / t_local:.1f} | 1 |"
    )
    print(
        f"| (d) Ray, 2 actors (cluster already up; actors start and load the tokenizer) | "
        f"{t_ray:.1f} | {ray_r.images / t_ray:.1f} | {t_local / t_ray:.2f} |"
    )
    print(f"(a one-shard Ray run, actors included, took {t_warm:.1f} s)")

    shutil.rmtree(work)


def small_tasks(args) -> None:
    """(f) Many small tasks vs one task of the same images (the decode workers must not
    restart per task), vs Ray with 2 actors; bytes per token of 50-image files and of the
    default task size against log2(vocabulary)/8."""
    import statistics

    import pyarrow.parquet as pq

    from vqtool.assets import resolve
    from vqtool.data import expand_sources
    from vqtool.tokens.encode import EncodeConfig, encode

    shards = [s.name for s in expand_sources([resolve(args.data)])]
    work = Path(tempfile.mkdtemp(prefix="vqtool-bench-tasks-"))
    copies = []
    for c in range(max(1, -(-24 // len(shards)))):  # real copies: one path is read once
        for path in shards:
            copy = work / f"copy{c}-{Path(path).name}"
            shutil.copyfile(path, copy)
            copies.append(str(copy))
    base = dict(tokenizer=args.tokenizer, batch_size=args.batch_size, device=args.device)

    def timed(**kw):
        out = work / f"run-{time.monotonic_ns()}"
        t = time.perf_counter()
        r = encode(EncodeConfig(sources=copies, out=str(out), **base, **kw))
        return r, time.perf_counter() - t, out

    runs: dict[str, list[float]] = {"small": [], "one": [], "ray": []}
    have_ray = True
    try:
        import ray
    except ImportError:
        have_ray = False
    if have_ray:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        timed(workers=0, executor="ray", ray_actors=2, shards_per_task=len(copies))  # warm-up
    for _ in range(args.rounds):  # interleaved, so load on the machine hits all alike
        small, t_small, small_out = timed(workers=args.workers, shards_per_task=1)
        runs["small"].append(t_small)
        one, t_one, one_out = timed(workers=args.workers)  # the default task size
        runs["one"].append(t_one)
        if have_ray:
            _, t_ray, _ = timed(workers=0, executor="ray", ray_actors=2, shards_per_task=1)
            runs["ray"].append(t_ray)
    if have_ray:
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    n = small.images
    print(f"\n(f) {n} images in {small.tasks_total} tasks of ~{n // small.tasks_total} images, "
          f"median of {args.rounds} interleaved rounds")  # fmt: skip
    print("| run | wall s | images/s | (f1)'s images/s over this run's |")
    print("|---|---|---|---|")
    print(f"| (f1) local, {small.tasks_total} small tasks, {args.workers} decode workers | "
          f"{med['small']:.1f} | {n / med['small']:.1f} | 1 |")  # fmt: skip
    ratio = {k: v / med["small"] for k, v in med.items()}
    print(f"| (f2) local, the same images as {one.tasks_total} task (default --task-images) | "
          f"{med['one']:.1f} | {n / med['one']:.1f} | {ratio['one']:.2f} |")  # fmt: skip
    if "ray" in med:
        print(f"| (f3) Ray, 2 actors, {small.tasks_total} tasks (cluster up, actors warm) | "
              f"{med['ray']:.1f} | {n / med['ray']:.1f} | {ratio['ray']:.2f} |")  # fmt: skip
    bound = math.log2(small.vocab_size) / 8

    def per_token(out: Path) -> tuple[float, int, int]:
        files = sorted(out.glob("*.parquet"))
        size = sum(f.stat().st_size for f in files)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        return size / (rows * (small.tokens // small.images)), len(files), rows

    # the default task size on distinct images (the copies above repeat them, which zstd
    # would find): the original shards as one task
    distinct = work / "distinct"
    encode(EncodeConfig(sources=shards, out=str(distinct), workers=args.workers, **base))
    for label, out in (("small tasks", small_out), ("default task size", distinct)):
        bpt, files, rows = per_token(out)
        print(f"on disk, {label} ({files} files, ~{rows // files} images each): {bpt:.3f} "
              f"bytes/token = {bpt / bound:.3f} x log2(vocab)/8 ({bound:.3f})")  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
