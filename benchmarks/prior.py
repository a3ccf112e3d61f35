"""Priors on real tokens: do they learn structure, and how fast do they sample?

    python benchmarks/prior.py --steps 300 [--rq-tokenizer runs/rqvae/tokenizer.safetensors]

1. Encodes ../shared/data/devset (shards 0-4 train, shard 5 held out) with the
   bundled FSQ tokenizer (16x16 tokens, 1000 codes) and, for the
   RQ-transformer, with a residual tokenizer (8x8x4 tokens; trained here with
   recipes/rqvae.toml when --rq-tokenizer is not given).
2. Trains each prior recipe for --steps on CPU with the real training loop and
   reports held-out bits per token next to the unigram entropy of the same
   held-out tokens and log2 of the vocabulary.
   `--kinds ar,maskgit,dalle,muse --captions json:category` encodes the devset with
   each photo's category as its caption, trains a word-level text tokenizer on the
   training captions (tokenizers' WordLevelTrainer), and reports the text priors'
   held-out bits per image token given the caption and without it.
   `--kinds var` encodes the devset with VAR's tokenizer (`--var-tokenizer FILE`, default
   random weights in its published architecture, tests/data/pretrained-keys) and trains
   `prior-var` (next-scale, block-causal) and `prior-ar` (the same 680-token rows read in
   raster order) on the same rows, same steps, reporting both held-out figures.
3. Times sampling of the same 16x16 grid: MaskGIT with T=8 steps against
   autoregressive decoding with and without the KV cache (and RQ with and
   without its spatial cache).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vqtool.priors.checkpoint import load_prior
from vqtool.priors.recipe import load_recipe
from vqtool.priors.sampling import SamplingConfig, generate
from vqtool.priors.task import train_prior
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset
from vqtool.training import train_tokenizer

DEVSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "devset"


def encode_split(tokenizer: str, out: Path, captions: str = "auto") -> tuple[str, str]:
    train, held = out / "train", out / "heldout"
    shards = [str(DEVSET / f"devset-{i:06d}.tar") for i in range(5)]
    encode(EncodeConfig(shards, tokenizer, str(train), batch_size=32, workers=2,
                        caption_from=captions))  # fmt: skip
    encode(EncodeConfig([str(DEVSET / "devset-000005.tar")], tokenizer, str(held), batch_size=32,
                        caption_from=captions))  # fmt: skip
    return str(train), str(held)


def word_tokenizer(train: str, path: Path) -> str:
    """A word-level tokenizer.json trained on the training rows' captions."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    captions = [c for _, _, b in TokenDataset.open(train).iter_batches(columns=("key", "tokens",
                                                                                "caption"))
                for c in b.column("caption").to_pylist() if c]  # fmt: skip
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(path))
    print(f"text tokenizer: {tok.get_vocab_size()} words from {len(captions)} training captions")
    return str(path)


def time_sampling(prior: str, n: int, config: SamplingConfig, repeats: int = 1) -> float:
    loaded = load_prior(prior)
    best = float("inf")
    for _ in range(repeats):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        rows = generate(loaded.model, n, None, config, g, torch.device("cpu"))
        best = min(best, time.perf_counter() - t0)
    return rows.numel() / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/bench-prior")
    ap.add_argument("--rq-tokenizer", default=None)
    ap.add_argument("--rq-tokenizer-steps", type=int, default=200)
    ap.add_argument("--samples", default="1,8", help="grids per sampling call, comma-separated")
    ap.add_argument(
        "--sample-only", action="store_true", help="time sampling of the priors already in --out"
    )
    ap.add_argument("--kinds", default="ar,maskgit,rq")
    ap.add_argument("--var-tokenizer", default=None, help="vae_ch160v4096z32.pth (--kinds var)")
    ap.add_argument("--captions", default="auto", help="encode --caption-from (json:category)")
    ap.add_argument(
        "--set", action="append", default=[], help="recipe override, e.g. prior.dropout=0.1"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    if args.sample_only:
        ckpt = {k: str(out / k / "prior.safetensors") for k in args.kinds.split(",")}
        if "maskgit" in ckpt:
            maskgit_steps(ckpt["maskgit"], str(out / "fsq" / "heldout"))
        return time_all(ckpt, args.samples)
    fsq = encode_split("vqtool:fsq-f4-64", out / "fsq", args.captions)
    data = {"ar": fsq, "maskgit": fsq, "dalle": fsq, "muse": fsq}
    kinds = args.kinds.split(",")
    text = []
    if {"dalle", "muse"} & set(kinds):
        text = [f"text.tokenizer={word_tokenizer(fsq[0], out / 'words.json')}"]
    if {"rq", "contextual_rq"} & set(kinds):
        rq_tok = args.rq_tokenizer
        if rq_tok is None:
            r = load_recipe("recipes/rqvae.toml", [f"train.steps={args.rq_tokenizer_steps}"])
            shards = [str(DEVSET / f"devset-{i:06d}.tar") for i in range(5)]
            rq_tok = train_tokenizer(r, shards, out / "rqvae").checkpoint
        data["rq"] = data["contextual_rq"] = encode_split(rq_tok, out / "rq")
    if "var" in kinds:
        var_tok = args.var_tokenizer
        if var_tok is None:
            from pretrained import DEFAULT, random_file  # benchmarks/pretrained.py

            var_tok = str(random_file(*DEFAULT["var"], out))
        data["var"] = data["ar-pyramid"] = encode_split(var_tok, out / "var-tokens")
        kinds.insert(kinds.index("var") + 1, "ar-pyramid")

    rows = []
    for kind in kinds:
        train, held = data[kind]
        extra = text if kind in ("dalle", "muse") else []
        recipe = "ar" if kind == "ar-pyramid" else kind.replace("_", "-")
        r = load_recipe(f"recipes/prior-{recipe}.toml",
                        [f"train.steps={args.steps}", *extra, *args.set])  # fmt: skip
        t0 = time.perf_counter()
        result = train_prior(r, [train], out / kind, eval_data=[held])
        wall = time.perf_counter() - t0
        e = result.eval
        rows.append((kind, e, wall, result.checkpoint))
        print(json.dumps({"kind": kind, "wall_s": round(wall, 1), **e}), flush=True)

    print("\n| prior | tokens | steps | wall s | held-out bits/token | without caption |"
          " caption-averaged | unigram bits | log2 V |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, e, wall, _ in rows:
        uncond = e.get("unconditioned_bits_per_token")
        avg = e.get("caption_averaged_bits_per_token")
        print(
            f"| {kind} | {SHAPES.get(kind, '16x16')} | {args.steps} | {wall:.0f} | "
            f"{e['bits_per_token']:.3f} | {'' if uncond is None else f'{uncond:.3f}'} | "
            f"{'' if avg is None else f'{avg:.3f}'} | "
            f"{e['unigram_bits']:.3f} | {e['max_bits']:.3f} |"
        )

    ckpt = {kind: c for kind, _, _, c in rows if kind in ("ar", "maskgit", "rq")}
    if "maskgit" in ckpt:
        maskgit_steps(ckpt["maskgit"], data["maskgit"][1])
    time_all(ckpt, args.samples)


#: the token rows each prior kind reads in this benchmark
SHAPES = {"rq": "8x8x4", "contextual_rq": "8x8x4", "var": "VAR pyramid, 680",
          "ar-pyramid": "VAR pyramid, 680, raster"}  # fmt: skip


def maskgit_steps(prior: str, heldout: str, steps=(8, 16, 64, 256)) -> None:
    """Held-out bits/token of MaskGIT decoding in S random-order parallel steps
    (S = tokens per image is the any-order autoregressive likelihood)."""
    model = load_prior(prior).model
    tokens = torch.from_numpy(TokenDataset.open(heldout).select(limit=256)[1].astype("int64"))
    print("\nMaskGIT held-out bits/token by decoding steps (random order):")
    print("| steps | bits/token |\n|---|---|")
    for s in steps:
        g = torch.Generator().manual_seed(1234)
        bits = sum(float(model.nll_bits(x, None, g, steps=s).sum()) for x in tokens.split(16))
        print(f"| {s} | {bits / tokens.numel():.3f} |", flush=True)


def time_all(ckpt: dict[str, str], samples: str) -> None:
    plans = [
        ("maskgit", "MaskGIT, T=8", SamplingConfig(steps=8)),
        ("ar", "AR, KV cache", SamplingConfig(use_cache=True)),
        ("ar", "AR, no cache", SamplingConfig(use_cache=False)),
        ("rq", "RQ, KV cache", SamplingConfig(use_cache=True)),
        ("rq", "RQ, no cache", SamplingConfig(use_cache=False)),
    ]
    sizes = [int(n) for n in samples.split(",")]
    print("\nsampling on CPU, tokens/s (best of 2); columns: grids per call")
    print("| decoding | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for kind, name, config in plans:
        if kind in ckpt:
            speeds = [time_sampling(ckpt[kind], n, config, 2) for n in sizes]
            print(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in speeds) + " |", flush=True)


if __name__ == "__main__":
    main()
