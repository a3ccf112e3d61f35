"""Exactness against the original projects: `vqtool encode` on image files versus each
original's own preprocessing + network + quantizer, and decode from tokens.

    python benchmarks/pretrained_parity.py --originals DIR [--images 24] [--size PX]
        [--shard ../shared/data/devset/devset-000005.tar] [--family llamagen=FILE ...]

DIR holds checkouts of the original code, which is never part of this repository:
CompVis+taming-transformers, FoundationVision+LlamaGen, TencentARC+Open-MAGVIT2,
huggingface+open-muse, facebookresearch+chameleon, deepseek-ai+Janus (the names `fetch`
gives them; Janus' image processor needs `transformers`), plus albumentations-0.4.3 (the
version taming pins; its sdist unpacked) and, for the torchvision-based pipelines,
torchvision importable (`--torchvision SITE_DIR` when it sits outside the environment).
`opencv-python-headless` must be installed (albumentations resizes with it).

Each family runs with a file you name (--family) or random weights built from the
published key lists in tests/data/pretrained-keys. Per family it prints how many tokens
differ between `vqtool encode` (the library call behind the CLI, on the shard's image
files) and the original pipeline fed the same files, the smallest runner-up margin among
differing tokens, and whether decoding the same tokens gives bit-identical decoder
output. Both sides run in float32 on CPU with the same batch size and thread count.
Each family runs at its own native size (256 px; Chameleon 512, Janus 384) unless
--size says otherwise, on the shard's photos plus --variants each of greyscale PNGs, RGBA
PNGs with a varying alpha, JPEGs stored sideways with EXIF orientation 6, 16-bit
greyscale PNGs, CMYK JPEGs and palette PNGs with a transparent colour, made from the
shard's photos; vqtool runs with each family's default input rule (`--orientation
stored --high-bit-depth clip`, what the originals' `convert("RGB")` gives).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import io
import platform
import sys
import tarfile
import tempfile
import types
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image
from pretrained import DEFAULT, random_file  # benchmarks/pretrained.py

from vqtool.data.sources import expand_sources, iter_samples
from vqtool.pretrained.convert import load_foreign, select_weights
from vqtool.pretrained.loading import read_foreign
from vqtool.tokens.encode import EncodeConfig, encode
from vqtool.tokens.reader import TokenDataset

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8


# ----------------------------------------------------------------------------- originals


def _import_path(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def albumentations_pipeline(root: Path, size: int):
    """taming's ImagePaths preprocessing: SmallestMaxSize + CenterCrop (albumentations)."""
    for name in ("skimage", "skimage.measure", "imgaug", "imgaug.augmenters"):
        sys.modules.setdefault(name, mock.MagicMock())  # imported by unrelated transforms
    _import_path(root)
    import albumentations

    pipe = albumentations.Compose(
        [albumentations.SmallestMaxSize(max_size=size), albumentations.CenterCrop(size, size)]
    )
    return lambda arr: pipe(image=arr)["image"]


def torchvision_transforms():
    import torch.library

    # a torchvision wheel built for another torch fails registering its C++ ops; the
    # PIL transforms used here do not need them
    with mock.patch.object(torch.library, "register_fake", lambda *a, **k: lambda f: f):
        import torchvision.transforms as T
    return T


def load_rgb(data: bytes) -> Image.Image:
    """What every original does with a file: PIL open, convert to RGB."""
    img = Image.open(io.BytesIO(data))
    return img if img.mode == "RGB" else img.convert("RGB")


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights vqtool takes from the file, in the original's own names (EMA copies
    already chosen), read as safely as vqtool reads them."""
    return select_weights(read_foreign(path).tensors, None, None)[1]


def sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


class Original:
    """encode(x) -> (B, h, w) indices; decode(indices) -> raw decoder output;
    save(output of one image) -> the (H, W, 3) uint8 picture the original saves."""

    preprocess = None
    save = None


def source_function(path: Path, name: str, **scope):
    """One function (or method) of an original's file, executed from its source alone (the
    file's imports would pull in its whole project); it sees np, torch, Image and PIL."""
    import PIL

    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {"np": np, "torch": torch, "Image": Image, "PIL": PIL, **scope}
    exec(compile(ast.Module([fn], []), str(path), "exec"), scope)
    return scope[name]


def saved_by_file(save_image) -> callable:
    """An original's `save_image(x, path)`, run into a temporary PNG and read back."""

    def save(x: torch.Tensor) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            save_image(x[0], f"{tmp}/x.png")
            return np.array(Image.open(f"{tmp}/x.png"))

    return save


def saved_differ(o: Original, tok, theirs: torch.Tensor, ours: torch.Tensor, grids=None):
    """(values that differ, values, whether the decoder floats are bit-identical, the
    largest float gap): each row decoded alone on both sides, as `vqtool decode` does; the
    original's picture as its own code saves it, vqtool's as `decode` writes it (PNG is
    lossless; tests hold the file to `Tokenizer.decode_uint8`)."""
    differ = total = 0
    same, gap = True, 0.0
    for i in range(len(theirs)):
        grid = grids[i] if grids else None
        with torch.no_grad():
            out = o.decode(theirs[i : i + 1])
            mine = tok.decode_output(ours[i : i + 1].reshape(1, -1), grid)
            same = same and torch.equal(out, mine)
            gap = max(gap, float((out.float() - mine.float()).abs().max()))
            want = np.asarray(o.save(out))
            got = tok.decode_uint8(ours[i : i + 1].reshape(1, -1), grid)[0].permute(1, 2, 0)
        differ += int((want != got.numpy()).sum())
        total += want.size
    return differ, total, same, gap


def taming_original(root: Path, sd: dict, cfg: dict, size: int, albu: Path) -> Original:
    _import_path(root)
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

    m, q = cfg["model"], cfg["quantizer"]
    levels = len(m["channel_mult"])
    dd = {
        "double_z": False,
        "z_channels": m["z_channels"],
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": m["channels"],
        "ch_mult": m["channel_mult"],
        "num_res_blocks": m["num_res_blocks"],
        "attn_resolutions": [256 // 2**i for i in m["attention_levels"]],
        "dropout": 0.0,
    }
    assert levels == len(dd["ch_mult"])
    o = Original()
    o.encoder, o.decoder = Encoder(**dd).eval(), Decoder(**dd).eval()
    o.encoder.load_state_dict(sub(sd, "encoder."))
    o.decoder.load_state_dict(sub(sd, "decoder."))
    embed = m["embed_dim"]
    o.quant_conv = torch.nn.Conv2d(m["z_channels"], embed, 1)
    o.post_quant_conv = torch.nn.Conv2d(embed, m["z_channels"], 1)
    o.quant_conv.load_state_dict(sub(sd, "quant_conv."))
    o.post_quant_conv.load_state_dict(sub(sd, "post_quant_conv."))
    gumbel = q["kind"] == "gumbel"
    if gumbel:
        o.quantize = GumbelQuantize(m["z_channels"], embed, n_embed=q["codebook_size"])
    else:
        o.quantize = VectorQuantizer2(q["codebook_size"], embed, beta=0.25)
    o.quantize.load_state_dict(sub(sd, "quantize."))
    o.quantize.eval()
    pipe = albumentations_pipeline(albu, size)

    def preprocess(data: bytes) -> torch.Tensor:
        arr = pipe(np.array(load_rgb(data)).astype(np.uint8))
        return torch.from_numpy((arr / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)

    def enc(x):
        h = o.quant_conv(o.encoder(x))
        if gumbel:  # deterministic codes: the argmax of the logits (forward samples)
            return o.quantize.proj(h).argmax(1)
        _, _, (_, _, ind) = o.quantize(h)
        return ind.reshape(h.shape[0], h.shape[2], h.shape[3])

    def dec(ind):
        b, h, w = ind.shape
        z = o.quantize.get_codebook_entry(ind.reshape(-1), (b, h, w, embed))
        return o.decoder(o.post_quant_conv(z))

    o.preprocess, o.encode, o.decode = preprocess, enc, dec
    o.save = saved_by_file(source_function(root / "scripts/make_samples.py", "save_image"))
    return o


def llamagen_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    _import_path(root)
    from tokenizer.tokenizer_image.vq_model import VQ_models

    m, q = cfg["model"], cfg["quantizer"]
    name = "VQ-16" if len(m["channel_mult"]) == 5 else "VQ-8"
    model = VQ_models[name](codebook_size=q["codebook_size"], codebook_embed_dim=m["embed_dim"])
    model.load_state_dict(sd)
    model.eval()
    T = torchvision_transforms()
    sys.path.insert(0, str(root / "dataset"))
    from augmentation import center_crop_arr  # LlamaGen's ADM crop

    tf = T.Compose(
        [
            T.Lambda(lambda img: center_crop_arr(img, size)),
            T.ToTensor(),
            T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True),
        ]
    )
    o = Original()

    def enc(x):
        _, _, info = model.encode(x)
        f = x.shape[2] // 2 ** (len(m["channel_mult"]) - 1)
        return info[2].reshape(x.shape[0], f, f)

    def dec(ind):
        b, h, w = ind.shape
        return model.decode_code(ind.reshape(-1), shape=(b, m["embed_dim"], h, w))

    o.preprocess = lambda data: tf(load_rgb(data))
    o.encode, o.decode = enc, dec
    # tokenizer/tokenizer_image/reconstruction_vq_ddp.py, before Image.fromarray(sample).save
    o.save = lambda samples: torch.clamp(127.5 * samples + 128.0, 0, 255).permute(
        0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()[0]  # fmt: skip
    return o


def omv2_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    _import_path(root)
    from src.Open_MAGVIT2.modules.diffusionmodules.improved_model import Decoder, Encoder
    from src.Open_MAGVIT2.modules.vqvae.lookup_free_quantize import LFQ

    m = cfg["model"]
    dd = {
        "double_z": False,
        "z_channels": m["z_channels"],
        "resolution": size,
        "in_channels": 3,
        "out_ch": 3,
        "ch": m["channels"],
        "ch_mult": m["channel_mult"],
        "num_res_blocks": m["num_res_blocks"],
    }
    o = Original()
    o.encoder, o.decoder = Encoder(**dd).eval(), Decoder(**dd).eval()
    o.encoder.load_state_dict(sub(sd, "encoder."))
    o.decoder.load_state_dict(sub(sd, "decoder."))
    bits = m["z_channels"]
    lfq = LFQ(dim=bits, codebook_size=2**bits).eval()
    T = torchvision_transforms()
    tf = T.Compose([T.Resize(size), T.CenterCrop((size, size))])

    def preprocess(data: bytes) -> torch.Tensor:
        arr = np.array(tf(load_rgb(data)))
        return torch.from_numpy((arr / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)

    def enc(x):
        h = o.encoder(x)
        (_, _, ind), _ = lfq(h, return_loss_breakdown=True)
        return ind.reshape(h.shape[0], h.shape[2], h.shape[3])

    def dec(ind):
        b, h, w = ind.shape
        return o.decoder(lfq.get_codebook_entry(ind.reshape(b, h * w), (b, h, w, bits), None))

    o.preprocess, o.encode, o.decode = preprocess, enc, dec
    custom_to_pil = source_function(root / "reconstruct.py", "custom_to_pil")
    o.save = lambda x: np.array(custom_to_pil(x[0]))
    return o


def maskgit_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    # muse/__init__.py pulls in the whole training stack; load only the model file, with
    # a stand-in for its config plumbing (diffusers-style register_to_config)
    utils = types.ModuleType("muse_parity.modeling_utils")

    def register_to_config(init):
        def wrapped(self, *args, **kwargs):
            bound = inspect.signature(init).bind(self, *args, **kwargs)
            bound.apply_defaults()
            values = {k: v for k, v in bound.arguments.items() if k != "self"}
            object.__setattr__(self, "config", types.SimpleNamespace(**values))
            init(self, *args, **kwargs)

        return wrapped

    utils.ConfigMixin, utils.ModelMixin = object, torch.nn.Module
    utils.register_to_config = register_to_config
    pkg = types.ModuleType("muse_parity")
    pkg.__path__ = [str(root / "muse")]
    sys.modules["muse_parity"], sys.modules["muse_parity.modeling_utils"] = pkg, utils
    mod = importlib.import_module("muse_parity.modeling_maskgit_vqgan")
    m, q = cfg["model"], cfg["quantizer"]
    model = mod.MaskGitVQGAN(
        resolution=size,
        hidden_channels=m["channels"],
        channel_mult=tuple(m["channel_mult"]),
        num_res_blocks=m["num_res_blocks"],
        z_channels=m["z_channels"],
        num_embeddings=q["codebook_size"],
        quantized_embed_dim=m["z_channels"],
    )
    model.load_state_dict(sd)
    model.eval()
    T = torchvision_transforms()
    tf = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(size),
            T.ToTensor(),
        ]
    )
    o = Original()

    def enc(x):
        ind = model.get_code(x)
        f = int(ind.shape[1] ** 0.5)
        return ind.reshape(x.shape[0], f, f)

    o.preprocess = lambda data: tf(load_rgb(data))
    o.encode = enc
    o.decode = lambda ind: model.decode_code(ind.reshape(ind.shape[0], -1))
    to_pil_image = source_function(root / "muse/pipeline_muse.py", "to_pil_image")
    o.save = lambda x: np.array(to_pil_image(None, x[0]))
    return o


def _module(path: Path, name: str):
    """One source file of an original project, imported on its own (its package
    __init__ pulls in the whole LM)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grid_encoder(model, levels: int):
    """A VQGAN-style original's `encode` (flat indices in its info tuple) as (B, h, w)."""

    def enc(x):
        _, _, (_, _, ind) = model.encode(x)
        f = x.shape[2] // 2 ** (levels - 1)
        return ind.reshape(x.shape[0], f, f)

    return enc


def chameleon_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    """facebookresearch/chameleon: `inference/vqgan.py` VQModel and the preprocessing of
    `inference/image_tokenizer.py` (`_whiten_transparency`, `_vqgan_input_from`)."""
    vqgan = _module(root / "chameleon/inference/vqgan.py", "chameleon_vqgan")
    sys.modules["chameleon.inference.vqgan"] = vqgan
    for name in ("chameleon", "chameleon.inference"):
        sys.modules.setdefault(name, types.ModuleType(name))
    tokenizer = _module(root / "chameleon/inference/image_tokenizer.py", "chameleon_tokenizer")
    m, q = cfg["model"], cfg["quantizer"]
    dd = {
        "double_z": False, "z_channels": m["z_channels"], "resolution": 512, "in_channels": 3,
        "out_ch": 3, "ch": m["channels"], "ch_mult": m["channel_mult"],
        "num_res_blocks": m["num_res_blocks"], "attn_resolutions": [], "dropout": 0.0,
    }  # fmt: skip
    model = vqgan.VQModel(ddconfig=dd, n_embed=q["codebook_size"], embed_dim=m["embed_dim"])
    model.load_state_dict(sd, strict=True)
    model.eval()
    it = tokenizer.ImageTokenizer  # its methods use no state: called with self=None
    o = Original()

    def preprocess(data: bytes) -> torch.Tensor:
        img = it._whiten_transparency(None, Image.open(io.BytesIO(data)))
        return it._vqgan_input_from(None, img, target_image_size=size)[0]

    enc = _grid_encoder(model, len(m["channel_mult"]))

    def dec(ind):
        b, h, w = ind.shape
        emb = model.quantize.get_codebook_entry(ind.reshape(-1), (b, h, w, m["embed_dim"]))
        return model.decode(emb)

    o.preprocess, o.encode, o.decode = preprocess, enc, dec
    o.save = lambda x: np.array(it._pil_from_chw_tensor(None, x[0]))
    return o


def janus_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    """deepseek-ai/Janus: `janus/models/vq_model.py` VQ-16, its VLMImageProcessor with
    Janus-Pro's processor config (mean = std = 0.5), images loaded as
    `janus/utils/io.py` loads them (`convert("RGB")`)."""
    vq = _module(root / "janus/models/vq_model.py", "janus_vq_model")
    torchvision_transforms()  # imported once with the stand-in for its C++ op registration
    proc = _module(root / "janus/models/image_processing_vlm.py", "janus_image_processing")
    m, q = cfg["model"], cfg["quantizer"]
    model = vq.VQ_models["VQ-16"](codebook_size=q["codebook_size"])
    model.load_state_dict(sd, strict=True)
    model.eval()
    processor = proc.VLMImageProcessor(
        image_size=size, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    o = Original()

    def preprocess(data: bytes) -> torch.Tensor:
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return processor.preprocess([img], return_tensors="pt")["pixel_values"][0]

    enc = _grid_encoder(model, len(m["channel_mult"]))

    def dec(ind):
        b, h, w = ind.shape
        return model.decode_code(ind.reshape(-1), shape=(b, m["embed_dim"], h, w))

    o.preprocess, o.encode, o.decode = preprocess, enc, dec
    o.save = janus_save
    return o


def var_original(root: Path, sd: dict, cfg: dict, size: int) -> Original:
    """FoundationVision/VAR: `models/vqvae.py` VQVAE (its build_vae_var arguments: V 4096,
    Cvae 32, ch 160, share_quant_resi 4, the patch_nums of `size`), fed by `utils/data.py`'s
    evaluation transform on `pil_loader`'s image; `img_to_idxBl` for tokens, `idxBl_to_img`
    (same_shape, last_one) for pixels; saved as `demo_sample.ipynb` saves its images."""
    _import_path(root)  # quant.py imports VAR's top-level dist.py
    pkg = types.ModuleType("var_models")  # models/__init__ imports the whole VAR
    pkg.__path__ = [str(root / "models")]
    sys.modules["var_models"] = pkg
    vqvae = importlib.import_module("var_models.vqvae")
    m, q = cfg["model"], cfg["quantizer"]
    model = vqvae.VQVAE(vocab_size=q["codebook_size"], z_channels=m["z_channels"],
                        ch=m["channels"], test_mode=True, share_quant_resi=m["phi_convs"],
                        v_patch_nums=tuple(m["patch_nums"]))  # fmt: skip
    model.load_state_dict(sd, strict=True)
    T = torchvision_transforms()  # first: data.py imports torchvision
    data = _module(root / "utils/data.py", "var_data")
    mid = round(1.125 * size)
    tf = T.Compose([T.Resize(mid, interpolation=T.InterpolationMode.LANCZOS),
                    T.CenterCrop((size, size)), T.ToTensor(),
                    data.normalize_01_into_pm1])  # build_dataset's val_aug  # fmt: skip
    o = Original()

    def preprocess(blob: bytes) -> torch.Tensor:
        with tempfile.NamedTemporaryFile() as f:
            f.write(blob)
            f.flush()
            return tf(data.pil_loader(f.name))

    o.preprocess = preprocess
    o.encode = lambda x: torch.cat(model.img_to_idxBl(x), dim=1)

    def dec(tokens):  # idxBl_to_img(same_shape=True, last_one=True), before its clamp_
        b, parts, a = tokens.shape[0], [], 0
        for p in m["patch_nums"]:
            parts.append(tokens[:, a : a + p * p])
            a += p * p
        ms = [model.quantize.embedding(i).transpose(1, 2).view(b, m["z_channels"], p, p)
              for i, p in zip(parts, m["patch_nums"])]  # fmt: skip
        f_hat = model.quantize.embed_to_fhat(ms, all_to_max_scale=True, last_one=True)
        return model.decoder(model.post_quant_conv(f_hat))

    def save(x):  # fhat_to_img's clamp_, .add_(1).mul_(0.5), demo_sample.ipynb's lines
        recon_B3HW = x.clamp(-1, 1).add_(1).mul_(0.5)
        chw = recon_B3HW[0]  # torchvision's make_grid of one image is the image
        chw = chw.permute(1, 2, 0).mul_(255).cpu().numpy()
        return chw.astype(np.uint8)

    def after_each_scale(tokens):  # idxBl_to_img(same_shape=True, last_one=False)
        parts, a = [], 0
        for p in m["patch_nums"]:
            parts.append(tokens[:, a : a + p * p])
            a += p * p
        return [save(x) for x in model.idxBl_to_img(parts, same_shape=True, last_one=False)]

    o.decode, o.save, o.scales = dec, save, after_each_scale
    return o


def scales_differ(o: Original, tok, theirs: torch.Tensor) -> str:
    """`vqtool decode --scales` (each row's picture after each scale) against VAR's own
    `idxBl_to_img(last_one=False)` saved its way, one row at a time."""
    from vqtool.tokens.decode import scale_pictures

    differ = total = 0
    with torch.no_grad():
        for i in range(len(theirs)):
            want = o.scales(theirs[i : i + 1])
            got = scale_pictures(tok, theirs[i : i + 1])
            for w, g in zip(want, got, strict=True):
                differ += int((np.asarray(w) != g.permute(1, 2, 0).numpy()).sum())
                total += w.size
    return f"# var --scales: {differ} of {total} values differ (pictures after each scale)"


def janus_save(dec: torch.Tensor) -> np.ndarray:
    """generation_inference.py's lines from the decoder's output to the saved image (its
    batch of parallel_size images here one image)."""
    dec = dec.to(torch.float32).cpu().numpy().transpose(0, 2, 3, 1)
    dec = np.clip((dec + 1) / 2 * 255, 0, 255)
    visual_img = np.zeros((1, *dec.shape[1:3], 3), dtype=np.uint8)
    visual_img[:, :, :] = dec
    return visual_img[0]


def emu3_original(root: Path, sd: dict, cfg: dict, policy: tuple) -> Original:
    """baaivision/Emu3: `emu3/tokenizer` (Emu3VisionVQModel and its image processor) fed
    as `emu3/train/prepare_data.py` feeds it: convert("RGB"), its area resize, the
    processor (smart_resize with min/max pixels), `encode`; `decode` for pixels. The
    pixel bounds come from `policy` (the same on both sides)."""
    _import_path(root)
    from emu3.tokenizer.configuration_emu3visionvq import Emu3VisionVQConfig
    from emu3.tokenizer.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
    from emu3.tokenizer.modeling_emu3visionvq import Emu3VisionVQModel

    prepare = _module(root / "emu3/train/prepare_data.py", "emu3_prepare_data")
    m, q = cfg["model"], cfg["quantizer"]
    config = Emu3VisionVQConfig(
        codebook_size=q["codebook_size"], embed_dim=m["embed_dim"], z_channels=m["z_channels"],
        temporal_downsample_factor=m["temporal_factor"], ch=m["channels"],
        ch_mult=m["channel_mult"], num_res_blocks=m["num_res_blocks"],
        attn_resolutions=m["attention_levels"],
    )  # fmt: skip
    model = Emu3VisionVQModel(config).eval()
    model.load_state_dict(sd, strict=True)
    processor = Emu3VisionVQImageProcessor(min_pixels=policy[1], max_pixels=policy[2])
    o = Original()

    def preprocess(data: bytes) -> torch.Tensor:
        img = prepare.smart_resize(Image.open(io.BytesIO(data)).convert("RGB"), policy[3])
        return processor(img, return_tensors="pt")["pixel_values"][0]

    o.preprocess = preprocess
    o.encode = lambda x: model.encode(x)
    o.decode = lambda ind: model.decode(ind)
    o.save = lambda x: np.array(
        processor.postprocess(x, return_tensors="PIL.Image.Image")["pixel_values"][0]
    )
    return o


def smart_resize_check(root: Path, pairs: int = 1000) -> str:
    """vqtool's smart_size against Emu3's own smart_resize on random (height, width)
    pairs from 1 to 3000 px: sizes equal, and refused by both alike."""
    from vqtool.data.policies import smart_size
    from vqtool.errors import DecodeError

    _import_path(root)
    from emu3.tokenizer.image_processing_emu3visionvq import smart_resize

    rng = np.random.default_rng(0)
    same = refused = 0
    for h, w in rng.integers(1, 3001, size=(pairs, 2)).tolist():
        try:
            want = smart_resize(h, w)
        except ValueError:
            try:
                smart_size(h, w, 8, 512 * 512, 1024 * 1024)
            except DecodeError:
                refused += 1
            continue
        same += smart_size(h, w, 8, 512 * 512, 1024 * 1024) == tuple(want)
    return (
        f"# smart_resize: {same} of {pairs - refused} size pairs give Emu3's size; "
        f"{refused} refused by both"
    )


def compare_native(family: str, path: Path, tok, o: Original, args, shard: str, policy) -> str:
    """`compare` for a tokenizer that keeps each image's shape: one image at a time on the
    original's side (as its data preparation runs), bucketed by size on vqtool's."""
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    extra = [s for s in samples if s.key.startswith("zz-")]
    samples = samples[: args.images] + extra
    keys = [s.key for s in samples]
    wanted = set(keys)
    with tempfile.TemporaryDirectory() as out, torch.no_grad():
        part = Path(out) / "files.tar"
        with tarfile.open(shard) as src, tarfile.open(part, "w") as dst:
            for member in src.getmembers():
                if member.isfile() and member.name.split(".", 1)[0] in wanted:
                    dst.addfile(member, src.extractfile(member))
        encode(EncodeConfig(sources=[str(part)], tokenizer=str(path), out=str(Path(out) / "t"),
                            batch_size=BATCH, workers=0, device="cpu", precision="fp32",
                            resize=":".join(map(str, policy))))  # fmt: skip
        ds = TokenDataset.open(str(Path(out) / "t"))
        found, rows, grids = ds.select_native(keys)
        differ = total = saved = values = 0
        same = True
        gap = 0.0
        for s, row, grid in zip(samples, rows, grids):
            theirs = o.encode(o.preprocess(s.data)[None])  # (1, h, w)
            ours = torch.as_tensor(row.astype(np.int64)).reshape(1, *grid)
            if ours.shape != theirs.shape:
                differ += ours.numel()
                total += ours.numel()
                same = False
                continue
            differ += int((ours != theirs).sum())
            total += ours.numel()
            d, v, alike, g = saved_differ(o, tok, theirs, ours, [grid])
            saved, values, same, gap = saved + d, values + v, same and alike, max(gap, g)
    sizes = sorted({Image.open(io.BytesIO(s.data)).size for s in samples})
    odd = sum(1 for w, h in sizes if w % 2 or h % 2)
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    shapes = sorted(set(grids))
    return (
        f"| {family} | {':'.join(map(str, policy))} | {len(keys)} ({odd} with an odd side; "
        f"{'/'.join(modes)}) | {len(shapes)} grids, {shapes[0]}..{shapes[-1]} | "
        f"{differ} of {total} | {'bit-identical' if same else f'max |diff| {gap:.3g}'} | "
        f"{saved} of {values} |"
    )


def variants_shard(shard: str, n: int, folder: Path) -> str:
    """The shard's photos as they are, plus `n` each of what web corpora also hold, made
    from its photos: greyscale PNGs, RGBA PNGs (alpha: a diagonal ramp with a transparent
    disc), JPEGs stored sideways with EXIF orientation 6 (a phone photo taken upright),
    16-bit greyscale PNGs (values up to 1023, as 10-bit sensors write them), CMYK JPEGs
    and palette PNGs with a transparent colour."""
    out = folder / "variants.tar"
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    with tarfile.open(out, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
            buf = io.BytesIO()
            img.save(buf, fmt, **kw)
            return buf.getvalue()

        for s in samples:
            add(f"{s.key}.jpg", s.data)
        for i, s in enumerate(samples[:n]):
            img = Image.open(io.BytesIO(s.data)).convert("RGB")
            add(f"zz-grey-{i}.png", encoded(img.convert("L"), "PNG"))
            w, h = img.size
            yy, xx = np.mgrid[0:h, 0:w]
            alpha = (255 * (xx + yy) / max(1, w + h - 2)).astype(np.uint8)
            alpha[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 5) ** 2] = 0
            rgba = np.dstack([np.array(img), alpha])
            add(f"zz-alpha-{i}.png", encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
            exif = Image.Exif()
            exif[0x0112] = 6  # shown turned 90 degrees clockwise: upright
            sideways = img.transpose(Image.Transpose.ROTATE_90)
            add(f"zz-exif6-{i}.jpg", encoded(sideways, "JPEG", quality=92, exif=exif.tobytes()))
            deep = np.array(img.convert("L"), dtype=np.uint16) * 4 + (xx % 4).astype(np.uint16)
            add(f"zz-deep-{i}.png", encoded(Image.fromarray(deep), "PNG"))  # I;16
            add(f"zz-cmyk-{i}.jpg", encoded(img.convert("CMYK"), "JPEG", quality=92))
            palette = img.quantize(64)
            add(f"zz-palette-{i}.png", encoded(palette, "PNG", transparency=0))
    return str(out)


# ----------------------------------------------------------------------------- comparison


def ours_tokens(path: Path, shard: str, size: int, keys: list[str]):
    """`vqtool encode` on the files of `keys` (copied from the shard as they are), rows in
    `keys` order."""
    wanted = set(keys)
    with tempfile.TemporaryDirectory() as out:
        part = Path(out) / "files.tar"
        with tarfile.open(shard) as src, tarfile.open(part, "w") as dst:
            for member in src.getmembers():
                if member.isfile() and member.name.split(".", 1)[0] in wanted:
                    dst.addfile(member, src.extractfile(member))
        encode(
            EncodeConfig(
                sources=[str(part)],
                tokenizer=str(path),
                out=str(Path(out) / "tokens"),
                batch_size=BATCH,
                workers=0,
                device="cpu",
                precision="fp32",
                image_size=size,
            )
        )
        found, tokens = TokenDataset.open(str(Path(out) / "tokens")).select(keys, None, None)
    order = {k: i for i, k in enumerate(found)}
    return torch.stack([torch.as_tensor(tokens[order[k]].astype(np.int64)) for k in keys])


def compare(family: str, path: Path, tok, o: Original, args, shard: str, size: int) -> str:
    samples = [s for s in iter_samples(expand_sources([shard])[0]) if not s.error]
    extra = [s for s in samples if s.key.startswith("zz-")]  # the variants, if any
    samples = samples[: args.images] + extra
    keys = [s.key for s in samples]
    with torch.no_grad():
        x = [o.preprocess(s.data) for s in samples]
        theirs = torch.cat(
            [o.encode(torch.stack(x[i : i + BATCH])) for i in range(0, len(x), BATCH)]
        )
    grid = theirs.shape[1:]
    # all samples of the shard are encoded; keep the ones compared here
    ours = ours_tokens(path, shard, size, keys).reshape(len(keys), *grid)
    differ = int((ours != theirs).sum())
    sizes = sorted({Image.open(io.BytesIO(s.data)).size for s in samples})
    odd = sum(1 for w, h in sizes if w % 2 or h % 2)
    saved, values, same, gap = saved_differ(o, tok, theirs, ours)
    modes = sorted({Image.open(io.BytesIO(s.data)).mode for s in samples})
    return (
        f"| {family} | {size} | {len(keys)} ({odd} with an odd side; {'/'.join(modes)}) | "
        f"{tuple(grid)} | "
        f"{differ} of {ours.numel()} | {'bit-identical' if same else f'max |diff| {gap:.3g}'} | "
        f"{saved} of {values} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--originals", type=Path, required=True)
    ap.add_argument("--albumentations", type=Path, help="default: DIR/albumentations-0.4.3")
    ap.add_argument("--torchvision", type=Path, help="a site folder holding torchvision")
    ap.add_argument("--shard", default=str(ROOT.parent / "shared/data/devset/devset-000005.tar"))
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=0, help="default: each family's native size")
    ap.add_argument("--variants", type=int, default=2, help="images of each kind added")
    ap.add_argument(
        "--emu3-pixels",
        default="4096:16384:9216",
        help=(
            "Emu3's MIN:MAX:AREA pixels, on both sides (its own: 262144:1048576:518400, hours "
            "on a CPU)"
        ),
    )
    ap.add_argument("--family", action="append", default=[], help="name=checkpoint file")
    ap.add_argument("--only", default="", help="comma-separated families")
    args = ap.parse_args()
    if args.torchvision:
        _import_path(args.torchvision)
    torch.set_num_threads(1)
    files = dict(f.split("=", 1) for f in args.family)
    d = args.originals
    albu = args.albumentations or d / "albumentations-0.4.3"
    builders = {
        "llamagen": lambda sd, c, size: llamagen_original(
            d / "FoundationVision+LlamaGen", sd, c, size
        ),
        "taming": lambda sd, c, size: taming_original(
            d / "CompVis+taming-transformers", sd, c, size, albu
        ),
        "taming-gumbel": lambda sd, c, size: taming_original(
            d / "CompVis+taming-transformers", sd, c, size, albu
        ),
        "open-magvit2": lambda sd, c, size: omv2_original(
            d / "TencentARC+Open-MAGVIT2", sd, c, size
        ),
        "maskgit": lambda sd, c, size: maskgit_original(d / "huggingface+open-muse", sd, c, size),
        "chameleon": lambda sd, c, size: chameleon_original(
            d / "facebookresearch+chameleon", sd, c, size
        ),
        "janus": lambda sd, c, size: janus_original(d / "deepseek-ai+Janus", sd, c, size),
        "var": lambda sd, c, size: var_original(d / "FoundationVision+VAR", sd, c, size),
    }
    only = set(filter(None, args.only.split(","))) or set(builders)
    print(
        f"# {platform.machine()}, torch {torch.__version__}, 1 thread, batch {BATCH}, "
        f"shard {Path(args.shard).name}"
    )
    print(
        "| family | px | images | token grid | tokens differing | decode from tokens (one row "
        "at a time) | saved picture values differing |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        variants = variants_shard(args.shard, args.variants, Path(tmp))
        for family, (name, wrap) in DEFAULT.items():
            if family not in only:
                continue
            path = Path(files.get(family) or random_file(name, wrap, Path(tmp)))
            sd = state_dict(path)
            tok, info = load_foreign(path, image_size=args.size or None)
            if family == "emu3":
                policy = ("smart", *map(int, args.emu3_pixels.split(":")))
                o = emu3_original(d / "baaivision+Emu3", sd, tok.config.to_dict(), policy)
                print(compare_native(family, path, tok, o, args, variants, policy), flush=True)
                print(smart_resize_check(d / "baaivision+Emu3"), flush=True)
                continue
            o = builders[family](sd, tok.config.to_dict(), info.image_size)
            print(compare(family, path, tok, o, args, variants, info.image_size), flush=True)
            if family == "var":
                shard_rows = [o.encode(o.preprocess(s.data)[None])
                              for s in list(iter_samples(expand_sources([variants])[0]))[:4]]
                print(scales_differ(o, tok, torch.cat(shard_rows)), flush=True)


if __name__ == "__main__":
    main()
