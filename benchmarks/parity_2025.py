"""Exactness and speed against the originals, for the tokenizers of 2025-26 LMs: `vqtool
encode` on image files versus the original project's own preprocessing, network and
quantizer on the same files, decode from the same tokens, and seconds per image on both
sides with the same thread count.

    python benchmarks/parity_2025.py --originals DIR [--images 8] [--area 16384]
        [--shard ../shared/data/devset/devset-000005.tar] [--family emu3.5=FOLDER]

DIR holds checkouts of the original code, never part of this repository (the names
`fetch` gives them): baaivision+Emu3.5 (`src/vision_tokenizer`, `src/utils/input_utils.py`;
its quantizer imports einops).

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

The original runs one image at a time (as its data preparation does), vqtool as `encode`
runs (batches of images of one size), on the shard's photos plus grey and RGBA PNGs made
from them (--variants each). vqtool's seconds per image leave out the one opening of the
checkpoint (timed on its own and subtracted); the original's leave out its model build.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from pretrained import random_file  # benchmarks/pretrained.py
from pretrained_parity import ROOT, Original, state_dict, variants_shard

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

    def enc(x):
        _, _, token = model.encode(x)
        return token[-1].view(1, x.shape[2] // f, x.shape[3] // f)

    def dec(ind):
        _, h, w = ind.shape
        return model.decode_code(ind.flatten(), shape=(1, h, w, cfg["embed_dim"]))

    o.preprocess, o.encode, o.decode = preprocess, enc, dec
    return o


def area_check(root: Path, pairs: int = 1000) -> str:
    """vqtool's area_size against Emu3.5's smart_resize on random sizes from 1 to 3000 px."""
    from vqtool.data.images import area_size
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
        part = Path(out) / "files.tar"
        with tarfile.open(shard) as src, tarfile.open(part, "w") as dst:
            for member in src.getmembers():
                if member.isfile() and member.name.split(".", 1)[0] in set(keys):
                    dst.addfile(member, src.extractfile(member))
        t0 = time.perf_counter()
        load_foreign(path)  # what the encode below spends opening the tokenizer, once
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode(EncodeConfig(sources=[str(part)], tokenizer=str(path), out=str(Path(out) / "t"),
                            batch_size=8, workers=0, device="cpu", precision="fp32",
                            threads=args.threads, resize=":".join(map(str, policy))))  # fmt: skip
        ours_s = (time.perf_counter() - t0 - load_s) / len(keys)
        found, rows, grids = TokenDataset.open(str(Path(out) / "t")).select_native(keys)
        differ = total = 0
        same, gap, theirs_s = True, 0.0, 0.0
        for s, row, grid in zip(samples, rows, grids):
            t0 = time.perf_counter()
            theirs = o.encode(o.preprocess(s.data)[None])
            theirs_s += (time.perf_counter() - t0) / len(keys)
            ours = torch.as_tensor(row.astype(np.int64)).reshape(1, *grid)
            total += ours.numel()
            if ours.shape != theirs.shape:
                differ, same = differ + ours.numel(), False
                continue
            differ += int((ours != theirs).sum())
            want, got = o.decode(theirs), tok.decode_output(ours.reshape(1, -1), grid)
            same = same and torch.equal(want, got)
            gap = max(gap, float((want - got).abs().max()))
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    shapes = sorted(set(grids))
    return (
        f"| {family} | {':'.join(map(str, policy))} | {len(keys)} ({'/'.join(modes)}) | "
        f"{len(shapes)} grids, {shapes[0]}..{shapes[-1]} | {differ} of {total} | "
        f"{'bit-identical' if same else f'max |diff| {gap:.3g}'} | {ours_s:.2f} | "
        f"{theirs_s:.2f} | {ours_s / theirs_s:.2f}x |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--variants", type=int, default=2, help="grey and RGBA images added")
    ap.add_argument("--area", type=int, default=16384, help="Emu3.5's pixel area, both sides")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--family", action="append", default=[], help="name=checkpoint folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = dict(f.split("=", 1) for f in args.family)
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
        f"one image at a time, shard {Path(args.shard).name}"
    )
    print("| family | --resize | images | token grids | tokens differing | decode from tokens "
          "| vqtool s/image | original s/image | ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants = variants_shard(args.shard, args.variants, Path(tmp))
        root = args.originals / "baaivision+Emu3.5"
        folder = Path(files.get("emu3.5") or emu35_folder(Path(tmp)))
        tok, _ = load_foreign(folder)
        o = emu35_original(root, folder, args.area)
        policy = ("area", args.area, 16)
        print(compare_native("emu3.5", folder, tok, o, args, variants, policy), flush=True)
        print(area_check(root), flush=True)


if __name__ == "__main__":
    main()
