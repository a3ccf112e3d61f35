"""Exactness and speed of the Cosmos family against its original: `vqtool encode` on
image files versus SimpleAR's own token extraction (simpar/data/extract_token.py: its
copy of NVIDIA's cosmos_tokenizer, CausalVideoTokenizer with the DV config and the
release's encoder.jit/decoder.jit, T2IDataset's "centercrop" preprocessing, bf16, one
image at a time) on the same files; decode from the same tokens; seconds per image.

    python benchmarks/parity_cosmos.py --originals DIR [--size 256] [--images 8]
        [--variant DV8x16x16] [--folder Cosmos-1.0-Tokenizer-DV8x16x16] [--site DIR]

DIR holds wdrink+SimpleAR (simpar/) and NVIDIA+Cosmos-Tokenizer (cosmos_tokenizer/),
never part of this repository; SimpleAR's preprocessing needs torchvision (--site adds a
folder holding it) and the tokenizer code einops and loguru. Without --folder the
weights are random in the published architecture (channels 128, mult 2,4,4, 2 blocks,
Haar patches of 4, FSQ 8,8,8,5,5,5), written as the release holds them: TorchScript
`encoder.jit` / `decoder.jit` of the original's `encoder_jit()` / `decoder_jit()`
(traced here with the original code), in a folder named as the release.

What differs from SimpleAR's run, and why: `device="cpu"` (its default is CUDA), and on a
CPU the original's bf16 video path cannot run (PyTorch has no bfloat16 avg_pool3d on the
CPU), so the original's F.avg_pool3d is given the average taken in float32 and rounded
once to bf16 - what vqtool does on a CPU, and what the CUDA kernel computes.

A second table checks every published variant (DI8x8, DI16x16, DV4x8x8, DV8x8x8,
DV8x16x16) network to network, in bf16 and in float32 (Cosmos' `dtype="float32"`; vqtool
built with compute_dtype float32), on random inputs of an odd size.
"""

from __future__ import annotations

import argparse
import ast
import platform
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from parity_2025 import compare_square
from pretrained_parity import ROOT, Original, variants_shard

from vqtool.models.cosmos import CosmosConfig
from vqtool.models.cosmos_net import CosmosDecoder, CosmosEncoder
from vqtool.pretrained.convert import load_foreign
from vqtool.pretrained.torchscript import read_torchscript
from vqtool.quantizers.fsq import FSQ, FSQConfig

_POOL = F.avg_pool3d
VARIANTS = ("DI8x8", "DI16x16", "DV4x8x8", "DV8x8x8", "DV8x16x16")


def _avg_pool_bf16(x, *args, **kwargs):  # the CPU has no bf16 kernel: fp32, rounded once
    if x.dtype == torch.bfloat16:
        return _POOL(x.float(), *args, **kwargs).to(x.dtype)
    return _POOL(x, *args, **kwargs)


def simplear_modules(root: Path):
    """SimpleAR's copy of the tokenizer package, without `simpar/__init__`'s LM imports."""
    for name in ("simpar", "simpar.model", "simpar.model.tokenizer"):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules.setdefault(name, pkg)
    # utils.py imports mediapy for its file readers and writers, which the token path
    # (tensors in, tensors out) never calls
    sys.modules.setdefault("mediapy", types.ModuleType("mediapy"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from simpar.model.tokenizer.cosmos_tokenizer.networks import TokenizerConfigs, TokenizerModels
    from simpar.model.tokenizer.cosmos_tokenizer.video_lib import CausalVideoTokenizer

    F.avg_pool3d = _avg_pool_bf16
    return TokenizerConfigs, TokenizerModels, CausalVideoTokenizer


def original_config(configs, variant: str) -> dict:
    kind, nums = variant[:2], [int(v) for v in variant[2:].split("x")]
    cfg = dict(configs[kind].value)
    if kind == "DI":
        cfg.update(spatial_compression=nums[0])
    else:
        cfg.update(temporal_compression=nums[0], spatial_compression=nums[1])
    return cfg


def release_folder(root: Path, variant: str, folder: Path, seed: int = 0) -> Path:
    """Random weights in the published architecture, as the release holds them."""
    configs, models, _ = simplear_modules(root)
    torch.manual_seed(seed)
    model = models[variant[:2]].value(**original_config(configs, variant)).eval()
    with torch.no_grad():  # norms near 1 and small biases, as trained weights have
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.05 * torch.randn_like(p))
    model.quantizer.dtype = torch.float32
    x = torch.randn(1, 3, 64, 64) if variant[:2] == "DI" else torch.randn(1, 3, 1, 64, 64)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder_jit()
    torch.jit.save(torch.jit.trace(encoder, x, check_trace=False), str(folder / "encoder.jit"))
    decoder = torch.jit.trace(model.decoder_jit(), encoder(x)[0], check_trace=False)
    torch.jit.save(decoder, str(folder / "decoder.jit"))
    return folder


def simplear_original(root: Path, folder: Path, size: int) -> Original:
    """extract_token.py's model and loop body; T2IDataset's centercrop transform."""
    from pretrained_parity import torchvision_transforms

    transforms = torchvision_transforms()
    configs, _, CosmosTokenizer = simplear_modules(root)
    tokenizer_config = configs["DV"].value
    tokenizer_config.update(dict(spatial_compression=16, temporal_compression=8))
    model = CosmosTokenizer(checkpoint_enc=f"{folder}/encoder.jit",
                            checkpoint_dec=f"{folder}/decoder.jit",
                            tokenizer_config=tokenizer_config, device="cpu")  # fmt: skip
    model.eval()
    model.requires_grad_(False)
    source = root / "simpar/train/t2i_data.py"
    tree = ast.parse(source.read_text())
    fn = next(n for n in tree.body if getattr(n, "name", "") == "center_crop_arr")
    from PIL import Image

    scope = {"Image": Image, "np": np}
    exec(compile(ast.Module([fn], []), str(source), "exec"), scope)
    augment = transforms.Compose([  # T2IDataset.__init__, aug == "centercrop"
        transforms.Lambda(lambda pil_image: scope["center_crop_arr"](pil_image, size)),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True),
    ])  # fmt: skip
    o = Original()

    def preprocess(data: bytes):
        import io

        return augment(Image.open(io.BytesIO(data)).convert("RGB"))

    def enc(x):  # the loop body: a batch of one, bf16, (B, 3, 1, H, W)
        image_tensor = x[None].to(torch.bfloat16).unsqueeze(2)
        (image_token, _) = model.encode(image_tensor)
        return image_token[:, 0].long()

    o.preprocess, o.encode = preprocess, enc
    o.decode = lambda ind: model.decode(ind[:, None].int())[:, :, 0]
    # the tokenizer's own way to pictures (cosmos_tokenizer's image_lib / video_lib):
    # utils.tensor2numpy
    from simpar.model.tokenizer.cosmos_tokenizer.utils import tensor2numpy

    o.save = lambda x: tensor2numpy(x)[0]
    return o


def network_table(root: Path, tmp: Path) -> list[str]:
    """Each variant network to network, bf16 and float32, on a random 80x112 input."""
    configs, models, _ = simplear_modules(root)
    rows = []
    for variant in VARIANTS:
        folder = release_folder(root, variant, tmp / f"Cosmos-Tokenizer-{variant}", seed=1)
        video = variant[:2] == "DV"
        enc_sd, dec_sd = (
            read_torchscript(folder / "encoder.jit"),
            read_torchscript(folder / "decoder.jit"),
        )
        x = torch.rand(1, 3, 80, 112) * 2 - 1
        for dtype in (torch.bfloat16, torch.float32):
            original = models[variant[:2]].value(**original_config(configs, variant))
            enc_o, dec_o = original.encoder_jit(), original.decoder_jit()
            enc_o.load_state_dict(enc_sd, strict=False)
            dec_o.load_state_dict(dec_sd, strict=False)
            original.to(dtype=dtype)  # the pipelines' .to(dtype), quantizer dtype included
            enc_o, dec_o = enc_o.eval().to(dtype), dec_o.eval().to(dtype)
            cfg = {**load_foreign(folder, image_size=80)[0].config.model.__dict__}
            cfg["compute_dtype"] = str(dtype).split(".")[1]
            c = CosmosConfig(**{k: v for k, v in cfg.items() if k != "architecture"})
            enc, dec = CosmosEncoder(c).eval(), CosmosDecoder(c).eval()
            enc.load_state_dict({k: v for k, v in enc_sd.items() if not k.startswith(
                ("quantizer.", "encoder.patcher"))})  # fmt: skip
            dec.load_state_dict({k: v for k, v in dec_sd.items() if not k.startswith(
                ("inv_quant.", "decoder.unpatcher"))})  # fmt: skip
            fsq = FSQ(6, FSQConfig(levels=[8, 8, 8, 5, 5, 5]))
            with torch.no_grad():
                xin = x.to(dtype).unsqueeze(2) if video else x.to(dtype)
                theirs = enc_o(xin)[0].reshape(1, -1).long()
                codes = fsq(enc(x)).codes
                ours = codes.reshape(1, -1)
                want = dec_o(theirs.reshape(1, *([1] if video else []), *codes.shape[1:]).int())
                want = want[:, :, 0] if video else want
                got = dec(fsq.decode_codes(codes))
            rows.append(
                f"| {variant} | {str(dtype).split('.')[1]} | {tuple(codes.shape[1:])} | "
                f"{int((ours != theirs).sum())} of {ours.numel()} | "
                f"{'bit-identical' if torch.equal(want, got) else 'differs'} |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--variants", type=int, default=2, help="images of each kind added")
    ap.add_argument("--size", type=int, default=256, help="SimpleAR's gen_resolution (512/1024)")
    ap.add_argument("--folder", type=Path, help="a downloaded Cosmos-*-Tokenizer-DV8x16x16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8, help="timing rounds, alternating sides")
    ap.add_argument("--time-images", type=int, default=2, help="images per timing round")
    ap.add_argument("--site", type=Path, action="append", default=[],
                    help="a folder holding torchvision")  # fmt: skip
    ap.add_argument("--skip-networks", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path[:0] = [str(p) for p in args.site]
    root = args.originals / "wdrink+SimpleAR"
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"one image at a time, shard {Path(args.shard).name}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.folder or release_folder(
            root, "DV8x16x16", tmp / "Cosmos-1.0-Tokenizer-DV8x16x16"
        )
        print("| family | --resize | images | token grid | tokens differing | decode from tokens "
              "(one row at a time) | saved picture values differing "
              "| vqtool s/image | original s/image | ratio (range) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        variants = variants_shard(args.shard, args.variants, tmp)
        args.shard_for_timing = variants
        tok, _ = load_foreign(folder, image_size=args.size)
        o = simplear_original(root, folder, args.size)
        print(compare_square("cosmos DV8x16x16", folder, tok, o, args, variants, args.size))
        if not args.skip_networks:
            print("\n| variant | dtype | grid | tokens differing | decode |\n|---|---|---|---|---|")
            print("\n".join(network_table(root, tmp)), flush=True)


if __name__ == "__main__":
    main()
