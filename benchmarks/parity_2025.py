"""Exactness and speed against the originals, for the tokenizers of 2025-26 LMs: `vqtool
encode` on image files versus the original project's own preprocessing, network and
quantizer on the same files, decode from the same tokens, and seconds per image on both
sides with the same thread count.

    python benchmarks/parity_2025.py --originals DIR [--images 8] [--area 16384]
        [--shard ../shared/data/devset/devset-000005.tar] [--family emu3.5=FOLDER]

DIR holds checkouts of the original code, never part of this repository (the names
`fetch` gives them): baaivision+Emu3.5 (`src/vision_tokenizer`, `src/utils/input_utils.py`;
its quantizer imports einops), showlab+Show-o (`models/`, `training/data.py`) and
Alpha-VLLM+Lumina-mGPT-2.0 (`lumina_mgpt/movqgan`, `lumina_mgpt/data/item_processor.py`);
Show-o's
data pipeline needs torchvision and webdataset importable (--site DIR adds a folder
holding them to the path: torchvision's PIL transforms run beside this torch).

- emu3.5: Emu3.5's VisionTokenizer (IBQ), as `src/utils/input_utils.py` build_image runs
  it on `Image.open(p).convert("RGB")` (model_runtime.py): smart_resize to `image_area`
  pixels (cfg.image_area = 518400 in configs/config.py), x/127.5 - 1 in float64 cast to
  the model's float32, `IBQ.encode`; `decode_code` for pixels. Without --family the
  weights are random in the published architecture (ch 256, ch_mult 1,1,2,2,4, 4 blocks,
  attention at 16 px of 256, z 256, 131,072 codes of 256: tests/data/pretrained-keys/
  keys_emu35_ibq.txt, 455M parameters), saved as the published folder holds them
  (config.yaml + model.ckpt). --area sets the pixel area on both sides (the original's
  518400 is minutes per image per side on a CPU); it also prints how often vqtool's
  area_size gives the original smart_resize's size over 1000 random sizes.

- movqgan: SBER-MoVQGAN as Lumina-mGPT 2.0 runs it (its copy of ai-forever/MoVQGAN in
  `lumina_mgpt/movqgan`, MOVQ with the 270M configuration of `get_movqgan_model`), fed as
  its FlexARItemProcessor.process_image feeds it: `Image.open` without conversion,
  `var_center_crop` over `generate_crop_size_list`, `_whiten_transparency`,
  `img_tokens_from_pil` (those functions and methods executed from the file's source; the
  module itself imports the whole trainer); `decode_code(codes, h, w)` for pixels. Without
  --family the weights are random in that architecture (tests/data/pretrained-keys/
  keys_movqgan_270M.txt, 270.7M parameters), saved as the published movqgan_270M.ckpt
  holds them (a bare state_dict). --lumina-target sets the crop list's target on both
  sides (the original's 768 is minutes per image per side on a CPU).

The original runs one image at a time (as its data preparation does), vqtool as `encode`
runs (batches of images of one size), on the shard's photos plus grey and RGBA PNGs made
from them (--variants each). vqtool's seconds per image leave out the one opening of the
checkpoint (timed from the job's start of its tasks); the original's leave out its model
build.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import platform
import random
import sys
import tarfile
import tempfile
import time
import types
import typing
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from pretrained import random_file  # benchmarks/pretrained.py
from pretrained_parity import (
    ROOT,
    Original,
    saved_differ,
    source_function,
    state_dict,
    variants_shard,
)

from vqtool.data.sources import expand_sources, iter_samples
from vqtool.pretrained.convert import load_foreign
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset

#: the published architecture (the `ddconfig` and quantizer of the IBQ config.yaml)
EMU35_CONFIG = {
    "ddconfig": {
        "double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3,
        "out_ch": 3, "ch": 256, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 4,
        "attn_resolutions": [16], "dropout": 0.0,
    },
    "n_embed": 131072,
    "embed_dim": 256,
}  # fmt: skip


def emu35_folder(folder: Path) -> Path:
    """Random weights in the published architecture, as the published folder holds them."""
    ckpt = random_file("emu35_ibq", lambda sd: {"state_dict": sd}, folder)
    ckpt.rename(folder / "model.ckpt")
    (folder / "config.yaml").write_text(yaml.safe_dump(EMU35_CONFIG))
    return folder


def _emu35_modules(root: Path):
    src = root / "src"
    pkg = types.ModuleType("vision_tokenizer")  # its __init__ imports transformers' AutoModel
    pkg.__path__ = [str(src / "vision_tokenizer")]
    sys.modules["vision_tokenizer"] = pkg
    from vision_tokenizer.ibq import IBQ

    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    from utils.input_utils import smart_resize

    return IBQ, smart_resize


def emu35_original(root: Path, folder: Path, area: int) -> Original:
    IBQ, smart_resize = _emu35_modules(root)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    model = IBQ(**cfg)  # build_vision_tokenizer: IBQ(**cfg), then the checkpoint
    ckpt = state_dict(folder / "model.ckpt")
    model.load_state_dict(ckpt)
    model.eval()
    f = 2 ** (len(cfg["ddconfig"]["ch_mult"]) - 1)
    o = Original()

    def preprocess(data: bytes) -> torch.Tensor:
        image = smart_resize(Image.open(io.BytesIO(data)).convert("RGB"), area)
        return torch.tensor(np.array(image) / 127.5 - 1.0).to(torch.float32).permute(2, 0, 1)

    def enc(x):  # one image, (3, H, W): build_image's `vq_model.encode(image[None])`
        _, _, token = model.encode(x[None])
        return token[-1].view(1, x.shape[1] // f, x.shape[2] // f)

    def dec(ind):
        _, h, w = ind.shape
        return model.decode_code(ind.flatten(), shape=(1, h, w, cfg["embed_dim"]))

    o.preprocess, o.encode, o.decode = preprocess, enc, dec

    def save(image):  # src/utils/generation_utils.py decode_image, after decode_code
        image = image.float()[0].permute(1, 2, 0)
        return np.array(Image.fromarray(
            ((image + 1.0) * 127.5).clamp(0, 255).detach().cpu().numpy().astype(np.uint8)
        ))  # fmt: skip

    o.save = save
    return o


def _showo_modules(root: Path):
    models = root / "models"
    pkg = types.ModuleType("showo_models")
    pkg.__path__ = [str(models)]
    sys.modules["showo_models"] = pkg
    stub = types.ModuleType("showo_models.modeling_utils")  # diffusers' ModelMixin & co.
    stub.ModelMixin, stub.ConfigMixin = torch.nn.Module, type("ConfigMixin", (), {})
    stub.register_to_config = lambda f: f
    misc = types.ModuleType("showo_models.misc")  # jaxtyping/typeguard helpers: typing's names
    misc.__dict__.update({k: getattr(typing, k) for k in typing.__all__})
    misc.__all__ = list(typing.__all__)
    sys.modules.update({"showo_models.modeling_utils": stub, "showo_models.misc": misc})
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module("showo_models.modeling_magvitv2")


def showo_folder(root: Path, folder: Path) -> Path:
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = _showo_modules(root).MAGVITv2()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def showo_original(root: Path, path: Path, size: int) -> Original:
    from pretrained_parity import torchvision_transforms
    from webdataset.autodecode import imagehandler

    with contextlib.redirect_stdout(io.StringIO()):
        model = _showo_modules(root).MAGVITv2()
    model.load_state_dict(state_dict(path))
    model.eval()
    T = torchvision_transforms()
    decode = imagehandler("pil")
    data_py = root / "training/data.py"  # its image_transform, run from its own source
    tree = ast.parse(data_py.read_text())
    fn = next(n for n in tree.body if getattr(n, "name", "") == "image_transform")
    scope = {"transforms": T}
    exec(compile(ast.Module([fn], []), str(data_py), "exec"), scope)
    o = Original()

    def preprocess(data: bytes) -> torch.Tensor:
        sample = {"images": decode("jpg", data)}
        return scope["image_transform"](sample, resolution=size)["images"]

    def enc(x):  # one image, (3, H, W)
        return model.get_code(x[None]).reshape(1, x.shape[1] // 16, x.shape[2] // 16)

    o.preprocess, o.encode = preprocess, enc
    o.decode = lambda ind: model.decode_code(ind.reshape(ind.shape[0], -1), shape=ind.shape[1:])

    def save(images):  # inference_t2i.py, after decode_code
        images = torch.clamp((images + 1.0) / 2.0, min=0.0, max=1.0)
        images *= 255.0
        return images.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)[0]

    o.save = save
    return o


def _part(shard: str, keys: list[str], dest: Path) -> Path:
    """The shard's members of `keys`, copied as they are into their own tar."""
    wanted = set(keys)
    with tarfile.open(shard) as src, tarfile.open(dest, "w") as dst:
        for member in src.getmembers():
            if member.isfile() and member.name.split(".", 1)[0] in wanted:
                dst.addfile(member, src.extractfile(member))
    return dest


def timed_encode(path: Path, shard: str, keys: list[str], out: Path, threads: int,
                 warm: bool = True, **kw) -> float:
    """`vqtool encode` of `keys` and its seconds per image from the moment the job starts
    its tasks (the checkpoint opened and the tasks planned: the `start` callback) to its
    end, claims, Parquet, fsync and done markers included; after an untimed run of the
    first image (kernels warmed, as the original's own warm-up does) unless `warm` is
    false. (Opening a multi-GB checkpoint takes a varying 1-10 s here: subtracting one
    measurement of it misjudged short jobs.)"""
    def run(part: Path, dest: Path) -> float:
        started = []
        encode(EncodeConfig(sources=[str(part)], tokenizer=str(path), out=str(dest), workers=0,
                            device="cpu", precision="fp32", threads=threads, **kw),
               lambda kind, info: started.append(time.perf_counter()) if kind == "start" else 0)
        return time.perf_counter() - started[0]

    if warm:
        run(_part(shard, keys[:1], out / "warm.tar"), out / "warm")
    return run(_part(shard, keys, out / "files.tar"), out / "t") / len(keys)


def timed_original(o: Original, samples, warm: bool = True) -> tuple[list, float]:
    """The original's codes, one image at a time, and its seconds per image (after one
    untimed image, unless already warm)."""
    if warm:
        o.encode(o.preprocess(samples[0].data))
    t0 = time.perf_counter()
    codes = [o.encode(o.preprocess(s.data)) for s in samples]
    return codes, (time.perf_counter() - t0) / len(samples)


def timing(path: Path, o: Original, samples, args, **kw) -> str:
    """Seconds per image, vqtool against the original, in `args.rounds` short rounds of
    `args.time_images` images that alternate which side runs first: this host's speed
    drifts by a third within a minute (the same work's CPU time too), so only sides
    measured seconds apart compare. The medians and the median of each round's ratio,
    with its range; vqtool's side is a whole `encode` job each time, its fixed costs
    (claim, Parquet, fsync, done marker) included."""
    k, ours, theirs = args.time_images, [], []
    for r in range(args.rounds):  # each round the next k images
        chunk = [samples[(r * k + i) % len(samples)] for i in range(k)]
        keys = [s.key for s in chunk]
        with tempfile.TemporaryDirectory() as out, torch.no_grad():
            if r % 2:
                theirs.append(timed_original(o, chunk, warm=False)[1])
            ours.append(timed_encode(path, args.shard_for_timing, keys, Path(out), args.threads,
                                     False, batch_size=8, **kw))  # fmt: skip
            if not r % 2:
                theirs.append(timed_original(o, chunk, warm=False)[1])
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    med = float(np.median(ratios))
    return (
        f"{float(np.median(ours)):.2f} | {float(np.median(theirs)):.2f} | {med:.2f}x "
        f"({ratios[0]:.2f}-{ratios[-1]:.2f}, {k} images x {args.rounds} rounds)"
    )


def compare_square(family: str, path: Path, tok, o: Original, args, shard: str, size: int):
    """Tokens, decode and seconds per image at a fixed size."""
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    samples = samples[: args.images] + [s for s in samples if s.key.startswith("zz-")]
    keys = [s.key for s in samples]
    with tempfile.TemporaryDirectory() as out, torch.no_grad():
        timed_encode(path, shard, keys, Path(out), args.threads, batch_size=8, image_size=size)
        found, tokens = TokenDataset.open(str(Path(out) / "t")).select(keys, None, None)
        order = {k: i for i, k in enumerate(found)}
        codes = [o.encode(o.preprocess(s.data)) for s in samples]
        theirs = torch.cat(codes)
        ours = torch.stack([torch.as_tensor(tokens[order[k]].astype(np.int64)) for k in keys])
        ours = ours.reshape(theirs.shape)
        differ = int((ours != theirs).sum())
        saved, values, same, gap = saved_differ(o, tok, theirs, ours)
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    return (
        f"| {family} | square {size} | {len(keys)} ({'/'.join(modes)}) | {tuple(ours.shape[1:])} "
        f"| {differ} of {ours.numel()} | {'bit-identical' if same else f'max |diff| {gap:.3g}'} "
        f"| {saved} of {values} | {timing(path, o, samples, args, image_size=size)} |"
    )


def movq_original(root: Path, path: Path, target: int) -> Original:
    pl = types.ModuleType("pytorch_lightning")  # MOVQ subclasses LightningModule
    pl.LightningModule = torch.nn.Module
    sys.modules.setdefault("pytorch_lightning", pl)
    pkg = types.ModuleType("movqgan")
    pkg.__path__ = [str(root / "lumina_mgpt/movqgan")]
    sys.modules["movqgan"] = pkg
    for name, attr in (("movqgan.util", "instantiate_from_config"), ("movqgan.models.ema",
                                                                    "LitEma")):  # fmt: skip
        mod = types.ModuleType(name)  # training-only helpers
        setattr(mod, attr, None)
        sys.modules[name] = mod
    vqgan = importlib.import_module("movqgan.models.vqgan")
    sd = state_dict(path)
    ch = sd["encoder.conv_in.weight"].shape[0]
    dd = {"double_z": False, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
          "ch": ch, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [32],
          "dropout": 0.0}  # get_movqgan_model's '270M' (67M: ch 128)  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        model = vqgan.MOVQ(ddconfig=dd, n_embed=16384, embed_dim=4)
    model.load_state_dict(sd, strict=False)  # as get_movqgan_model loads it
    model.eval()
    source = root / "lumina_mgpt/data/item_processor.py"
    tree = ast.parse(source.read_text())
    wanted = {"center_crop", "var_center_crop", "generate_crop_size_list"}
    parts = [n for n in tree.body if getattr(n, "name", "") in wanted]
    cls = next(n for n in tree.body if getattr(n, "name", "") == "FlexARItemProcessor")
    methods = ("_whiten_transparency", "img_tokens_from_pil")
    parts += [n for n in cls.body if getattr(n, "name", "") in methods]
    scope = {"Image": Image, "PIL": sys.modules["PIL"], "np": np, "torch": torch,
             "random": random}  # fmt: skip
    exec(compile(ast.Module(parts, []), str(source), "exec"), scope)
    me = types.SimpleNamespace(vqgan=model)
    me._whiten_transparency = lambda img: scope["_whiten_transparency"](me, img)
    sizes = scope["generate_crop_size_list"]((target // 32) ** 2, 32)
    o = Original()

    def preprocess(data: bytes):  # the PIL image img_tokens_from_pil takes
        return scope["var_center_crop"](Image.open(io.BytesIO(data)), crop_size_list=sizes)

    def enc(image):
        w, h = image.size
        return scope["img_tokens_from_pil"](me, image).view(1, h // 8, w // 8)

    o.preprocess, o.encode = preprocess, enc
    o.decode = lambda ind: model.decode_code(ind.flatten(), ind.shape[1], ind.shape[2])
    show_images = source_function(root / "lumina_mgpt/inference_solver.py", "show_images")
    o.save = lambda batch: np.array(show_images(None, batch))
    return o


def movq_file(folder: Path) -> Path:
    path = random_file("movqgan_270M", lambda sd: sd, folder)
    return path.rename(folder / "movqgan_270M.ckpt")


def area_check(root: Path, pairs: int = 1000) -> str:
    """vqtool's area_size against Emu3.5's smart_resize on random sizes from 1 to 3000 px."""
    from vqtool.data.policies import area_size
    from vqtool.errors import DecodeError

    _, smart_resize = _emu35_modules(root)
    rng = np.random.default_rng(0)
    same = refused = 0
    for h, w in rng.integers(1, 3001, size=(pairs, 2)).tolist():
        try:
            want = smart_resize(Image.new("RGB", (w, h)), 518400).size[::-1]
        except ValueError:  # PIL refuses a 0-px side
            want = None
        try:
            got = area_size(h, w, 518400, 16)
        except DecodeError:
            got = None
        same += got == want
        refused += got is None and want is None
    return (
        f"# area_size: {same} of {pairs} sizes give Emu3.5's smart_resize size "
        f"({refused} refused by both)"
    )


def compare_native(family: str, path: Path, tok, o: Original, args, shard: str, policy) -> str:
    """Tokens, decode and seconds per image, one image at a time on both sides."""
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    samples = samples[: args.images] + [s for s in samples if s.key.startswith("zz-")]
    keys = [s.key for s in samples]
    with tempfile.TemporaryDirectory() as out, torch.no_grad():
        timed_encode(path, shard, keys, Path(out), args.threads, batch_size=8,
                     resize=":".join(map(str, policy)))  # fmt: skip
        found, rows, grids = TokenDataset.open(str(Path(out) / "t")).select_native(keys)
        codes = [o.encode(o.preprocess(s.data)) for s in samples]
        differ = total = saved = values = 0
        same, gap = True, 0.0
        for theirs, row, grid in zip(codes, rows, grids):
            ours = torch.as_tensor(row.astype(np.int64)).reshape(1, *grid)
            total += ours.numel()
            if ours.shape != theirs.shape:
                differ, same = differ + ours.numel(), False
                continue
            differ += int((ours != theirs).sum())
            d, v, alike, g = saved_differ(o, tok, theirs, ours, [grid])
            saved, values, same, gap = saved + d, values + v, same and alike, max(gap, g)
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    shapes = sorted(set(grids))
    return (
        f"| {family} | {':'.join(map(str, policy))} | {len(keys)} ({'/'.join(modes)}) | "
        f"{len(shapes)} grids, {shapes[0]}..{shapes[-1]} | {differ} of {total} | "
        f"{'bit-identical' if same else f'max |diff| {gap:.3g}'} | {saved} of {values} | "
        f"{timing(path, o, samples, args, resize=':'.join(map(str, policy)))} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--variants", type=int, default=2, help="images of each kind added")
    ap.add_argument("--area", type=int, default=16384, help="Emu3.5's pixel area, both sides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8, help="timing rounds, alternating sides")
    ap.add_argument("--time-images", type=int, default=2, help="images per timing round")
    ap.add_argument("--family", action="append", default=[], help="name=checkpoint folder")
    ap.add_argument("--only", default="emu3.5,show-o,movqgan", help="comma-separated families")
    ap.add_argument("--lumina-target", type=int, default=256,
                    help="Lumina-mGPT's crop-list target, both sides (its own: 768)")  # fmt: skip
    ap.add_argument("--site", type=Path, action="append", default=[],
                    help="a folder holding torchvision / webdataset")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path[:0] = [str(p) for p in args.site]
    only = set(args.only.split(","))
    files = dict(f.split("=", 1) for f in args.family)
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"one image at a time, shard {Path(args.shard).name}"
    )
    print("| family | --resize | images | token grids | tokens differing | decode from tokens "
          "(one row at a time) | saved picture values differing | vqtool s/image | original "
          "s/image | ratio (range) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants = variants_shard(args.shard, args.variants, Path(tmp))
        args.shard_for_timing = variants
        if "emu3.5" in only:
            root = args.originals / "baaivision+Emu3.5"
            folder = Path(files.get("emu3.5") or emu35_folder(Path(tmp)))
            tok, _ = load_foreign(folder)
            o = emu35_original(root, folder, args.area)
            policy = ("area", args.area, 16)
            print(compare_native("emu3.5", folder, tok, o, args, variants, policy), flush=True)
            print(area_check(root), flush=True)
        if "show-o" in only:
            root = args.originals / "showlab+Show-o"
            path = Path(files.get("show-o") or showo_folder(root, Path(tmp) / "magvitv2"))
            tok, info = load_foreign(path)
            o = showo_original(root, path, info.image_size)
            print(compare_square("show-o", path, tok, o, args, variants, info.image_size))
        if "movqgan" in only:
            root = args.originals / "Alpha-VLLM+Lumina-mGPT-2.0"
            path = Path(files.get("movqgan") or movq_file(Path(tmp)))
            tok, _ = load_foreign(path)
            o = movq_original(root, path, args.lumina_target)
            policy = ("crops", args.lumina_target, 32)
            print(compare_native("movqgan", path, tok, o, args, variants, policy), flush=True)


if __name__ == "__main__":
    main()
