"""Exactness of the Infinity family against its original: `vqtool encode` on image files
versus Infinity's own training data path on the same files (its dataset's
`PImage.open(f).convert('RGB')` and `transform` to the template nearest the image's
height/width, `vae.encode_for_raw_features`, then `BitwiseSelfCorrection.flip_requant`
without noise: the bit labels its transformer learns), and decode from the same tokens
(`vae.decode_from_indices(label_type="bit_label")`, saved as `labels2image` saves).

    python benchmarks/parity_infinity.py --originals DIR [--site DIR] [--bits 16,24,32]
        [--pixels 0.06M] [--images 8] [--variants 2] [--checkpoint FILE]

DIR holds FoundationVision+Infinity (the name `fetch` gives it), never part of this
repository; its VAE code needs einops and torchvision (--site adds a folder holding it).
Without --checkpoint the weights are random in the published architecture (128 channels,
mult 1,2,4,4,4, 2 blocks, d bits), built with Infinity's own `vae_model` and saved as the
release holds them: `{"vae": state_dict}` of its module (`Conv`/`Normalize`-wrapped names).
Both sides run in float32 on the CPU, one image at a time (as Infinity's data path feeds
its VAE one bucket of one shape at a time), 1 thread.

A second figure: how often Infinity's other path, `vae.encode` (`MultiScaleBSQ.forward`,
residual minus each quantized scale in turn, interpolation skipped where sizes agree),
gives other bits than its training path on the same features: they differ only in the
last bits of the residual's floats.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pretrained_parity import ROOT, source_function, torchvision_transforms, variants_shard

from vqtool.data.sources import expand_sources, iter_samples
from vqtool.pretrained.convert import load_foreign
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset


def infinity_modules(root: Path):
    """Infinity's VAE, dynamic-resolution table and bitwise self-correction, imported from
    its checkout (flux_vqgan imports imageio for video files the image path never uses)."""
    sys.modules.setdefault("imageio", types.ModuleType("imageio"))
    for name in ("infinity", "infinity.models", "infinity.utils"):  # their __init__s import
        pkg = types.ModuleType(name)  # the whole model (timm, transformers, flash-attn)
        pkg.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules.setdefault(name, pkg)
    torchvision_transforms()  # torchvision imported once, its C++ ops (unused here) skipped
    from infinity.models.bitwise_self_correction import BitwiseSelfCorrection
    from infinity.models.bsq_vae.vae import vae_model
    from infinity.utils.dynamic_resolution import dynamic_resolution_h_w, h_div_w_templates

    return vae_model, BitwiseSelfCorrection, dynamic_resolution_h_w, h_div_w_templates


class InfinityOriginal:
    def __init__(self, root: Path, path: Path, bits: int, pixels: str):
        vae_model, bsc, self.table, self.templates = infinity_modules(root)
        from torchvision.transforms.functional import to_tensor

        self.transform = source_function(
            root / "infinity/dataset/dataset_t2i_iterable.py", "transform",
            PImage=Image, to_tensor=to_tensor,
        )  # fmt: skip
        self.vae = vae_model(str(path), "dynamic", bits, 2**bits, test_mode=True)
        args = types.SimpleNamespace(noise_apply_layers=0, noise_apply_requant=0,
                                     noise_apply_strength=0.0, apply_spatial_patchify=0,
                                     debug_bsc=0)  # fmt: skip
        self.bsc = bsc(self.vae, args)
        self.pixels = pixels
        self.bits = bits

    def preprocess(self, data: bytes) -> torch.Tensor:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = img.size
        template = self.templates[np.argmin(np.abs(h / w - self.templates))]
        tgt_h, tgt_w = self.table[template][self.pixels]["pixel"]
        return self.transform(img, tgt_h, tgt_w)

    def schedule(self, x: torch.Tensor) -> list:
        """train_step's schedule: from the (already templated) image's shape."""
        h_div_w = x.shape[-2] / x.shape[-1]
        template = self.templates[np.argmin(np.abs(h_div_w - self.templates))]
        return [
            (min(t, 1 // 4 + 1), h, w) for t, h, w in self.table[template][self.pixels]["scales"]
        ]

    def encode(self, x: torch.Tensor):
        """(B, 3, H, W) -> (bits per scale [(B, 1, h, w, d)], packed codes (B, T)), as
        train_step: encode_for_raw_features, then flip_requant."""
        schedule = self.schedule(x)
        raw, _, _ = self.vae.encode_for_raw_features(x, scale_schedule=schedule)
        _, gt = self.bsc.flip_requant(schedule, x, raw, "cpu")
        bits = [g.reshape(len(x), 1, h, w, self.bits) for g, (_, h, w) in zip(gt, schedule)]
        return bits, self.pack(bits)

    def encode_other(self, x: torch.Tensor) -> torch.Tensor:
        """Infinity's `vae.encode` (MultiScaleBSQ.forward), packed (B, T)."""
        _, _, _, other, _, _ = self.vae.encode(x, scale_schedule=self.schedule(x))
        return self.pack(other)

    def pack(self, bits: list) -> torch.Tensor:
        mask = 2 ** torch.arange(self.bits - 1, -1, -1, dtype=torch.long)
        return torch.cat([(b.long() * mask).sum(-1).reshape(len(b), -1) for b in bits], 1)

    def decode(self, bits: list, schedule: list) -> torch.Tensor:
        """decode_from_indices without its clamp (vqtool's decode_output is the raw output)."""
        summed = 0
        q = self.vae.quantizer
        for b in bits:
            codes = q.lfq.indices_to_codes(b, "bit_label")
            summed += torch.nn.functional.interpolate(
                codes, size=schedule[-1], mode=q.z_interplote_up
            )
        return self.vae.decoder(summed.squeeze(-3))

    @staticmethod
    def save(out: torch.Tensor) -> np.ndarray:
        """labels2image: clamp (decode_from_indices), (x + 1) / 2, * 255, astype(uint8)."""
        x = torch.clamp(out, min=-1, max=1)[0]
        return ((x + 1) / 2).permute(1, 2, 0).mul_(255).cpu().numpy().astype(np.uint8)


def random_release(root: Path, bits: int, folder: Path) -> Path:
    """The published architecture with random weights, saved as the release: {"vae": ...}."""
    vae_model = infinity_modules(root)[0]
    torch.manual_seed(bits)
    vae = vae_model(None, "dynamic", bits, 2**bits, test_mode=False)
    with torch.no_grad():
        for name, p in vae.named_parameters():  # GroupNorm affine too, not left at 1/0
            if p.ndim == 1:
                p.copy_(
                    torch.randn_like(p) * 0.1
                    + (1.0 if "norm" in name and "weight" in name else 0.0)
                )
    path = folder / f"infinity_vae_d{bits}.pth"
    torch.save({"vae": vae.state_dict()}, path)
    return path


def run(args, root: Path, bits: int, shard: str, folder: Path) -> str:
    path = args.checkpoint or random_release(root, bits, folder)
    original = InfinityOriginal(root, path, bits, args.pixels)
    tok, info = load_foreign(path)
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    keys = [s.key for s in samples]
    out = folder / f"tokens-d{bits}"
    started = time.perf_counter()
    encode(EncodeConfig(sources=[shard], tokenizer=str(path), out=str(out), batch_size=8,
                        workers=0, device="cpu", precision="fp32", threads=1,
                        resize=f"templates:{args.pixels}"))  # fmt: skip
    ours_seconds = (time.perf_counter() - started) / len(samples)
    found, rows, grids = TokenDataset.open(str(out)).select_native(keys)
    order = {k: i for i, k in enumerate(found)}
    differ = total = other = saved = values = 0
    same, gap, theirs_seconds, shapes = True, 0.0, 0.0, set()
    with torch.no_grad():
        for s in samples:
            row, grid = rows[order[s.key]], grids[order[s.key]]
            shapes.add(tuple(grid))
            t0 = time.perf_counter()
            x = original.preprocess(s.data)[None]
            labels, theirs = original.encode(x)
            theirs_seconds += time.perf_counter() - t0
            second = original.encode_other(x)
            ours = torch.as_tensor(row.astype(np.int64))[None]
            if ours.shape != theirs.shape:
                differ, total, same = differ + theirs.numel(), total + theirs.numel(), False
                continue
            differ += int((ours != theirs).sum())
            other += int((second != theirs).sum())
            total += ours.numel()
            schedule = original.schedule(x)
            want = original.decode(labels, schedule)
            got = tok.decode_output(ours, tuple(grid))
            same = same and torch.equal(want, got)
            gap = max(gap, float((want - got).abs().max()))
            pic = original.save(want)
            mine = tok.decode_uint8(ours, tuple(grid))[0].permute(1, 2, 0).numpy()
            saved += int((pic != mine).sum())
            values += pic.size
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    return (
        f"| d{bits} ({2**bits:,} codes) | templates:{args.pixels} | {len(samples)} "
        f"({'/'.join(modes)}) | {len(shapes)} shapes | {differ} of {total} | "
        f"{'bit-identical' if same else f'max |diff| {gap:.3g}'} | {saved} of {values} | "
        f"{other} of {total} | {ours_seconds:.2f} s | {theirs_seconds / len(samples):.2f} s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--site", type=Path, action="append", default=[])
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--bits", default="16,24,32")
    ap.add_argument("--pixels", default="0.06M", help="Infinity's pn (its 2B model: 1M)")
    ap.add_argument("--checkpoint", type=Path, help="a released infinity_vae_d*.pth")
    args = ap.parse_args()
    for site in args.site:
        sys.path.insert(0, str(site))
    torch.set_num_threads(1)
    root = args.originals / "FoundationVision+Infinity"
    print(f"# {platform.machine()}, torch {torch.__version__}, 1 thread, one image at a time, "
          f"shard {Path(args.shard).name} (+{args.variants} of each variant kind)")  # fmt: skip
    print("| VAE | --resize | images | shapes | tokens differing | decode (raw floats) | "
          "saved pixel values differing | Infinity's vae.encode vs its training path | "
          "vqtool s/image (encode run) | Infinity s/image |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard = variants_shard(args.shard, args.variants, folder)
        every = list(iter_samples(expand_sources([shard])[0]))
        keep = {s.key for s in every[: args.images] if not s.key.startswith("zz-")}
        keep |= {s.key for s in every if s.key.startswith("zz-")}
        small = folder / "compared.tar"
        import tarfile

        with tarfile.open(shard) as src, tarfile.open(small, "w") as dst:
            for m in src.getmembers():
                if m.isfile() and m.name.split(".", 1)[0] in keep:
                    dst.addfile(m, src.extractfile(m))
        for bits in (int(b) for b in args.bits.split(",")):
            print(run(args, root, bits, str(small), folder), flush=True)


if __name__ == "__main__":
    main()
